"""Shards on a real S3 server (``moto_server`` on loopback): pack to s3://, stream, cache, faults, train.py.

One module-scoped pack of the 60 tiny bins to ``s3://shards/abid/shards`` serves every test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bincount.cli import main as cli_main
from bincount.data.datamodule import BinCountDataModule
from bincount.shards.pack import pack
from fault_proxy import FaultProxy
from s3_server import public_bucket, s3_client, s3_endpoint, tiny_bucket  # noqa: F401 (fixtures)

pytest.importorskip("litdata")
ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"min_count": 1, "max_count": 5}


@pytest.fixture(scope="module")
def shards(s3_endpoint, tiny_abid, tmp_path_factory) -> dict:
    s3_client(s3_endpoint).create_bucket(Bucket="shards")
    info = pack(str(tiny_abid), "s3://shards/abid/shards", chunk_bytes="8KB", progress=False,
                cache_dir=str(tmp_path_factory.mktemp("m")), s3={"endpoint_url": s3_endpoint})
    return info


def _dm(endpoint: str | None, cache: Path, batch_size: int = 8, workers: int = 2, **reader) -> BinCountDataModule:
    dm = BinCountDataModule("s3://shards/abid", classes=CLASSES, img_size=32, batch_size=batch_size,
                            num_workers=workers, persistent_workers=False,
                            reader={"mode": "auto", "cache_dir": str(cache), **reader},
                            **({"s3": {"endpoint_url": endpoint}} if endpoint else {}))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _divisor(n: int, at_most: int = 8) -> int:
    return next(b for b in range(at_most, 0, -1) if n % b == 0)


def _epoch_ids(dm: BinCountDataModule, loader=None) -> list[str]:
    return [i for batch in (loader or dm.train_dataloader()) for i in batch["id"]]


@pytest.mark.slow
def test_stream_from_s3_caches_so_the_second_epoch_reads_local_disk(shards, s3_endpoint, tmp_path):
    n = shards["splits"]["train"]
    dm = _dm(s3_endpoint, tmp_path / "cache", batch_size=_divisor(n))
    assert dm.read_mode == "shards"  # reader=auto picks shards for s3:// roots
    loader = dm.train_dataloader()
    first = _epoch_ids(dm, loader)
    assert sorted(first) == sorted(dm.split_ids("train")) and len(first) == n  # every sample exactly once
    chunks = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "cache").rglob("chunk-*.bin")}
    assert len(chunks) == len(json.loads(_get("s3://shards/abid/shards/train/index.json", s3_endpoint))["chunks"])
    second = _epoch_ids(dm, loader)
    assert sorted(second) == sorted(first) and second != first  # reshuffled each epoch
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "cache").rglob("chunk-*.bin")}
    assert after == chunks  # nothing downloaded again: epoch 2 read the cache
    assert sorted(i for b in dm.val_dataloader() for i in b["id"]) == sorted(dm.split_ids("val"))


@pytest.mark.slow
def test_ddp_ranks_keep_cached_chunks_for_the_next_epoch(shards, s3_endpoint, tmp_path):
    """2 simulated ranks x 2 workers sharing one cache (the padded assignment): epoch 2 downloads nothing."""
    from litdata.utilities.env import _DistributedEnv, _WorkerEnv

    from bincount.manifest import ClassRange
    from bincount.shards.stream import ReaderConfig, ShardStreams

    streams = ShardStreams("s3://shards/abid/shards", ReaderConfig(cache_dir=str(tmp_path / "cache")),
                           ClassRange(**CLASSES), s3={"endpoint_url": s3_endpoint})
    budget = streams.budgets(workers=2, processes=2)["train"]

    def epoch(number: int) -> list[str]:
        ids = []
        for rank in range(2):
            for worker in range(2):
                ds = streams.dataset("train", lambda item: item["id"], shuffle=True, seed=3, budget=budget)
                ds.distributed_env, ds._forced_worker_env = _DistributedEnv(2, rank, 1), _WorkerEnv(2, worker)
                ds.set_batch_size(4), ds.set_num_workers(2), ds.set_epoch(number)
                ids += list(ds)
        return ids

    first = epoch(1)
    assert set(first) == {row.id for row in streams.manifest().split("train")}
    chunks = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "cache").rglob("chunk-*.bin")}
    assert chunks
    second = epoch(2)
    assert set(second) == set(first) and second != first
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "cache").rglob("chunk-*.bin")}
    assert after == chunks


def _get(url: str, endpoint: str) -> bytes:
    from bincount.shards.s3io import read_bytes

    return read_bytes(url, {"endpoint_url": endpoint})


@pytest.mark.slow
def test_faults_are_retried_and_every_sample_is_seen_once(shards, s3_endpoint, tmp_path, monkeypatch):
    n = shards["splits"]["train"]
    with FaultProxy(s3_endpoint, slowdown=0.2, reset=0.1, body_reset=0.1, seed=3) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)  # the standard variable, no config
        dm = _dm(None, tmp_path / "cache", batch_size=_divisor(n))
        ids = _epoch_ids(dm)
    assert sorted(ids) == sorted(dm.split_ids("train"))
    assert proxy.counts["slowdown"] + proxy.counts["reset"] + proxy.counts["body_reset"] >= 3, proxy.counts


def test_cache_too_small_for_the_loaders_fails_before_streaming(shards, s3_endpoint, tmp_path):
    with pytest.raises(ValueError, match="cache_limit=.* is too small"):
        _dm(s3_endpoint, tmp_path / "cache", workers=2, cache_limit="20KB")
    assert not list((tmp_path / "cache").rglob("chunk-*.bin"))


@pytest.mark.slow
def test_pack_from_an_s3_dataset_with_the_cli(public_bucket, s3_endpoint, tmp_path, capsys):
    """The aft-vbi-pds look-alike (synthetic bins, plus the real sample with BINCOUNT_ABID_SAMPLE) -> shards."""
    out = "s3://shards/public"
    assert cli_main(["pack", public_bucket.url, "--out", out, "--min-count", "0", "--max-count", "5",
                     "--endpoint-url", s3_endpoint, "--cache-dir", str(tmp_path / "m"), "--no-progress"]) == 0, \
        capsys.readouterr().err
    info = json.loads(_get(f"{out}/pack.json", s3_endpoint))
    assert sum(info["splits"].values()) == len(public_bucket.synthetic_ids) + len(public_bucket.sample_ids)
    dm = BinCountDataModule("s3://shards/public", classes={"min_count": 0, "max_count": 5}, img_size=32, batch_size=16,
                            num_workers=0, reader={"mode": "shards", "shards": out, "cache_dir": str(tmp_path / "c")},
                            s3={"endpoint_url": s3_endpoint})
    dm.prepare_data()
    dm.setup("fit")
    ids = [i for b in dm.val_dataloader() for i in b["id"]]
    assert sorted(ids) == sorted(dm.split_ids("val"))


@pytest.mark.slow
def test_train_py_trains_one_epoch_from_s3_shards(shards, s3_endpoint, tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3_endpoint, "BINCOUNT_LOG_DIR": str(tmp_path / "logs"),
           "BINCOUNT_DATA_DIR": str(tmp_path / "data"), "BINCOUNT_CACHE_DIR": str(tmp_path / "cache"),
           "HYDRA_FULL_ERROR": "1"}
    args = ["model=tiny", "data.root=s3://shards/abid", "data.synthetic=null", "reader=shards", "data.img_size=32",
            "data.batch_size=8", "data.num_workers=1", "trainer.max_epochs=1", "logger=csv", "callbacks.progress_bar=null",
            "callbacks.model_summary=null", "report=false"]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = next((tmp_path / "logs" / "train" / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 1 and "test/acc" in metrics
    assert metrics["data_quality"]["splits"] == shards["splits"]
    assert list((tmp_path / "cache" / "shards").rglob("chunk-*.bin"))  # streamed through the cache
    assert os.environ.get("AWS_SECRET_ACCESS_KEY", "unset") not in proc.stdout + proc.stderr
    assert os.environ.get("AWS_SECRET_ACCESS_KEY", "unset") not in (run / ".hydra" / "config.yaml").read_text()


@pytest.mark.slow
def test_cache_at_the_checked_minimum_streams_an_epoch_without_hanging(shards, s3_endpoint, tmp_path):
    """The up-front check is not too lax: a limit exactly at the minimum still streams (evicting as it goes)."""
    probe = _dm(s3_endpoint, tmp_path / "probe", workers=2)
    need = sum(1 * 2 * 3 * max(probe.shards.chunk_sizes(s)) for s in probe.datasets)
    n = shards["splits"]["train"]
    dm = _dm(s3_endpoint, tmp_path / "cache", batch_size=_divisor(n), workers=2, cache_limit=need)
    assert sorted(_epoch_ids(dm)) == sorted(dm.split_ids("train"))
