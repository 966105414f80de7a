"""Model bundles and ``bincount predict`` on one tiny trained run (trained once for the whole file).

The round trip is the contract: a run leaves ``model/`` with the right hash, ``load_model`` rebuilds it
without Hydra, and ``bincount predict`` on the run's own test split gives its ``predictions.csv``. Then
what must be refused (tampered weights, a newer format, a ``../`` archive member, bad image files) and
where models and images may come from (a folder, the real ABID sample, a local S3 server).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.archives import write_tar
from helpers.train import read_csv, run_train, single_run_dir
from s3_server import s3_client, s3_endpoint, tiny_bucket  # noqa: F401

from bincount import cli
from bincount.bundle import BUNDLE_FILE, WEIGHTS_FILE, BundleError, load_model
from bincount.bundle.archive import extract_bundle

ROOT = Path(__file__).resolve().parents[1]
# Every test reads the module's trained run, or runs predict.py in a subprocess.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One tiny run (1 epoch), with ``SM_MODEL_DIR`` set as inside a SageMaker job."""
    base = tmp_path_factory.mktemp("bundle_run")
    sm_dir = base / "sm_model"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SM_MODEL_DIR", str(sm_dir))
        run_train(["trainer.max_epochs=1"], base / "data", base / "logs")
    run = single_run_dir(base / "logs")
    cfg = yaml.safe_load((run / "resolved_config.yaml").read_text())
    return {"run": run, "sm_dir": sm_dir, "data_root": Path(cfg["data"]["root"]), "base": base}


def predict(argv: list[str], capsys) -> tuple[int, str, str]:
    status = cli.main(["predict", *map(str, argv), "--num-workers", "0", "--no-progress"])
    out, err = capsys.readouterr()
    return status, out, err


def by_id(rows: list[dict], key: str = "id") -> dict[str, dict]:
    return {r[key]: r for r in rows}


# -- the bundle of every run ------------------------------------------------------------------------
def test_every_run_leaves_a_bundle_with_the_weights_hash(trained):
    run, model_dir = trained["run"], trained["run"] / "model"
    meta = json.loads((model_dir / BUNDLE_FILE).read_text())
    assert meta["weights"]["sha256"] == hashlib.sha256((model_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert (meta["format"], meta["format_version"]) == ("bincount-model", 1)
    assert meta["model"]["backbone"] == "test_resnet" and meta["model"]["head"]["name"] == "linear"
    assert meta["classes"]["counts"] == [1, 2, 3, 4, 5] and meta["classes"]["meaning"]["4"] == ">=5"
    pre = meta["preprocess"]
    assert (pre["input_size"], pre["resize"], pre["interpolation"], pre["crop"]) == ([3, 32, 32], [32, 32], "bilinear", None)
    metrics = json.loads((run / "metrics.json").read_text())
    assert meta["metrics"]["test/acc"] == pytest.approx(metrics["test/acc"])
    assert meta["run"]["id"] == run.name and meta["run"]["checkpoint"] == metrics["best_checkpoint"]
    assert set(meta["versions"]) == {"bincount", "torch", "timm"}
    for name in (WEIGHTS_FILE, BUNDLE_FILE):  # the SageMaker model dir gets the same bundle
        assert (trained["sm_dir"] / name).read_bytes() == (model_dir / name).read_bytes()


def test_weights_file_is_plain_safetensors(trained):
    from safetensors.torch import load_file

    tensors = load_file(str(trained["run"] / "model" / WEIGHTS_FILE))
    assert any(k.startswith("backbone.") for k in tensors) and any(k.startswith("head.") for k in tensors)


def test_load_model_needs_neither_hydra_nor_the_network(trained):
    code = ("import sys, bincount; m = bincount.load_model(sys.argv[1]); "
            "assert not m.module.training; assert 'hydra' not in sys.modules, 'hydra imported'; "
            "print(m.metadata['model']['backbone'], m.counts)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_PROXY": "", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-c", code, str(trained["run"])], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "test_resnet [1, 2, 3, 4, 5]"


def test_export_of_an_older_run_gives_the_same_bundle(trained, tmp_path, capsys):
    old = shutil.copytree(trained["run"], tmp_path / "old_run", ignore=shutil.ignore_patterns("model"))
    assert cli.main(["export", str(old)]) == 0, capsys.readouterr().err
    made, orig = (json.loads((d / "model" / BUNDLE_FILE).read_text()) for d in (old, trained["run"]))
    assert made["weights"]["sha256"] == orig["weights"]["sha256"]  # same best checkpoint, same tensors, same bytes
    for key in ("model", "classes", "preprocess", "metrics"):
        assert made[key] == orig[key], key
    assert cli.main(["export", str(old)]) == 1 and "--force" in capsys.readouterr().err


# -- predict on the run's own test split ------------------------------------------------------------
def test_predict_on_the_test_split_reproduces_predictions_csv(trained, tmp_path, capsys):
    run = trained["run"]
    out = tmp_path / "p.csv"
    status, stdout, err = predict([run, trained["data_root"], "--ids", run / "predictions.csv", "-o", out,
                                   "--batch-size", "5"], capsys)
    assert status == 0, err
    expected, got = by_id(read_csv(run / "predictions.csv")), by_id(read_csv(out))
    assert set(got) == set(expected) and len(expected) > 0
    probs = [k for k in expected[next(iter(expected))] if k.startswith("prob_")]
    for id_, row in expected.items():
        assert got[id_]["pred_count"] == row["pred_count"] and got[id_]["true_count"] == row["true_count"], id_
        for k in probs:
            assert abs(float(got[id_][k]) - float(row[k])) <= 1e-5, (id_, k)
        weighted = sum(int(k[5:]) * float(got[id_][k]) for k in probs)
        assert float(got[id_]["expected_count"]) == pytest.approx(weighted, abs=1e-4)
        assert float(got[id_]["confidence"]) == pytest.approx(max(float(got[id_][k]) for k in probs), abs=1e-6)
    summary = json.loads((tmp_path / "p.summary.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["metrics"]["acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert summary["metrics"]["rmse"] == pytest.approx(metrics["test/rmse"], abs=1e-4)
    assert "acc" in stdout and "rmse" in stdout


def test_load_model_predict_matches_the_csv(trained):
    model = load_model(trained["run"] / "model")
    row = read_csv(trained["run"] / "predictions.csv")[0]
    image = trained["data_root"] / "bin-images" / f"{row['id']}.jpg"
    result = model.predict([image.read_bytes()])
    assert int(result["pred_count"][0]) == int(row["pred_count"])
    assert float(result["probs"][0][0]) == pytest.approx(float(row["prob_1"]), abs=1e-5)


# -- refusals ---------------------------------------------------------------------------------------
def _copy_bundle(trained, dest: Path) -> Path:
    return Path(shutil.copytree(trained["run"] / "model", dest))


def test_tampered_weights_are_refused_by_name(trained, tmp_path):
    bundle = _copy_bundle(trained, tmp_path / "b")
    data = bytearray((bundle / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (bundle / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{WEIGHTS_FILE}: sha256 [0-9a-f]{{64}} does not match"):
        load_model(bundle)


def test_a_newer_format_version_is_refused(trained, tmp_path):
    bundle = _copy_bundle(trained, tmp_path / "b")
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    (bundle / BUNDLE_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(BundleError, match=r"format_version 99; this bincount reads \[1\]"):
        load_model(bundle)




def _bundle_files(trained) -> dict[str, bytes]:
    return {n: (trained["run"] / "model" / n).read_bytes() for n in (BUNDLE_FILE, WEIGHTS_FILE)}


def test_model_tar_gz_loads_and_only_the_bundle_is_extracted(trained, tmp_path):
    archive = write_tar(tmp_path / "model.tar.gz", {**_bundle_files(trained), "model.ckpt": b"a pickle, never extracted"})
    assert load_model(archive).metadata["model"]["backbone"] == "test_resnet"
    extract_bundle(archive, tmp_path / "x")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == sorted([BUNDLE_FILE, WEIGHTS_FILE])


def test_model_tar_gz_with_a_parent_member_is_refused(trained, tmp_path):
    (tmp_path / "a").mkdir()
    archive = write_tar(tmp_path / "a" / "model.tar.gz", {**_bundle_files(trained), "../evil.txt": b"outside"})
    with pytest.raises(BundleError, match=r"member '\.\./evil\.txt': a '\.\.' component; refusing the archive"):
        load_model(archive)
    with pytest.raises(BundleError, match="evil"):
        extract_bundle(archive, tmp_path / "a" / "x")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "a" / "evil.txt").exists()


# -- inputs: a folder with bad files, the real sample, S3 -------------------------------------------
def test_a_folder_with_bad_files_lists_them_with_reasons(trained, tmp_path, capsys):
    folder = tmp_path / "imgs"
    (folder / "nested").mkdir(parents=True)
    good = sorted((trained["data_root"] / "bin-images").glob("*.jpg"))[:3]
    for i, src in enumerate(good):
        shutil.copy(src, (folder / "nested" if i else folder) / src.name)
    (folder / "truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    (folder / "notes.jpg").write_bytes(b"not an image at all")
    (folder / "README.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "p.csv"
    status, stdout, err = predict([trained["run"], folder, "-o", out], capsys)
    assert status == 0, err
    rows = read_csv(out)
    assert list(rows[0])[:5] == ["path", "pred_count", "expected_count", "confidence", "prob_1"]
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in good)
    summary = json.loads((tmp_path / "p.summary.json").read_text())
    reasons = {Path(b["name"]).name: b["reason"] for b in summary["bad"]}
    assert summary["bad_count"] == 2 and set(reasons) == {"truncated.jpg", "notes.jpg"}
    assert "truncated JPEG" in reasons["truncated.jpg"] and "cannot decode" in reasons["notes.jpg"]
    assert "2 bad files skipped" in stdout and "truncated.jpg" in stdout

    status, _, err = predict([trained["run"], folder / "truncated.jpg", "--bad-input", "fail", "-o", out], capsys)
    assert status == 1 and "truncated.jpg" in err and "--bad-input fail" in err


def test_images_above_max_pixels_are_bad_input(trained, tmp_path, capsys):
    image = sorted((trained["data_root"] / "bin-images").glob("*.jpg"))[0]
    status, _, err = predict([trained["run"], image, "--max-pixels", "100", "-o", tmp_path / "p.csv"], capsys)
    summary = json.loads((tmp_path / "p.summary.json").read_text())
    assert status == 0 and summary["predicted"] == 0 and "image too large" in summary["bad"][0]["reason"]


def test_real_abid_jpegs_are_predicted_and_scored(trained, abid_sample_dir, tmp_path, capsys):
    out = tmp_path / "p.csv"
    status, stdout, err = predict([trained["run"], abid_sample_dir, "-o", out, "--batch-size", "64"], capsys)
    assert status == 0, err
    rows = read_csv(out)
    assert len(rows) == len(list((abid_sample_dir / "bin-images").glob("*.jpg")))
    metrics = json.loads((tmp_path / "p.summary.json").read_text())["metrics"]
    zero = sum(1 for r in rows if r["true_count"] == "0")  # below min_count=1: predicted, not scored
    assert metrics["n"] + metrics["unscored"] == len(rows) and metrics["unscored"] == zero


def test_s3_prefix_and_s3_model(trained, tiny_bucket, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "p.csv"
    status, stdout, err = predict([trained["run"], tiny_bucket.url, "-o", out, "--endpoint-url", tiny_bucket.endpoint],
                                  capsys)
    assert status == 0, err
    rows = read_csv(out)
    assert [r["id"] for r in rows] == tiny_bucket.synthetic_ids
    assert json.loads((tmp_path / "p.summary.json").read_text())["metrics"]["n"] > 0
    archive = write_tar(tmp_path / "model.tar.gz", _bundle_files(trained))
    s3_client(tiny_bucket.endpoint).put_object(Bucket="tiny-bins", Key="models/model.tar.gz", Body=archive.read_bytes())
    model = load_model("s3://tiny-bins/models/model.tar.gz", s3={"endpoint_url": tiny_bucket.endpoint})
    assert model.metadata["weights"]["sha256"] == json.loads(_bundle_files(trained)[BUNDLE_FILE])["weights"]["sha256"]


def test_predictions_can_go_to_s3(trained, tiny_bucket, tmp_path, capsys):  # noqa: F811
    local = tmp_path / "p.csv"
    assert predict([trained["run"], tiny_bucket.url, "-o", local, "--endpoint-url", tiny_bucket.endpoint], capsys)[0] == 0
    url = "s3://tiny-bins/out/run1/p.csv"
    status, out, err = predict([trained["run"], tiny_bucket.url, "-o", url, "--endpoint-url", tiny_bucket.endpoint],
                               capsys)
    assert status == 0, err
    assert f"-> {url}" in out and "s3://tiny-bins/out/run1/p.summary.json" in out
    client = s3_client(tiny_bucket.endpoint)
    uploaded = client.get_object(Bucket="tiny-bins", Key="out/run1/p.csv")["Body"].read()
    assert uploaded == local.read_bytes()  # the same rows as a local run's CSV
    summary = json.loads(client.get_object(Bucket="tiny-bins", Key="out/run1/p.summary.json")["Body"].read())
    assert summary["metrics"]["n"] > 0


@pytest.mark.parametrize("url", ["s3://tiny-bins", "s3://tiny-bins/out/p.txt", "s3://tiny-bins/../p.csv"])
def test_an_s3_output_that_is_not_a_csv_key_is_refused_before_predicting(trained, url, capsys):
    status, out, err = predict([trained["run"], "/nonexistent-input", "-o", url], capsys)
    assert status == 2 and url.split("/")[-1] in err and "predicted" not in out


def test_predict_runs_as_a_sagemaker_job_over_an_s3_prefix(trained, tiny_bucket, tmp_path, capsys):  # noqa: F811
    """``python predict.py +launch=sagemaker_local ...``: the container contract, S3 in and out (moto_server)."""
    local = tmp_path / "p.csv"
    assert predict([trained["run"], tiny_bucket.url, "-o", local, "--endpoint-url", tiny_bucket.endpoint], capsys)[0] == 0
    archive = write_tar(tmp_path / "model.tar.gz", _bundle_files(trained))
    client = s3_client(tiny_bucket.endpoint)
    client.put_object(Bucket="tiny-bins", Key="models/job/model.tar.gz", Body=archive.read_bytes())
    url, sweep = "s3://tiny-bins/out/job/p.csv", tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), "+launch=sagemaker_local", "bundle=s3://tiny-bins/models/job/model.tar.gz",
         f"inputs=[{tiny_bucket.url}]", f"output={url}", f"endpoint_url={tiny_bucket.endpoint}", "num_workers=0",
         "progress=false", f"hydra.sweep.dir={sweep}", "hydra.launcher.poll_interval_s=0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert client.get_object(Bucket="tiny-bins", Key="out/job/p.csv")["Body"].read() == local.read_bytes()
    state = json.loads((sweep / "0" / "sagemaker_job.json").read_text())
    assert state["status"] == "Completed"
    assert state["return_value"]["predicted"] == len(tiny_bucket.synthetic_ids) and state["return_value"]["csv"] == url
    assert state["return_value"]["metrics"]["n"] > 0 and "bad" not in state["return_value"]
    assert f"-> {url}" in (sweep / "0" / "sagemaker_job.log").read_text()  # the job's own log, fetched back


@pytest.mark.parametrize("overrides, message, status", [
    (["bundle=nowhere", "inputs=[x]", "batch_size=0"], "predict.py: error: batch_size: expected a positive integer, "
                                                       "got '0'", 2),
    (["bundle=nowhere", "inputs=[x]", "bad_input=maybe"], "predict.py: error: bad_input: invalid choice: 'maybe'", 2),
    (["inputs=[x]"], "predict.py: error: set bundle (e.g. bundle=logs/train/runs/RUN", 2),
    (["bundle=nowhere", "inputs=[x]"], "predict.py: error: model nowhere does not exist", 1),
])
def test_predict_py_names_a_bad_value_by_its_key_in_one_line(overrides, message, status, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "predict.py"), *overrides, f"paths.log_dir={tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == status and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
