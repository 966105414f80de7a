"""Stores and the S3 read path against a real ``moto_server``: keys, manifest, per-object dataset."""

from __future__ import annotations

import pickle

import pytest
from fault_proxy import FaultProxy
from s3_server import s3_client, s3_endpoint, tiny_bucket  # noqa: F401

from conftest import TINY_COUNTS
from bincount.data.dataset import BinImageDataset
from bincount.layout import DataError
from bincount.manifest import ClassRange, build_manifest
from bincount.samples import collate_skipping_bad
from bincount.s3.keys import UnsafeKeyError, check_relative_key, safe_local_path
from bincount.s3.store import LocalStore, S3ReadError, S3Store, open_store


@pytest.mark.parametrize("key", ["../x.jpg", "/etc/passwd", "bin-images/../../x.jpg", "bin-images\\x.jpg",
                                 "other/00001.jpg", "bin-images/a/b.jpg", "bin-images//x.jpg", "", "bin-images/.x.jpg"])
def test_unsafe_keys_refused(key, tmp_path):
    with pytest.raises(UnsafeKeyError):
        check_relative_key(key)
    with pytest.raises(UnsafeKeyError):
        LocalStore(tmp_path).write(key, b"x")
    assert not any(tmp_path.parent.rglob("x.jpg"))


def test_symlink_escape_refused(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "target" / "metadata").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafeKeyError, match="outside the target"):
        safe_local_path(tmp_path / "target", "metadata/00001.json")


def test_open_store_picks_by_scheme(tmp_path):
    assert isinstance(open_store(tmp_path), LocalStore)
    store = open_store("s3://b/p", {"endpoint_url": "http://127.0.0.1:1"})
    assert isinstance(store, S3Store) and store.url("metadata/1.json") == "s3://b/p/metadata/1.json"


def test_s3_store_lists_reads_and_pickles(tiny_bucket):
    store = open_store(tiny_bucket.url, {"endpoint_url": tiny_bucket.endpoint})
    listing = store.list("metadata")
    assert sorted(listing) == [f"{i:05d}.json" for i in range(1, 61)]
    assert store.stat("metadata/00001.json").size == listing["00001.json"].size
    assert store.stat("metadata/99999.json") is None
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read("metadata/00001.json") == store.read("metadata/00001.json")
    with pytest.raises(FileNotFoundError):
        store.read("bin-images/99999.jpg")
    with pytest.raises(S3ReadError, match="NoSuchBucket") as err:
        open_store("s3://no-such-bucket/x", {"endpoint_url": tiny_bucket.endpoint}).list("metadata")
    assert "s3://no-such-bucket/x" in str(err.value)


def test_manifest_from_s3_matches_local_and_is_cached(tiny_bucket, tiny_abid, tmp_path):
    store = open_store(tiny_bucket.url, {"endpoint_url": tiny_bucket.endpoint})
    classes = ClassRange(0, 5)
    remote = build_manifest(store, classes, cache_dir=tmp_path / "s3", progress=False)
    local = build_manifest(tiny_abid, classes, cache_dir=tmp_path / "local", progress=False)
    assert [vars(r) for r in remote.rows] == [vars(r) for r in local.rows]
    assert remote.report["used"] == len(TINY_COUNTS)
    again = build_manifest(open_store(tiny_bucket.url, {"endpoint_url": tiny_bucket.endpoint}), classes,
                           cache_dir=tmp_path / "s3", progress=False)
    assert again.path == remote.path


def test_per_object_dataset_batches_and_bad_objects(tiny_bucket, tmp_path):
    client = s3_client(tiny_bucket.endpoint)
    client.create_bucket(Bucket="damaged")
    for key in ("metadata/00001.json", "metadata/00002.json", "metadata/00003.json", "bin-images/00001.jpg"):
        client.put_object(Bucket="damaged", Key=key, Body=client.get_object(Bucket="tiny-bins", Key=f"abid/{key}")["Body"].read())
    client.put_object(Bucket="damaged", Key="bin-images/00002.jpg", Body=b"\xff\xd8\xffnot a jpeg")
    # 00003.jpg missing: the manifest skips it and reports it
    store = open_store("s3://damaged", {"endpoint_url": tiny_bucket.endpoint})
    manifest = build_manifest(store, ClassRange(0, 5), split_fractions=(1, 0, 0), cache_dir=tmp_path, progress=False)
    assert manifest.report["images_missing"] == ["00003"]
    dataset = BinImageDataset("s3://damaged", manifest.rows, reader=store)
    batch = collate_skipping_bad(dataset.__getitems__([0, 1]))
    assert batch["id"] == ["00001"] and batch["image"].shape[0] == 1
    assert [b[0] for b in batch["bad"]] == ["00002"]
    client.delete_object(Bucket="damaged", Key="bin-images/00001.jpg")  # vanished after the manifest
    assert "image missing" in dataset.__getitems__([0])[0]["bad"][1]
    strict = BinImageDataset("s3://damaged", manifest.rows, reader=store, bad_input="fail")
    with pytest.raises(DataError, match="s3://damaged/bin-images/00002.jpg"):
        strict.__getitems__([1])


def test_read_many_keeps_requests_in_flight(tiny_bucket):
    """Per-object reads are latency-bound: 16 GETs at 0.3 s each take about 0.3 s with 16 threads, not 4.8 s."""
    import time

    keys = [f"bin-images/{i}.jpg" for i in tiny_bucket.synthetic_ids[:16]]
    with FaultProxy(tiny_bucket.endpoint, delay=1.0, delay_s=0.3) as proxy:
        store = open_store(tiny_bucket.url, {"endpoint_url": proxy.url, "max_pool_connections": 16})
        store.read(keys[0])  # the client's first request (and its connection) out of the timing
        start = time.perf_counter()
        results = store.read_many(keys)
        elapsed = time.perf_counter() - start
    assert all(isinstance(r, bytes) and r[:3] == b"\xff\xd8\xff" for r in results)
    assert elapsed < 16 * 0.3 / 3, f"{elapsed:.2f} s: the GETs ran one after another"
