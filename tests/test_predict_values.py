"""``bincount predict`` by its values: the exact CSV rows, the summary and its scores, the printed report,
which files are bad and why, the decoded pixels, and what reaches the Trainer (fast, no training).

Why a model that always says 3: its head has zero weights and one large bias, so every image gets the same
probabilities, worked out by hand: softmax of (0, 0, 10, 0, 0) is e^10 / (e^10 + 4) = 0.999818 for count 3 and
1 / (e^10 + 4) = 0.000045 for the others; the expected count is 3 (1 + 2 + 4 + 5 = 4 * 3). Every row and every
score is then fixed by the true counts alone. Images are tiny solid-colour files written here.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.bundles import write_constant_bundle
import torch
from conftest import write_abid, write_tiny_bundle
from PIL import Image
from s3_server import s3_client, s3_endpoint, upload_abid  # noqa: F401

from bincount import cli
from bincount.layout import MAX_IMAGE_BYTES, DataError, TooLarge
from bincount.predict.cli import _quiet_lightning, add_arguments, report, show_progress
from bincount.predict.dataset import PredictDataset, predict_loader
from bincount.predict.inputs import IMAGE_SUFFIXES, FileReader, Item, collect
from bincount.predict.writer import CSVPredictionWriter, scored_count
from bincount.s3.store import S3Store

PROBS = "0.000045,0.000045,0.999818,0.000045,0.000045"  # prob_1..prob_5 of the constant model
CONSTANT = f"3,3.000000,0.999818,{PROBS}"  # pred_count, expected_count, confidence, probabilities
HEADER = "pred_count,expected_count,confidence,prob_1,prob_2,prob_3,prob_4,prob_5"
TRUNCATED = "truncated JPEG: no end-of-image marker after the image data"
NOT_AN_IMAGE = "cannot decode (UnidentifiedImageError: cannot identify image file the image bytes)"
CLASSES = {"counts": [1, 2, 3, 4, 5], "min_count": 1, "max_count": 5, "overflow": "clip"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_constant_bundle(tmp_path_factory.mktemp("constant") / "model")


def image_bytes(fmt: str = "PNG", colour: tuple[int, int, int] = (200, 10, 60), size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run(argv: list, capsys, progress: bool = False) -> tuple[int, list[str], str]:
    """``bincount predict ARGV`` in process: (status, stdout lines, stderr)."""
    extra = [] if progress else ["--no-progress"]
    status = cli.main(["predict", *map(str, argv), "--num-workers", "0", *extra])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def summary_of(csv: Path) -> dict:
    return json.loads(csv.with_name(f"{csv.stem}.summary.json").read_text())


def scores(n: int, unscored: int, correct: int, within_one: int, abs_sum: float, sq_sum: float) -> dict:
    return {"n": n, "unscored": unscored, "acc": correct / n, "rmse": math.sqrt(sq_sum / n), "mae": abs_sum / n,
            "within_one": within_one / n}


# -- whole runs: rows, summary, report ---------------------------------------------------------------------

def test_an_abid_root_gives_exact_rows_scores_summary_and_report(bundle, make_abid, tmp_path, capsys):
    """Five bins in three batches of 2, 2, 1; the CSV goes to folders that do not exist yet.
    Against the constant 3: true 3 (off 0), 0 (unscored), 6 (clipped to 5, off 2), 2 (off 1), 0 (unscored)."""
    root = make_abid([3, 0, 6, 2, 0])
    out = tmp_path / "new" / "deeper" / "p.csv"
    status, stdout, err = run([bundle, root, "-o", out, "--batch-size", "2"], capsys)
    assert status == 0, err
    assert out.read_bytes().decode() == "".join(f"{line}\n" for line in [
        f"id,true_count,{HEADER}",
        f"00001,3,{CONSTANT}", f"00002,0,{CONSTANT}", f"00003,6,{CONSTANT}", f"00004,2,{CONSTANT}",
        f"00005,0,{CONSTANT}"])  # "\n" line ends, no "\r"
    summary = summary_of(out)
    metrics = summary.pop("metrics")
    assert summary == {"model": str(bundle), "images": 5, "predicted": 5, "bad_count": 0, "bad": [], "csv": str(out)}
    assert metrics == pytest.approx(scores(3, 2, correct=1, within_one=2, abs_sum=3, sq_sum=5))
    summary_path = out.with_name("p.summary.json")
    assert stdout == [f"5 of 5 images predicted -> {out}",
                      "scored 3 with true counts (2 outside the model's classes): acc 0.3333, rmse 1.2910, "
                      "mae 1.0000, within one 0.6667",
                      f"summary -> {summary_path}"]  # nothing else: no progress bar, no blank line
    assert sorted(os.listdir(out.parent)) == ["p.csv", "p.summary.json"]  # no lightning_logs/ beside them


def test_mixed_inputs_keep_their_order_list_bad_files_and_leave_unknown_truth_empty(bundle, make_abid, tmp_path,
                                                                                       capsys):
    """A folder (walked sorted and recursively, by suffix), an ABID root, and a file named explicitly (taken
    whatever its suffix): the first column is ``path``, and only the ABID rows have a true count."""
    folder = tmp_path / "imgs"
    jpeg = image_bytes("JPEG")
    write(folder / "a_trunc.jpg", jpeg[:-10])
    write(folder / "b.png", image_bytes())
    write(folder / "notes.jpeg", b"not an image at all")
    write(folder / "README.txt", b"not an image suffix: not an input")
    write(folder / "sub" / "c.JPG", jpeg)
    root = make_abid([2, 9])
    explicit = write(tmp_path / "photo.bin", image_bytes(colour=(1, 2, 3)))
    out = tmp_path / "p.csv"
    status, stdout, err = run([bundle, folder, root, explicit, "-o", out, "--batch-size", "3"], capsys)
    assert status == 0, err
    assert out.read_text().splitlines() == [
        f"path,true_count,{HEADER}", f"{folder}/b.png,,{CONSTANT}", f"{folder}/sub/c.JPG,,{CONSTANT}",
        f"00001,2,{CONSTANT}", f"00002,9,{CONSTANT}", f"{explicit},,{CONSTANT}"]
    summary = summary_of(out)
    bad = [{"name": f"{folder}/a_trunc.jpg", "reason": TRUNCATED},
           {"name": f"{folder}/notes.jpeg", "reason": NOT_AN_IMAGE}]
    assert (summary["images"], summary["predicted"], summary["bad_count"], summary["bad"]) == (7, 5, 2, bad)
    # true 2: off by 1; true 9: clipped to 5, off by 2
    assert summary["metrics"] == pytest.approx(scores(2, 0, correct=0, within_one=1, abs_sum=3, sq_sum=5))
    assert stdout == [f"5 of 7 images predicted -> {out}",
                      "scored 2 with true counts (0 outside the model's classes): acc 0.0000, rmse 1.5811, "
                      "mae 1.5000, within one 0.5000",
                      "2 bad files skipped:",
                      f"  {folder}/a_trunc.jpg: {TRUNCATED}",
                      f"  {folder}/notes.jpeg: {NOT_AN_IMAGE}",
                      f"summary -> {tmp_path / 'p.summary.json'}"]


def test_plain_images_only_have_a_path_column_and_no_scores(bundle, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write(folder / "x.webp", image_bytes("WEBP"))
    write(folder / "y.png", image_bytes())
    out = tmp_path / "p.csv"
    status, stdout, err = run([bundle, folder, "-o", out], capsys)
    assert status == 0, err
    assert out.read_text().splitlines() == [f"path,{HEADER}", f"{folder}/x.webp,{CONSTANT}",
                                            f"{folder}/y.png,{CONSTANT}"]
    assert "metrics" not in summary_of(out)
    assert stdout == [f"2 of 2 images predicted -> {out}", f"summary -> {tmp_path / 'p.summary.json'}"]


def test_bad_input_fail_stops_at_the_first_bad_file_naming_it_and_its_reason(bundle, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write(folder / "a_trunc.jpg", image_bytes("JPEG")[:-10])
    write(folder / "b.png", image_bytes())
    out = tmp_path / "p.csv"
    status, stdout, err = run([bundle, folder, "-o", out, "--bad-input", "fail"], capsys)
    assert status == 1 and stdout == []
    assert err.splitlines()[-1] == (f"bincount predict: error: {folder}/a_trunc.jpg: {TRUNCATED} "
                                    "(--bad-input fail; 'skip' lists bad files and goes on)")
    assert out.read_text() == f"path,{HEADER}\n"  # the rows made before the stop (none), no summary
    assert not out.with_name("p.summary.json").exists()


def test_max_pixels_refuses_larger_images_and_a_run_with_nothing_scored_says_n_0(bundle, make_abid, tmp_path, capsys):
    """The bins are 32x24 = 768 pixels: refused above ``--max-pixels 767``, predicted at 768."""
    root = make_abid([4])
    out = tmp_path / "p.csv"
    status, stdout, err = run([bundle, root, "-o", out, "--max-pixels", "767"], capsys)
    assert status == 0, err
    reason = "image too large: 32x24 = 768 pixels declared, above the limit of 767 (data.max_pixels)"
    summary = summary_of(out)
    assert {k: summary[k] for k in ("images", "predicted", "bad_count", "bad", "metrics")} == {
        "images": 1, "predicted": 0, "bad_count": 1, "bad": [{"name": "00001", "reason": reason}],
        "metrics": {"n": 0, "unscored": 0}}
    assert out.read_text() == f"id,true_count,{HEADER}\n"
    assert stdout == [f"0 of 1 images predicted -> {out}", "1 bad files skipped:", f"  00001: {reason}",
                      f"summary -> {tmp_path / 'p.summary.json'}"]

    status, _, err = run([bundle, root, "-o", out, "--max-pixels", "768"], capsys)
    assert status == 0, err
    assert summary_of(out)["predicted"] == 1


def test_true_counts_all_outside_the_classes_are_counted_as_unscored(bundle, make_abid, tmp_path, capsys):
    out = tmp_path / "p.csv"
    status, stdout, err = run([bundle, make_abid([0, 0]), "-o", out], capsys)
    assert status == 0, err
    assert summary_of(out)["metrics"] == {"n": 0, "unscored": 2}
    assert stdout == [f"2 of 2 images predicted -> {out}", f"summary -> {tmp_path / 'p.summary.json'}"]


def test_ids_select_bins_of_an_abid_root_in_listing_order(bundle, make_abid, tmp_path, capsys):
    root = make_abid([1, 2, 3, 4])
    ids = write(tmp_path / "ids.txt", b"00004\n00002\n")
    out = tmp_path / "p.csv"
    status, stdout, err = run([bundle, root, "-o", out, "--ids", ids], capsys)
    assert status == 0, err
    assert out.read_text().splitlines() == [f"id,true_count,{HEADER}", f"00002,2,{CONSTANT}", f"00004,4,{CONSTANT}"]
    assert (summary_of(out)["images"], summary_of(out)["predicted"]) == (2, 2)

    none = write(tmp_path / "none.txt", b"99999\n")
    status, stdout, err = run([bundle, root, "-o", out, "--ids", none], capsys)
    assert status == 1 and stdout == []
    assert err.splitlines()[-1] == (f"bincount predict: error: no images found in {[str(root)]} (after --ids); "
                                    f"image suffixes: {list(IMAGE_SUFFIXES)}")


def test_a_missing_input_is_named(bundle, tmp_path, capsys):
    status, stdout, err = run([bundle, tmp_path / "nowhere", "-o", tmp_path / "p.csv"], capsys)
    assert status == 1 and stdout == []
    assert err.splitlines()[-1] == (f"bincount predict: error: input {tmp_path / 'nowhere'} does not exist "
                                    "(an image, a folder, an ABID root or an s3:// prefix)")


def test_on_a_terminal_the_bar_goes_to_stderr_and_stdout_keeps_the_report(bundle, make_abid, tmp_path, capsys,
                                                                          monkeypatch):
    """Three images in batches of 2: more than one batch, so a bar, on stderr only."""
    root = make_abid([1, 2, 3])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    out = tmp_path / "p.csv"
    status, stdout, err = run([bundle, root, "-o", out, "--batch-size", "2"], capsys, progress=True)
    assert status == 0, err
    assert stdout == [f"3 of 3 images predicted -> {out}",
                      "scored 3 with true counts (0 outside the model's classes): acc 0.3333, rmse 1.2910, "
                      "mae 1.0000, within one 0.6667",
                      f"summary -> {tmp_path / 'p.summary.json'}"]
    assert "Predicting" in err


def test_precision_reaches_the_model(tmp_path_factory, tmp_path, capsys):
    """``--precision bf16-true`` computes in bfloat16: each probability is a bfloat16 number (8 significant
    bits), which the default 32-bit run's are not. Values >= 0.01, where bfloat16's steps are far above the
    CSV's 6 decimals."""
    model = write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "model")
    folder = tmp_path / "imgs"
    for i, colour in enumerate([(200, 10, 60), (10, 200, 90), (90, 90, 250)]):
        write(folder / f"{i}.png", image_bytes(colour=colour))

    def large_probs(precision: str) -> list[float]:
        out = tmp_path / f"{precision}.csv"
        status, _, err = run([model, folder, "-o", out, "--precision", precision], capsys)
        assert status == 0, err
        rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
        return [float(x) for row in rows for x in row[3:] if float(x) >= 0.01]

    def is_bf16(x: float) -> bool:
        return abs(torch.tensor(x).to(torch.bfloat16).item() - x) <= 1e-6

    assert all(map(is_bf16, large_probs("bf16-true")))
    assert not all(map(is_bf16, large_probs("32-true")))


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_the_accelerator_reaches_the_trainer(bundle, make_abid, tmp_path):
    """An accelerator this machine lacks is refused, not replaced by another one."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(bundle), str(make_abid([1])), "-o", str(tmp_path / "p.csv"), "--num-workers", "0",
                              "--no-progress", "--accelerator", "mps"])
    from bincount.predict.cli import PredictSetupError, predict

    with pytest.raises(PredictSetupError, match=r"^--accelerator mps --precision 32-true: `MPSAccelerator` can not "
                       r"run .* \(choose from auto, cpu, gpu, cuda, mps; auto picks what this machine has\)$"):
        predict(args)


def test_an_accelerator_this_machine_lacks_is_one_line_and_status_1(bundle, make_abid, tmp_path, capsys):
    from bincount import cli

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    status = cli.main(["predict", str(bundle), str(make_abid([1])), "-o", str(tmp_path / "p.csv"),
                       "--num-workers", "0", "--no-progress", "--accelerator", "gpu"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("bincount predict: error: --accelerator gpu --precision 32-true: ")


# -- S3: model, inputs and output -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bucket(s3_endpoint, bundle, tmp_path_factory):  # noqa: F811
    """``pv-data``: the constant bundle under ``models/m/`` and an ABID root (true counts 3 and 6) under ``abid/``."""
    client = s3_client(s3_endpoint)
    for name in ("pv-data", "pv-out"):
        client.create_bucket(Bucket=name)
    upload_abid(s3_endpoint, "pv-data", write_abid(tmp_path_factory.mktemp("pv_abid"), [3, 6]), prefix="abid")
    for f in bundle.iterdir():
        client.put_object(Bucket="pv-data", Key=f"models/m/{f.name}", Body=f.read_bytes())
    return SimpleNamespace(endpoint=s3_endpoint, client=client)


@pytest.fixture
def s3_run(bucket, tmp_path, monkeypatch, capsys):
    """Runs with the endpoint given only by ``--endpoint-url`` (a store that lost it fails at once), from an
    empty working dir, and with scratch folders under ``tmp_path / "tmp"``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "not-an-endpoint")
    monkeypatch.chdir(Path(tempfile.mkdtemp(dir=tmp_path)))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def go(output: str):
        argv = ["s3://pv-data/models/m", "s3://pv-data/abid", "-o", output, "--endpoint-url", bucket.endpoint]
        return (*run(argv, capsys), scratch)

    return go


def test_an_s3_model_and_s3_inputs_predict_into_an_s3_csv(bucket, s3_run):
    url = "s3://pv-out/run1/p.csv"
    status, stdout, err, scratch = s3_run(url)
    assert status == 0, err
    assert stdout == [f"2 of 2 images predicted -> {url}",
                      "scored 2 with true counts (0 outside the model's classes): acc 0.5000, rmse 1.4142, "
                      "mae 1.0000, within one 0.5000",
                      "summary -> s3://pv-out/run1/p.summary.json"]
    body = bucket.client.get_object(Bucket="pv-out", Key="run1/p.csv")["Body"].read().decode()
    assert body.splitlines() == [f"id,true_count,{HEADER}", f"00001,3,{CONSTANT}", f"00002,6,{CONSTANT}"]
    uploaded = json.loads(bucket.client.get_object(Bucket="pv-out", Key="run1/p.summary.json")["Body"].read())
    assert (uploaded["model"], uploaded["images"], uploaded["predicted"], uploaded["metrics"]["n"]) == \
        ("s3://pv-data/models/m", 2, 2, 2)
    assert uploaded["csv"] == url and "summary_json" not in uploaded  # not the scratch copy, deleted by now
    assert os.listdir(scratch) == [] and os.listdir(".") == []  # the local copy is gone, nothing written here


def test_a_failed_upload_keeps_the_predictions_in_a_named_local_folder(bucket, s3_run):
    url = "s3://pv-no-such-bucket/run1/p.csv"
    status, stdout, err, scratch = s3_run(url)
    assert status == 1 and stdout == []
    last = err.splitlines()[-1]
    assert last.startswith(f"bincount predict: error: could not upload the predictions to {url} (")
    kept = Path(last.rpartition("; they are kept in ")[2])
    assert kept.parent == scratch and kept.name.startswith("bincount-predict-")
    assert sorted(os.listdir(kept)) == ["p.csv", "p.summary.json"]
    assert (kept / "p.csv").read_text().splitlines()[1:] == [f"00001,3,{CONSTANT}", f"00002,6,{CONSTANT}"]


# -- the report ---------------------------------------------------------------------------------------------

def test_report_prints_counts_scores_every_bad_file_and_the_summary_path(capsys):
    report({"predicted": 2, "images": 4, "csv": "out/p.csv", "bad_count": 2, "summary_json": "out/p.summary.json",
            "metrics": {"n": 2, "unscored": 1, "acc": 0.5, "rmse": 1 / 3, "mae": 0.25, "within_one": 1.0},
            "bad": [{"name": "a\x1b[31m.jpg", "reason": "empty file"}, {"name": "b.png", "reason": "image missing"}]})
    assert capsys.readouterr().out.splitlines() == [
        "2 of 4 images predicted -> out/p.csv",
        "scored 2 with true counts (1 outside the model's classes): acc 0.5000, rmse 0.3333, mae 0.2500, "
        "within one 1.0000",
        "2 bad files skipped:", "  a[31m.jpg: empty file", "  b.png: image missing",  # no escape character
        "summary -> out/p.summary.json"]


# -- the dataset: decoded images and bad ones ---------------------------------------------------------------

def identity(image):
    return image


def test_each_item_decodes_or_says_why_not(tmp_path):
    good = write(tmp_path / "good.png", image_bytes(colour=(200, 10, 60)))
    folder = tmp_path / "a_folder.jpg"
    folder.mkdir()
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: refused by its size, nothing read
    corrupt = write(tmp_path / "corrupt.jpg", b"not an image at all")

    def flaky(key: str) -> bytes:
        raise RuntimeError(f"GET {key} failed after 3 tries")

    paths = [good, tmp_path / "missing.png", folder, huge, corrupt]
    items = [Item(f"name{i}", str(p), FileReader()) for i, p in enumerate(paths)] + [Item("name5", "k5", flaky)]
    ds = PredictDataset(items, identity, max_pixels=10_000)
    assert len(ds) == 6
    first = ds[0]
    image = first.pop("image")
    assert first == {"label": 0, "index": 0, "id": "name0"}
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 24, 32)
    assert image.flatten(1).unique(dim=1).tolist() == [[200], [10], [60]]  # every pixel the PNG's colour
    assert [ds[i] for i in range(1, 6)] == [
        {"bad": ("name1", "image missing"), "index": 1},
        {"bad": ("name2", f"unreadable ([Errno 21] Is a directory: '{folder}')"), "index": 2},
        {"bad": ("name3", f"unreadable ({huge} is 33,554,433 bytes, above the limit of 33,554,432 bytes for such "
                          "a file)"), "index": 3},
        {"bad": ("name4", NOT_AN_IMAGE), "index": 4},
        {"bad": ("name5", "unreadable (GET k5 failed after 3 tries)"), "index": 5}]
    assert PredictDataset(items[:1], identity, max_pixels=767)[0] == {
        "bad": ("name0", "image too large: 32x24 = 768 pixels declared, above the limit of 767 (data.max_pixels)"),
        "index": 0}


def test_the_bundle_transform_gives_its_input_size(bundle, tmp_path):
    from bincount.bundle import load_model

    model = load_model(bundle)
    good = write(tmp_path / "good.jpg", image_bytes("JPEG", size=(64, 48)))
    sample = PredictDataset([Item("g", str(good), FileReader())], model.transform, model.max_pixels)[0]
    assert tuple(sample["image"].shape) == (3, 32, 32) and sample["image"].dtype == torch.float32


class GatedStore(S3Store):
    """An S3 store of blobs whose reads each wait until ``parties`` reads are in flight together: a batch read
    one object at a time times out (a RuntimeError, as an S3 read that gave up)."""

    def __init__(self, blobs: dict[str, bytes | BaseException], parties: int) -> None:
        super().__init__("s3://pv-gate/bins")
        self.blobs, self.gate = blobs, threading.Barrier(parties, timeout=3)

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        self.gate.wait()
        if key not in self.blobs:
            raise FileNotFoundError(key)
        value = self.blobs[key]
        if isinstance(value, BaseException):
            raise value
        return value


def test_a_batch_from_one_store_is_read_together_in_order_with_each_failure_named():
    blobs = {"a.png": image_bytes(colour=(1, 2, 3)), "big.jpg": TooLarge("s3://pv-gate/bins/big.jpg is too large"),
             "junk.jpg": b"not an image at all"}
    store = GatedStore(blobs, parties=4)
    items = [Item(f"s3://pv-gate/bins/{k}", k, store) for k in ("a.png", "gone.jpg", "big.jpg", "junk.jpg")]
    out = PredictDataset(items, identity, max_pixels=10_000).__getitems__([2, 0, 3, 1])
    image = out[1].pop("image")
    assert image.flatten(1).unique(dim=1).tolist() == [[1], [2], [3]]
    big = "s3://pv-gate/bins/big.jpg"
    assert out == [{"bad": (big, f"unreadable ({big} is too large)"), "index": 2},
                   {"label": 0, "index": 0, "id": "s3://pv-gate/bins/a.png"},
                   {"bad": ("s3://pv-gate/bins/junk.jpg", NOT_AN_IMAGE), "index": 3},
                   {"bad": ("s3://pv-gate/bins/gone.jpg", "image missing"), "index": 1}]
    store.gate = threading.Barrier(1)
    one = PredictDataset(items, identity, max_pixels=10_000).__getitems__([1])
    assert one == [{"bad": ("s3://pv-gate/bins/gone.jpg", "image missing"), "index": 1}]


def test_a_batch_from_several_readers_reads_each_item_with_its_own(tmp_path):
    local = write(tmp_path / "b.png", image_bytes(colour=(4, 5, 6)))
    store = GatedStore({"a.png": image_bytes(colour=(1, 2, 3))}, parties=1)
    items = [Item("s3://pv-gate/bins/a.png", "a.png", store), Item(str(local), str(local), FileReader())]
    out = PredictDataset(items, identity, max_pixels=10_000).__getitems__([0, 1])
    assert [(s["id"], s["index"], s["image"].flatten(1).unique(dim=1).tolist()) for s in out] == [
        ("s3://pv-gate/bins/a.png", 0, [[1], [2], [3]]), (str(local), 1, [[4], [5], [6]])]


def test_the_loader_batches_in_order_and_carries_bad_files_aside(tmp_path):
    paths = [write(tmp_path / f"{i}.png", image_bytes(colour=(i, i, i))) for i in range(5)]
    paths[2].unlink()
    ds = PredictDataset([Item(f"n{i}", str(p), FileReader()) for i, p in enumerate(paths)], identity, 10_000)
    batches = list(predict_loader(ds, batch_size=2, num_workers=0))
    assert [(b["index"].tolist(), b["id"], b["bad"], tuple(b["image"].shape)) for b in batches] == [
        ([0, 1], ["n0", "n1"], [], (2, 3, 24, 32)), ([3], ["n3"], [("n2", "image missing")], (1, 3, 24, 32)),
        ([4], ["n4"], [], (1, 3, 24, 32))]
    assert [b["image"][:, 0, 0, 0].tolist() for b in batches] == [[0, 1], [3], [4]]
    assert predict_loader(ds, batch_size=2, num_workers=1).num_workers == 1


# -- inputs ----------------------------------------------------------------------------------------------------

def test_an_explicit_file_is_one_item_named_by_its_expanded_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write(tmp_path / "photo.bin", b"any bytes")
    (item,) = collect(["~/photo.bin"])
    assert (item.name, item.key, item.true_count, item.abid) == (str(path), str(path), None, False)
    assert item.reader(item.key) == b"any bytes"


def test_a_folder_with_bin_images_but_no_metadata_is_a_plain_folder(tmp_path):
    root = write_abid(tmp_path / "abid", [1, 2])
    for f in (root / "metadata").iterdir():
        f.unlink()
    (root / "metadata").rmdir()
    write(root / "extra" / "Z.PNG", b"z")
    items = collect([str(root)])
    assert [(i.name, i.true_count, i.abid) for i in items] == [
        (f"{root}/bin-images/00001.jpg", None, False), (f"{root}/bin-images/00002.jpg", None, False),
        (f"{root}/extra/Z.PNG", None, False)]


def test_an_abid_root_with_an_empty_metadata_folder_has_ids_without_truth(tmp_path):
    root = write_abid(tmp_path / "abid", [1, 2])
    for f in (root / "metadata").iterdir():
        f.unlink()
    assert [(i.name, i.key, i.true_count, i.abid) for i in collect([str(root)], {"00002"})] == [
        ("00002", "bin-images/00002.jpg", None, True)]


def test_collect_filters_abid_ids_and_names_an_empty_result(tmp_path):
    root = write_abid(tmp_path / "abid", [5, 0, 7])
    assert [(i.name, i.true_count) for i in collect([str(root)], {"00003", "00001", "99999"})] == [
        ("00001", 5), ("00003", 7)]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as without:
        collect([str(empty)])
    assert str(without.value) == f"no images found in {[str(empty)]}; image suffixes: {list(IMAGE_SUFFIXES)}"
    with pytest.raises(DataError) as after:
        collect([str(root)], set())
    assert str(after.value) == f"no images found in {[str(root)]} (after --ids); image suffixes: {list(IMAGE_SUFFIXES)}"


# -- the writer and the console -----------------------------------------------------------------------------

@pytest.mark.parametrize(("true", "overflow", "expected"), [
    (0, "clip", None), (1, "clip", 1), (4, "drop", 4), (5, "drop", 5), (5, "clip", 5), (6, "clip", 5),
    (6, "drop", None), (9, "fail", None)])
def test_scored_count_follows_the_class_policy(true, overflow, expected):
    assert scored_count(true, {**CLASSES, "overflow": overflow}) == expected


def test_the_writer_closes_its_csv_once_whatever_ends_the_run(tmp_path):
    writer = CSVPredictionWriter(tmp_path / "p.csv", [Item("x", "x", None)], CLASSES)
    writer.on_exception(None, None, RuntimeError("failed before predicting"))  # nothing opened: nothing to close
    assert not (tmp_path / "p.csv").exists()
    writer.on_predict_start(None, None)
    handle = writer._file
    writer.on_predict_end(None, None)
    assert handle.closed and (tmp_path / "p.csv").read_text() == f"path,{HEADER}\n"
    writer.on_exception(None, None, RuntimeError("failed after predicting"))  # closed already: no error


def test_quiet_lightning_silences_info_and_one_warning_only():
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    saved = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.INFO)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _quiet_lightning()
            warnings.warn("The 'predict_dataloader' does not have many workers which may be a bottleneck.")
            warnings.warn("a warning a user can act on")
        assert [str(w.message) for w in caught] == ["a warning a user can act on"]
        assert [logging.getLogger(f"{name}.child").getEffectiveLevel()
                for name in ("lightning.pytorch", "lightning.fabric")] == [logging.WARNING, logging.WARNING]
    finally:
        for logger, level in zip(loggers, saved):
            logger.setLevel(level)


@pytest.mark.parametrize(("no_progress", "tty", "images", "shown"), [
    (False, True, 5, True), (False, True, 4, False), (True, True, 5, False), (False, False, 100, False)])
def test_show_progress_only_on_a_terminal_for_more_than_one_batch(no_progress, tty, images, shown, monkeypatch):
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(isatty=lambda: tty))
    assert show_progress(argparse.Namespace(no_progress=no_progress, batch_size=4), images) is shown


def test_the_summary_file_is_indented_json_without_its_own_location(tmp_path):
    from bincount.predict.cli import write_summary

    path = tmp_path / "p.summary.json"
    write_summary(path, {"model": "m", "summary_json": str(path), "bad": [{"name": "x.jpg"}]})
    assert path.read_text() == '{\n  "model": "m",\n  "bad": [\n    {\n      "name": "x.jpg"\n    }\n  ]\n}\n'
