"""W&B logging, checked in W&B's own offline files (no network, no account, no mocks).

A two-job multirun of tiny models logs offline (``WANDB_MODE=offline``) with a fake API key in the
environment; the tests read each job's ``run-<id>.wandb`` file, the record log W&B later uploads with
``wandb sync``, through W&B's own protobuf schema. The sweep trains once for the module.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("wandb", reason="wandb is in the dev extra")

from helpers.train import train_tiny  # noqa: E402

FAKE_KEY = "local0123456789abcdef0123456789abcdef0123"  # 40 characters, the shape of a real key
BLOCK, HEADER = 32768, 7  # the .wandb file: a LevelDB-style log of 32 KiB blocks after a 7-byte header


def wandb_records(path: Path) -> list:
    """Every ``Record`` in a ``.wandb`` file (W&B's writer format: LevelDB log blocks of protobuf records).

    Hand-written because wandb 0.31 no longer ships a Python reader (the writer moved to wandb-core);
    the records themselves are parsed by W&B's own generated protobuf classes.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    pos, pending, chunks = HEADER, b"", []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # FULL
            chunks.append(chunk)
        elif kind == 2:  # FIRST
            pending = chunk
        elif kind == 3:  # MIDDLE
            pending += chunk
        elif kind == 4:  # LAST
            chunks.append(pending + chunk)
    records = []
    for raw in chunks:
        record = pb.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def items(entries) -> dict:
    return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}


class OfflineRun:
    def __init__(self, job_dir: Path) -> None:
        (self.dir,) = (job_dir / "wandb").glob("offline-run-*")
        (self.file,) = self.dir.glob("run-*.wandb")
        self.records = wandb_records(self.file)
        kinds = [r.WhichOneof("record_type") for r in self.records]
        self.run = next(r.run for r in self.records if r.WhichOneof("record_type") == "run")
        self.config: dict = {}
        for r in self.records:
            if r.WhichOneof("record_type") == "config":
                self.config.update(items(r.config.update))
        self.history = [items(r.history.item) for r in self.records if r.WhichOneof("record_type") == "history"]
        self.summary: dict = {}
        for r in self.records:
            if r.WhichOneof("record_type") == "summary":
                self.summary.update(items(r.summary.update))
        assert "exit" in kinds, "the run was not finished"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, list[Path], subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("wandb_sweep")
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY, "WANDB_DIR": str(tmp / "wandb_dir"),
           "WANDB_CACHE_DIR": str(tmp / "wandb_cache"), "WANDB_CONFIG_DIR": str(tmp / "wandb_config"),
           "WANDB_DATA_DIR": str(tmp / "wandb_data")}
    proc = train_tiny(tmp, "-m", "logger=all", "head=linear,coral", "trainer.log_every_n_steps=1",
                      "tags=[tiny,test]", "logger.wandb.notes=two heads", "logger.wandb.log_model=true", env=env)
    (sweep_dir,) = (tmp / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    return tmp, jobs, proc


@pytest.mark.slow
def test_sweep_is_one_group_with_one_run_per_job(sweep):
    _, jobs, _ = sweep
    runs = [OfflineRun(job) for job in jobs]
    groups = {r.run.run_group for r in runs}
    assert groups == {f"train-{jobs[0].parent.name}"}, groups
    assert len({r.run.run_id for r in runs}) == 2
    assert [r.run.job_type for r in runs] == ["train", "train"]
    assert runs[0].run.display_name.startswith("0:") and "head=linear" in runs[0].run.display_name
    assert runs[1].run.display_name.startswith("1:") and "head=coral" in runs[1].run.display_name
    assert list(runs[0].run.tags) == ["tiny", "test"] and runs[0].run.notes == "two heads"
    assert runs[0].run.project == "bincount"


@pytest.mark.slow
def test_full_resolved_config_is_logged(sweep):
    _, jobs, _ = sweep
    config = OfflineRun(jobs[1]).config
    assert config["model"]["backbone"] == "test_resnet" and config["head"]["name"] == "coral"
    assert config["data"]["img_size"] == 32 and config["trainer"]["max_epochs"] == 1
    assert config["paths"]["output_dir"] == str(jobs[1])  # resolved, not ${hydra:...}
    assert "_target_" in config["optimizer"] and "logger" in config  # everything, not only model hparams


@pytest.mark.slow
def test_metrics_per_step_and_epoch_and_final_results(sweep):
    _, jobs, _ = sweep
    run = OfflineRun(jobs[0])
    steps = [h for h in run.history if "train/loss_step" in h]
    assert len(steps) >= 2 and all("trainer/global_step" in h for h in steps)
    assert any("train/loss_epoch" in h and "epoch" in h for h in run.history)
    assert any("val/acc" in h for h in run.history)
    metrics = json.loads((jobs[0] / "metrics.json").read_text())
    assert run.summary["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert run.summary["objective"] == pytest.approx(metrics["objective"], abs=1e-6)
    tables = {k.split("/_type")[0] for h in run.history for k, v in h.items() if k.endswith("/_type") and v == "table-file"}
    assert {"test/per_class", "test/confusion_matrix_table"} <= tables
    per_class = json.loads(next((run.dir / "files" / "media" / "table" / "test").glob("per_class_*.table.json")).read_text())
    assert per_class["columns"] == ["count", "precision", "recall", "f1", "support"]
    assert [row[0] for row in per_class["data"]] == [1, 2, 3, 4, 5]
    assert [row[4] for row in per_class["data"]] == [metrics[f"test/support_{c}"] for c in range(1, 6)]



@pytest.mark.slow
def test_all_loggers_at_once_and_the_checkpoint_artifact(sweep):
    _, jobs, _ = sweep
    for job in jobs:
        assert (job / "report.html").is_file() and (job / "csv" / "metrics.csv").is_file()
        assert any((job / "tensorboard").glob("events.out.tfevents.*"))
        run = OfflineRun(job)
        artifacts = [r.artifact for r in run.records if r.WhichOneof("record_type") == "artifact"]
        models = [a for a in artifacts if a.type == "model"]
        assert models and models[0].name == f"model-{run.run.run_id}", [(a.type, a.name) for a in artifacts]
        assert any(e.path.endswith(".ckpt") for a in models for e in a.manifest.contents)


def test_run_id_follows_the_run_directory(tmp_path):
    from bincount.wandb_logger import run_id

    assert run_id(str(tmp_path / "a"), "p") == run_id(str(tmp_path / "a"), "p")  # resume=true: same run
    assert run_id(str(tmp_path / "a"), "p") != run_id(str(tmp_path / "b"), "p")


@pytest.mark.slow
def test_api_key_is_never_written(sweep):
    tmp, _, proc = sweep
    assert FAKE_KEY not in proc.stdout + proc.stderr
    leaks = [p for p in tmp.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert not leaks, leaks


@pytest.mark.slow
def test_offline_run_says_how_to_sync(sweep):
    _, jobs, proc = sweep
    assert f"wandb sync {OfflineRun(jobs[0]).dir}" in proc.stdout + proc.stderr


SCRIPT = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO)
    from bincount.wandb_logger import BinCountWandbLogger
    logger = BinCountWandbLogger(save_dir=sys.argv[1])
    print("MODE", logger.mode)
    logger.log_hyperparams({"model": {"backbone": "test_resnet"}})
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.log_results({"test/acc": 0.5, "test/support_1": 1, "test/precision_1": 1.0, "test/recall_1": 1.0,
                        "test/f1_1": 1.0, "test/confusion_matrix": [[1]]})
    logger.finish()
""")


SCENARIOS = {  # name -> environment; each runs the logger alone in its own process, all at once
    "disabled": {"WANDB_MODE": "disabled", "WANDB_API_KEY": FAKE_KEY},
    "no_credentials": {},
    # a key but no server (a laptop on a train, a locked-down cluster); port 9 on loopback is closed
    "unreachable": {"WANDB_API_KEY": FAKE_KEY, "WANDB_INIT_TIMEOUT": "5", "WANDB_BASE_URL": "http://127.0.0.1:9"},
}


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Run every scenario in parallel (each pays Lightning's import once; two cores do two at a time)."""
    started = {}
    for name, env in SCENARIOS.items():
        tmp = tmp_path_factory.mktemp(name)
        base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
        base.update(HOME=str(tmp / "home"), NETRC=str(tmp / "home" / ".netrc"), WANDB_DIR=str(tmp / "wandb_dir"),
                    WANDB_CACHE_DIR=str(tmp / "cache"), WANDB_CONFIG_DIR=str(tmp / "config"),
                    WANDB_DATA_DIR=str(tmp / "data"),
                    MPLCONFIGDIR=str(tmp.parent / f"{tmp.name}-matplotlib"))  # its font cache (torchmetrics imports it)
        base.update(env)
        started[name] = tmp, subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp / "run")], env=base,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, (tmp, proc) in started.items():
        try:
            out, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
        results[name] = tmp, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.mark.slow
def test_disabled_mode_writes_nothing(alone):
    tmp, proc = alone["disabled"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MODE disabled" in proc.stdout
    written = [p for p in tmp.rglob("*") if p.is_file()]
    assert not written, written


@pytest.mark.slow
def test_without_credentials_it_goes_offline_by_itself(alone):
    tmp, proc = alone["no_credentials"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MODE offline" in proc.stdout
    assert "no API key found" in proc.stderr and "wandb sync" in proc.stderr
    assert list((tmp / "run" / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_an_unreachable_server_falls_back_to_offline(alone):
    """Training goes on: a warning, then an offline run to sync later."""
    tmp, proc = alone["unreachable"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MODE online" in proc.stdout and "could not start an online run" in proc.stderr
    assert list((tmp / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert "wandb sync" in proc.stderr
    assert FAKE_KEY not in proc.stdout + proc.stderr


def test_mode_precedence_and_bad_modes(tmp_path, monkeypatch):
    from bincount.wandb_logger import resolve_mode

    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_mode(None) == "offline"
    (tmp_path / "netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    assert resolve_mode(None) == "online"
    assert resolve_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"  # the environment is the kill switch
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match=r"WANDB_MODE='sometimes'.*'online', 'offline', 'disabled'"):
        resolve_mode(None)


def test_config_refuses_an_api_key_key(tmp_path):
    """No ``api_key`` parameter exists, so a key typed into a config or override fails the config check."""
    from hydra import compose, initialize_config_dir

    from bincount.config import ConfigError, check_target_node

    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["logger=all", f"+logger.wandb.api_key={FAKE_KEY}"])
    assert set(cfg.logger) == {"csv", "tensorboard", "wandb"}
    with pytest.raises(ConfigError, match="has no argument 'api_key'"):
        check_target_node("logger.wandb", cfg.logger.wandb)


def test_run_names_show_what_the_sweep_varies():
    from bincount.wandb_logger import swept_overrides

    argv = ["-m", "model=tiny", "head=linear,coral", "optimizer.lr=interval(1e-4,1e-2)"]
    assert swept_overrides(["model=tiny", "head=coral", "optimizer.lr=0.0031"], argv) == ["head=coral", "optimizer.lr=0.0031"]
    assert swept_overrides(["model=tiny"], ["model=tiny"]) == ["model=tiny"]  # nothing varies: say everything
