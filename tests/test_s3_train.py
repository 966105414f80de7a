"""``python train.py data.root=s3://...`` in per-object mode against ``moto_server`` behind the fault proxy.

One run (module scope) trains a tiny model for one epoch from a bucket holding 60 bins, one of them
corrupt and one image missing, with 503 SlowDown, connection resets (before and during bodies) and
delays injected. Every training image must be served exactly once, bad objects must be counted in
``metrics.json``, and the fake credentials in the environment must appear nowhere in the output.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from s3_server import FAKE_KEY_ID, FAKE_SECRET, s3_client, s3_endpoint, upload_abid  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8
pytestmark = pytest.mark.slow  # every test reads the module's training run


@pytest.fixture(scope="module")
def s3_run(s3_endpoint, tiny_abid, tmp_path_factory):
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="train-bins")
    upload_abid(s3_endpoint, "train-bins", tiny_abid, prefix="abid")
    client.put_object(Bucket="train-bins", Key="abid/bin-images/00007.jpg", Body=b"\xff\xd8\xff\xe0 truncated")
    client.delete_object(Bucket="train-bins", Key="abid/bin-images/00008.jpg")
    tmp = tmp_path_factory.mktemp("s3_train")
    env = {**os.environ, "BINCOUNT_DATA_DIR": str(tmp / "data"), "BINCOUNT_LOG_DIR": str(tmp / "logs"),
           "BINCOUNT_CACHE_DIR": str(tmp / "cache"), "HYDRA_FULL_ERROR": "1"}
    assert env["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET
    with FaultProxy(s3_endpoint, slowdown=0.08, reset=0.04, body_reset=0.04, delay=0.1, seed=7) as proxy:
        args = ["data=abid_s3", "data.root=s3://train-bins/abid", "reader=objects", f"data.s3.endpoint_url={proxy.url}",
                "data.s3.max_attempts=10", "data.s3.read_timeout=10", "data.classes.min_count=0",
                "data.classes.max_count=5", "model=tiny", "data.img_size=32", f"data.batch_size={BATCH}",
                "data.num_workers=2", "data.persistent_workers=false", "data.pin_memory=false", "trainer=cpu",
                "trainer.max_epochs=1", "logger=csv", "callbacks.progress_bar=null", "callbacks.model_summary=null",
                "report=false"]
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (run,) = (tmp / "logs" / "train" / "runs").iterdir()
    return proc, run, proxy, tmp


def train_keys(tmp: Path) -> list[str]:
    (manifest,) = (tmp / "cache" / "manifests").glob("manifest-*.csv")
    with open(manifest, newline="") as f:
        return [r["image"] for r in csv.DictReader(f) if r["split"] == "train"]


def test_trains_from_s3_and_reads_every_train_image_exactly_once(s3_run):
    proc, run, proxy, tmp = s3_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 1 and "test/acc" in metrics
    assert proxy.counts["slowdown"] and proxy.counts["reset"] and proxy.counts["body_reset"], proxy.counts
    keys = train_keys(tmp)
    served = [proxy.served[f"/train-bins/abid/{k}"] for k in keys]
    assert max(served) == 1, "an image was read twice in one epoch"
    n = len(keys)
    lone = n > BATCH and n % BATCH == 1  # only a last batch of one sample is dropped (BatchNorm)
    assert sum(served) == n - lone, "every training image is read once"


def test_missing_and_corrupt_objects_are_counted(s3_run):
    proc, run, proxy, tmp = s3_run
    quality = json.loads((run / "metrics.json").read_text())["data_quality"]
    assert quality["images_missing"] == ["00008"] and quality["images_missing_count"] == 1
    skipped = {stage: ids for stage, ids in quality["skipped_samples"].items()}
    assert [list(ids) for ids in skipped.values()] == [["00007"]]
    assert "00007" in proc.stdout + proc.stderr


def test_credentials_appear_nowhere(s3_run):
    proc, run, proxy, tmp = s3_run
    texts = [proc.stdout, proc.stderr]
    texts += [p.read_text(errors="replace") for p in run.rglob("*") if p.is_file() and p.suffix != ".ckpt"]
    for text in texts:
        assert FAKE_SECRET not in text and FAKE_KEY_ID not in text
    for ckpt in run.rglob("*.ckpt"):
        data = ckpt.read_bytes()
        assert FAKE_SECRET.encode() not in data and FAKE_KEY_ID.encode() not in data
