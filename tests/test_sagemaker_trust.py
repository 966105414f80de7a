"""The launcher's trust boundaries (docs/security.md), attacked as issue 14 did: what comes back, what runs.

A job's output is written by whoever can write the output prefix or runs code in the job: a crafted
``result.pkl`` must never run on the laptop. An override is shell in the container: a newline and the
SDK's heredoc terminator must be refused. Against moto_server, as the request tests; what leaks out
(credentials, the code channel, huge outputs) is tests/test_sagemaker_leaks.py.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.sagemaker import APP, REMOTE, sweep_of
from omegaconf import OmegaConf


class Touch:
    """A pickle that runs ``touch PATH`` when loaded: what a crafted result.pkl does."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


# --- 1. result.pkl from a job -------------------------------------------------------------------------

@pytest.mark.slow
def test_crafted_result_pkl_from_a_remote_job_is_refused_and_never_run(fake_sagemaker, hydra_sweep_runner, tmp_path):
    marker = tmp_path / "pwned"
    fake_sagemaker.output = lambda req: {"result.json": json.dumps({"status": "COMPLETED", "return_value": 1}),
                                         "result.pkl": pickle.dumps(Touch(marker)), "result.pkl.hmac": "0" * 64}
    with pytest.raises(RuntimeError, match="failed: refused result.pkl of job 0: its HMAC does not match this sweep's key"):
        with sweep_of(hydra_sweep_runner, tmp_path / "sweep", [*REMOTE, f"hydra.launcher.source_dir={APP}",
                                                               "hydra.launcher.payload=pickle"]):
            pass
    assert not marker.exists(), "the crafted pickle ran on the launching machine"


@pytest.mark.slow
def test_a_pickled_task_whose_payload_was_not_asked_for_by_name_reads_json(fake_sagemaker, hydra_sweep_runner, tmp_path):
    """payload=auto picks pickle for a task that is not a script; its result still comes back as JSON."""
    marker = tmp_path / "pwned"
    fake_sagemaker.output = lambda req: {"result.json": json.dumps({"status": "COMPLETED", "return_value": 7}),
                                         "result.pkl": pickle.dumps(Touch(marker))}
    with sweep_of(hydra_sweep_runner, tmp_path / "sweep", [*REMOTE, f"hydra.launcher.source_dir={APP}"]) as sweep:
        assert sweep.returns[0][0].return_value == 7
    assert not marker.exists()


@pytest.mark.slow
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
    assert ("job 0: ignored result.pkl in its output (results are read from result.json unless "
            "hydra.launcher.payload=pickle)") in caplog.text


def spec_in(tmp_path: Path, pickled: bool = True, rel_dir: str = "multirun/s/0"):
    from bincount.sagemaker.spec import JobSpec

    config = OmegaConf.create({"x": 1, "hydra": {"runtime": {"output_dir": ""}, "job": {"name": "t"}}})
    local = tmp_path / "0"
    local.mkdir(exist_ok=True)
    (local / "result.json").write_text(json.dumps({"status": "COMPLETED", "return_value": "from json"}))
    return JobSpec(0, [], config, local, rel_dir, [], {}, "sha", "job", b"task" if pickled else None, "state",
                   pickled_result=pickled)


def test_only_a_pickle_signed_with_the_sweeps_key_for_this_job_is_unpickled(tmp_path):
    from bincount.sagemaker.job.contract import result_mac
    from bincount.sagemaker.runner import read_result, result_key

    key = result_key(tmp_path / "sweep")
    assert result_key(tmp_path / "sweep") == key, "a relaunch keeps the sweep's key"
    from bincount.sagemaker.results import key_path

    assert oct(key_path(tmp_path / "sweep").stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "sweep").exists(), "the key lives outside the sweep directory"
    spec = spec_in(tmp_path)
    blob = pickle.dumps({"an": "object"})
    (spec.local_dir / "result.pkl").write_bytes(blob)
    (spec.local_dir / "result.pkl.hmac").write_text(result_mac(key, spec.rel_dir, blob))
    assert read_result(spec, key) == ("Completed", {"an": "object"}, None)
    other_job = spec_in(tmp_path, rel_dir="multirun/s/1")  # the same signed file copied into another job
    assert read_result(other_job, key)[0] == "Failed"
    assert read_result(spec, b"another sweep's key")[2].startswith("refused result.pkl of job 0: its HMAC does not")
    (spec.local_dir / "result.pkl.hmac").write_bytes("é\x00".encode())  # not even hex: refused, no crash
    assert read_result(spec, key)[0] == "Failed"
    (spec.local_dir / "result.pkl.hmac").unlink()
    assert "no result.pkl.hmac for this sweep's key" in read_result(spec, key)[2]


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"no": "status"}', b"\xff\xfe"])
def test_a_damaged_result_json_fails_that_job_only(content, tmp_path):
    from bincount.sagemaker.runner import read_result

    spec = spec_in(tmp_path, pickled=False)
    (spec.local_dir / "result.json").write_bytes(content.encode() if isinstance(content, str) else content)
    status, value, error = read_result(spec, b"k")
    assert (status, value) == ("Failed", None) and error.startswith("unreadable result.json (")


def test_relaunch_refuses_a_tampered_result_of_a_completed_job(tmp_path):
    from helpers.launcher_settings import settings

    from bincount.sagemaker.runner import result_key, run_jobs
    from bincount.sagemaker.state import save_state

    marker = tmp_path / "pwned"
    spec = spec_in(tmp_path)
    save_state(spec, name="job-0", status="Completed")  # an earlier launch completed it
    (spec.local_dir / "result.pkl").write_bytes(pickle.dumps(Touch(marker)))
    backend = SimpleNamespace(close=lambda: None)  # nothing to submit: the job is skipped as completed
    ret = run_jobs(backend, [spec], settings(skip_completed=True, max_parallel_jobs=1, poll_interval_s=0),
                   result_key(tmp_path / "sweep"))[0]
    assert ret.status.name == "FAILED" and "refused result.pkl" in str(ret._return_value)
    assert not marker.exists()


def test_a_script_job_never_sees_the_sweeps_key(tmp_path, monkeypatch):
    """Only the pickle payload signs results; a script's training code (and its dependencies) get no key."""
    from bincount.sagemaker.job import entry

    script = tmp_path / "code" / "task.py"
    script.parent.mkdir()
    script.write_text("import os, pathlib\npathlib.Path('seen').write_text(repr(os.environ.get('BINCOUNT_SM_RESULT_KEY')))\n")
    monkeypatch.chdir(script.parent)
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(tmp_path / "opt" / "ml" / "output" / "data"))
    monkeypatch.setenv("BINCOUNT_SM_JOB_DIR", str(tmp_path / "job"))
    monkeypatch.setenv("BINCOUNT_SM_RESULT_KEY", "ab" * 32)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}  # entry forwards them to its child
    try:
        assert entry.main(["--script", "task.py", "--"]) == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert (script.parent / "seen").read_text() == "None"


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
    from bincount.sagemaker.settings import LauncherConfigError

    marker = tmp_path / "pwned"
    sweep = sweep_of(hydra_sweep_runner, tmp_path / "sweep", [*backend, f"hydra.launcher.source_dir={APP}",
                                                               crafted(marker)])
    with pytest.raises(LauncherConfigError, match=r"override 'x' contains a control character \('\\n'\).*"
                                                  r"Valid: printable characters only"):
        with sweep:
            pass
    assert not marker.exists()
    assert not (tmp_path / "sweep" / ".sagemaker").exists() and not list((tmp_path / "sweep").glob("0"))


@pytest.mark.parametrize("override,needle", [
    ("hydra.launcher.role=admin", "IAM role ARN 'admin' is not valid"),
    ("hydra.launcher.instance_type=g5.xlarge", "instance type 'g5.xlarge' is not valid"),
    ("hydra.launcher.output_s3_uri=bucket/prefix", "hydra.launcher.output_s3_uri: 'bucket/prefix' is not an S3 URL"),
    ("hydra.launcher.instance_type=ml.g5.xlarg", "hydra.launcher.instance_type: instance type 'ml.g5.xlarg' is not a "
     "SageMaker training instance type; did you mean ml.g5.xlarge"),  # well-formed, but no such type
    ("hydra.launcher.instance_type=ml.t2.medium", "instance type 'ml.t2.medium' is not a SageMaker training"),  # endpoints only
    ("hydra.launcher.role=null hydra.launcher.dry_run=false", "hydra.launcher.role is not set: export SAGEMAKER_ROLE_ARN"),
])
def test_malformed_aws_names_are_refused_before_anything_runs(override, needle, hydra_sweep_runner, tmp_path):
    from bincount.sagemaker.settings import LauncherConfigError

    sweep = sweep_of(hydra_sweep_runner, tmp_path / "sweep", [*REMOTE, "hydra.launcher.dry_run=true",
                                                               f"hydra.launcher.source_dir={APP}", *override.split()])
    with pytest.raises(LauncherConfigError, match=re.escape(needle)):
        with sweep:
            pass
    assert not (tmp_path / "sweep" / ".sagemaker").exists()
