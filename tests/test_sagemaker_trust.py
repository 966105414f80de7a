"""The launcher's trust boundaries (docs/security.md), each attacked as issue 14 did.

A job's output is written by whoever can write the output prefix or runs code in the job: a crafted
``result.pkl`` must never run on the laptop. An override is shell in the container: a newline and the
SDK's heredoc terminator must be refused. The code channel goes to a bucket: ``.env`` and keys beside the
code must not. A huge ``output.tar.gz`` must not be read. Against moto_server, as the request tests.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from omegaconf import OmegaConf
from test_sagemaker_request import BUCKET, ROLE, aws, fake_sagemaker, moto_endpoint, tarball  # noqa: F401 (fixtures)
from test_secrets import AWS_SECRET, WANDB_KEY, files_containing

APP = Path(__file__).parent / "sagemaker_app"
REMOTE = ["hydra/launcher=sagemaker_base", f"hydra.launcher.role={ROLE}", "hydra.launcher.region=us-east-1",
          f"hydra.launcher.output_s3_uri=s3://{BUCKET}/out", "hydra.launcher.poll_interval_s=0.1"]


class Touch:
    """A pickle that runs ``touch PATH`` when loaded: what a crafted result.pkl does."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def sweep_of(hydra_sweep_runner, sweep_dir: Path, overrides: list[str]):
    """A one-job sweep of Hydra's test app (a pickled task: payload=pickle)."""
    return hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                              config_path="configs", config_name="compose.yaml", temp_dir=str(sweep_dir),
                              overrides=overrides)


# --- 1. result.pkl from a job -------------------------------------------------------------------------

def test_crafted_result_pkl_from_a_remote_job_is_refused_and_never_run(fake_sagemaker, hydra_sweep_runner, tmp_path):
    marker = tmp_path / "pwned"
    fake_sagemaker.output = lambda req: {"result.json": json.dumps({"status": "COMPLETED", "return_value": 1}),
                                         "result.pkl": pickle.dumps(Touch(marker)), "result.pkl.hmac": "0" * 64}
    with pytest.raises(RuntimeError, match="failed: refused result.pkl of job 0: its HMAC does not match this sweep's key"):
        with sweep_of(hydra_sweep_runner, tmp_path / "sweep", [*REMOTE, f"hydra.launcher.source_dir={APP}"]):
            pass
    assert not marker.exists(), "the crafted pickle ran on the launching machine"


def test_script_mode_reads_results_as_json_only(fake_sagemaker, hydra_sweep_runner, tmp_path, monkeypatch, caplog):
    import sys

    from bincount.resolvers import register_resolvers

    register_resolvers()
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(sys, "argv", [str(root / "train.py")])
    marker = tmp_path / "pwned"
    fake_sagemaker.output = lambda req: {"result.json": json.dumps({"status": "COMPLETED", "return_value": 0.25}),
                                         "result.pkl": pickle.dumps(Touch(marker))}
    sweep = hydra_sweep_runner(calling_file=str(root / "train.py"), calling_module=None, task_function=None,
                               config_path="conf", config_name="train", temp_dir=str(tmp_path / "sweep"),
                               overrides=[*REMOTE, f"hydra.launcher.source_dir={root}", "hydra.launcher.payload=script",
                                          "hydra/sweeper=basic", "model=tiny"])
    with caplog.at_level("WARNING"), sweep:
        assert sweep.returns[0][0].return_value == 0.25
    assert not marker.exists()
    assert "job 0: ignored result.pkl in its output (script-mode results are read from result.json only)" in caplog.text


def spec_in(tmp_path: Path, pickled: bool = True, rel_dir: str = "multirun/s/0"):
    from bincount.sagemaker.spec import JobSpec

    config = OmegaConf.create({"x": 1, "hydra": {"runtime": {"output_dir": ""}, "job": {"name": "t"}}})
    local = tmp_path / "0"
    local.mkdir(exist_ok=True)
    (local / "result.json").write_text(json.dumps({"status": "COMPLETED", "return_value": "from json"}))
    return JobSpec(0, [], config, local, rel_dir, [], {}, "sha", "job", b"task" if pickled else None, "state")


def test_only_a_pickle_signed_with_the_sweeps_key_for_this_job_is_unpickled(tmp_path):
    from bincount.sagemaker.contract import result_mac
    from bincount.sagemaker.runner import read_result, result_key

    key = result_key(tmp_path / "sweep")
    assert result_key(tmp_path / "sweep") == key, "a relaunch keeps the sweep's key"
    assert oct((tmp_path / "sweep" / ".sagemaker" / "result.key").stat().st_mode & 0o777) == "0o600"
    spec = spec_in(tmp_path)
    blob = pickle.dumps({"an": "object"})
    (spec.local_dir / "result.pkl").write_bytes(blob)
    (spec.local_dir / "result.pkl.hmac").write_text(result_mac(key, spec.rel_dir, blob))
    assert read_result(spec, key) == ("Completed", {"an": "object"}, None)
    other_job = spec_in(tmp_path, rel_dir="multirun/s/1")  # the same signed file copied into another job
    assert read_result(other_job, key)[0] == "Failed"
    assert read_result(spec, b"another sweep's key")[2].startswith("refused result.pkl of job 0: its HMAC does not")
    (spec.local_dir / "result.pkl.hmac").unlink()
    assert "no result.pkl.hmac for this sweep's key" in read_result(spec, key)[2]


def test_relaunch_refuses_a_tampered_result_of_a_completed_job(tmp_path):
    from bincount.sagemaker.runner import result_key, run_jobs, save_state

    marker = tmp_path / "pwned"
    spec = spec_in(tmp_path)
    save_state(spec, name="job-0", status="Completed")  # an earlier launch completed it
    (spec.local_dir / "result.pkl").write_bytes(pickle.dumps(Touch(marker)))
    backend = SimpleNamespace(close=lambda: None)  # nothing to submit: the job is skipped as completed
    ret = run_jobs(backend, [spec], {"skip_completed": True, "max_parallel_jobs": 1, "poll_interval_s": 0},
                   result_key(tmp_path / "sweep"))[0]
    assert ret.status.name == "FAILED" and "refused result.pkl" in str(ret._return_value)
    assert not marker.exists()


# --- 3. shell injection through an override --------------------------------------------------------------

def crafted(marker: Path) -> str:
    """Ends the SDK's quoted heredoc early, runs ``touch``, and comments out the closing quotes."""
    return f'+x="a\nSAGEMAKER_BASE_COMMAND_EOF\ntouch {marker}\n#"'


def test_the_crafted_override_is_live_against_the_sdks_own_script_builder(tmp_path):
    """The control: what the SDK builds from this argument runs the injected command."""
    from tempfile import TemporaryDirectory

    from sagemaker.core.training.configs import SourceCode
    from sagemaker.train.model_trainer import ModelTrainer

    marker = tmp_path / "pwned"
    with TemporaryDirectory() as d:
        holder = SimpleNamespace(name=d)
        ModelTrainer._prepare_train_script(SimpleNamespace(hyperparameters=None, _jumpstart_config=None), holder,
                                           SourceCode(command="echo", args=[crafted(marker)]))
        script = Path(d, "sm_train.sh").read_text()
    execute = re.search(r'CMD=\$\(cat <<.*eval "\$CMD"', script, re.S).group()
    subprocess.run(["bash", "-c", execute], cwd=tmp_path, capture_output=True)
    assert marker.exists(), "the SDK no longer runs this injection; keep the refusal, update this control"


@pytest.mark.parametrize("backend", [
    [*REMOTE, "hydra.launcher.dry_run=true"],
    ["hydra/launcher=sagemaker_local_base"],
])
def test_an_override_with_a_control_character_is_refused_before_anything_runs(backend, hydra_sweep_runner, tmp_path):
    from bincount.sagemaker.spec import LauncherConfigError

    marker = tmp_path / "pwned"
    sweep = sweep_of(hydra_sweep_runner, tmp_path / "sweep", [*backend, f"hydra.launcher.source_dir={APP}",
                                                               crafted(marker)])
    with pytest.raises(LauncherConfigError, match=r"override 'x' contains a control character \('\\n'\).*"
                                                  r"Valid: printable characters only"):
        with sweep:
            pass
    assert not marker.exists()
    assert not (tmp_path / "sweep" / ".sagemaker").exists() and not list((tmp_path / "sweep").glob("0"))


# --- 4-6. secrets in settings, the code channel, the planted-secret scan -------------------------------

def test_environment_and_tag_values_are_checked(hydra_sweep_runner, tmp_path):
    from bincount.secrets import SecretError

    for key, value, secret in [("environment.MLFLOW_TRACKING_URI", "https://u:planted@h", "planted"),
                               ("environment.HTTPS_PROXY", "http://u:planted@proxy:3128", "planted"),
                               ("environment.DB_PASS", "planted", "planted"),
                               ("tags.owner", AWS_SECRET, AWS_SECRET), ("tags.GH_PAT", "planted", "planted")]:
        with pytest.raises(SecretError) as e:
            with sweep_of(hydra_sweep_runner, tmp_path / "sweep",
                          ["hydra/launcher=sagemaker_local_base", f"+hydra.launcher.{key}={value}"]):
                pass
        assert f"'hydra.launcher.{key}'" in str(e.value) and secret not in str(e.value)


def project_with_local_secrets(root: Path, secret: str) -> Path:
    """A project directory as people have them: code, and credentials beside it."""
    files = {"src/app/__init__.py": "", "conf/x.yaml": "a: 1\n", "train.py": "", "pyproject.toml": "",
             ".env": f"WANDB_API_KEY={secret}\n", ".aws/credentials": f"aws_secret_access_key={secret}\n",
             "deploy.pem": secret, "src/app/.env.local": secret, "conf/id_rsa": secret, "data/big.bin": "x",
             "notes.txt": secret}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def uploaded(bucket: str) -> dict[str, bytes]:
    """Every object in the bucket, tarballs opened (a secret must not hide in a compressed code channel)."""
    s3, found = boto3.client("s3"), {}
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        found[obj["Key"]] = body
        try:
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                found.update({f"{obj['Key']}!{m.name}": tar.extractfile(m).read() for m in tar if m.isfile()})
        except tarfile.ReadError:  # not a tarball
            pass
    return found


def test_planted_secrets_reach_no_request_no_upload_and_no_file(fake_sagemaker, hydra_sweep_runner, tmp_path,
                                                                 monkeypatch, caplog):
    secret = WANDB_KEY
    project = project_with_local_secrets(tmp_path / "project", secret)
    monkeypatch.setenv("WANDB_API_KEY", secret)  # the laptop's own key: the job reads its own from Secrets Manager
    sweep_dir = tmp_path / "sweep"
    with caplog.at_level("INFO"), sweep_of(hydra_sweep_runner, sweep_dir, [
            *REMOTE, f"hydra.launcher.source_dir={project}", "+hydra.launcher.secrets.WANDB_API_KEY=bincount/wandb",
            "+hydra.launcher.tags.team=vision"]) as sweep:
        assert sweep.returns[0][0].status.name == "COMPLETED"
        assert files_containing(sweep_dir, secret) == []
        code = sorted(p.relative_to(sweep_dir / ".sagemaker" / "code").as_posix()
                      for p in (sweep_dir / ".sagemaker" / "code").rglob("*") if p.is_file())
    assert code == ["_sagemaker_jobs/job0.pkl", "_sagemaker_jobs/requirements.txt", "conf/x.yaml",
                    "pyproject.toml", "src/app/__init__.py", "train.py"]
    assert "Code channel from" in caplog.text and "4 files: conf/ (1), pyproject.toml, src/ (1), train.py" in caplog.text
    (request,) = fake_sagemaker.requests
    assert secret not in json.dumps(request)
    objects = uploaded(BUCKET)
    assert [k for k, v in objects.items() if secret.encode() in v] == []
    assert not [k for k in objects if ".env" in k or ".aws" in k or k.endswith((".pem", "notes.txt"))]
    assert secret not in caplog.text


def test_dry_run_lists_the_code_channel(aws, hydra_sweep_runner, tmp_path, caplog):
    project = project_with_local_secrets(tmp_path / "project", "planted-value")
    with caplog.at_level("INFO"), sweep_of(hydra_sweep_runner, tmp_path / "sweep", [
            *REMOTE, "hydra.launcher.dry_run=true", f"hydra.launcher.source_dir={project}"]):
        pass
    listed = re.search(r"\[dry run\] code channel files: (.*)", caplog.text).group(1)
    assert listed.split(", ") == ["conf/x.yaml", "pyproject.toml", "src/app/__init__.py", "train.py"]
    assert "planted-value" not in caplog.text


# --- 12. the size of output.tar.gz ----------------------------------------------------------------------

def test_an_output_above_the_limit_is_refused_unread(aws, tmp_path):
    from bincount.sagemaker.remote import download_output
    from bincount.sagemaker.spec import OutputRefused

    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="big/output.tar.gz", Body=os.urandom(3 * 2**20))
    with pytest.raises(OutputRefused, match=r"s3://bincount-test/big/output.tar.gz is 3.0 MB, above "
                                            r"hydra.launcher.max_output_mb=2: not downloaded"):
        download_output(s3, BUCKET, "big/output.tar.gz", tmp_path / "job", 2 * 2**20)
    bomb = io.BytesIO()
    with tarfile.open(fileobj=bomb, mode="w:gz") as tar:  # 64 KB in S3, 3 MB unpacked
        info = tarfile.TarInfo("result.json")
        info.size = 3 * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert len(bomb.getvalue()) < 2**20
    s3.put_object(Bucket=BUCKET, Key="bomb/output.tar.gz", Body=bomb.getvalue())
    with pytest.raises(OutputRefused, match="unpacks to more than hydra.launcher.max_output_mb=2: not extracted"):
        download_output(s3, BUCKET, "bomb/output.tar.gz", tmp_path / "job", 2 * 2**20)
    assert not list((tmp_path / "job").rglob("*"))
    s3.put_object(Bucket=BUCKET, Key="ok/output.tar.gz", Body=tarball({"result.json": "{}"}))
    assert download_output(s3, BUCKET, "ok/output.tar.gz", tmp_path / "job", 2 * 2**20)
    assert (tmp_path / "job" / "result.json").read_text() == "{}"


def test_a_refused_output_fails_that_job_with_the_reason(fake_sagemaker, hydra_sweep_runner, tmp_path):
    fake_sagemaker.output = lambda req: {"result.json": "{}", "big.bin": os.urandom(2 * 2**20)}
    with pytest.raises(RuntimeError, match=r"failed: s3://bincount-test/out/bincount-0-\w+-\d+/output/output.tar.gz "
                                           r"is 2.0 MB, above hydra.launcher.max_output_mb=1: not downloaded"):
        with sweep_of(hydra_sweep_runner, tmp_path / "sweep", [*REMOTE, f"hydra.launcher.source_dir={APP}",
                                                               "hydra.launcher.max_output_mb=1"]):
            pass
