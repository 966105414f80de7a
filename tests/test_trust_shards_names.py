"""A shard set's chunk names stay inside the shard set (issue 24, item 8).

litdata joins each ``chunks[i]["filename"]`` of an ``index.json`` to its cache directory (and to the bucket
prefix for the download), so an absolute name (``/home/me/.bashrc``) or one with ``..`` points outside it:
streaming from S3, litdata downloads the object the bucket holds for that name to that local path, or takes
an existing local file there as an already-downloaded chunk and reads it, and creates ``.cnt``/``.cnt.lock``
reference counts beside it. The shard set comes from a bucket others may write, so every name must be one
``bincount pack`` writes (``chunk-<rank>-<n>.bin``), refused by name in ``setup`` before litdata reads
anything. The first test is the control: litdata on its own does write to such a name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from s3_server import s3_client, s3_endpoint  # noqa: F401 (fixture)

from bincount.data.datamodule import BinCountDataModule
from bincount.layout import DataError
from bincount.shards.pack import pack
from bincount.shards.stream import PACKED_FORMAT, check_shard_format

pytest.importorskip("litdata")
CLASSES = {"min_count": 1, "max_count": 5}


@pytest.fixture(scope="module")
def packed(tiny_abid: Path, tmp_path_factory) -> Path:
    """A real shard set written by ``pack`` (several chunks per split), on local disk."""
    out = tmp_path_factory.mktemp("names") / "shards"
    pack(str(tiny_abid), str(out), chunk_bytes="8KB", progress=False, cache_dir=str(tmp_path_factory.mktemp("m")))
    return out


def _plant(endpoint: str, packed: Path, bucket: str, name: str) -> bytes:
    """The packed set in ``s3://BUCKET/shards``, its train index naming chunk 1 ``name``; the attacker's bytes
    (a valid chunk, so that litdata reads on without complaint) at the key litdata fetches for that name."""
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    for path in packed.rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            if path.relative_to(packed).as_posix() == "train/index.json":
                index = json.loads(body)
                index["chunks"][1]["filename"] = name
                body = json.dumps(index).encode()
            client.put_object(Bucket=bucket, Key=f"shards/{path.relative_to(packed).as_posix()}", Body=body)
    payload = (packed / "train" / "chunk-0-1.bin").read_bytes()
    client.put_object(Bucket=bucket, Key=f"shards/train/{name.lstrip('/')}", Body=payload)
    return payload


def test_control_litdata_alone_writes_a_chunk_to_an_absolute_name_outside_its_cache(packed, s3_endpoint, tmp_path):
    """Why the check exists: litdata 0.2.76 downloads the chunk to ``os.path.join(cache, name)``, i.e. ``name``."""
    from litdata import StreamingDataset

    from bincount.shards.stream import storage_options

    target = tmp_path / "outside" / "target.bin"
    target.parent.mkdir()
    payload = _plant(s3_endpoint, packed, "control", str(target))
    ds = StreamingDataset("s3://control/shards/train", cache_dir=str(tmp_path / "cache"), max_cache_size="1GB",
                          storage_options=storage_options({"endpoint_url": s3_endpoint}))
    assert len(list(ds)) > 0
    assert target.read_bytes() == payload  # the bucket chose a file on this machine and wrote it


@pytest.mark.parametrize("kind", ["absolute", "absolute-existing", "dotdot"])
def test_a_chunk_name_outside_the_shard_set_is_refused_at_setup(packed, s3_endpoint, tmp_path, kind):
    target = tmp_path / "outside" / "target.bin"
    target.parent.mkdir()
    if kind == "absolute-existing":  # a local file litdata would take as cached and read as training data
        shutil.copy(packed / "train" / "chunk-0-1.bin", target)
    cache = tmp_path / "cache"  # litdata caches a split in CACHE/train/<hash>/<time>/: four levels up is tmp_path
    name = "../../../../outside/target.bin" if kind == "dotdot" else str(target)
    bucket = f"evil-{kind}"
    _plant(s3_endpoint, packed, bucket, name)
    dm = BinCountDataModule(f"s3://{bucket}", classes=CLASSES, img_size=32, batch_size=4, num_workers=0,
                            persistent_workers=False, s3={"endpoint_url": s3_endpoint},
                            reader={"mode": "shards", "shards": f"s3://{bucket}/shards", "cache_dir": str(cache)})
    dm.prepare_data()
    with pytest.raises(DataError) as refused:
        dm.setup("fit")
    message = str(refused.value)
    assert f"train/index.json: chunk 1 is named {name!r}" in message and "chunk-<rank>-<n>.bin" in message
    assert "\n" not in message
    expected = ["target.bin"] if kind == "absolute-existing" else []
    assert sorted(p.name for p in target.parent.iterdir()) == expected  # nothing written, no .cnt/.cnt.lock
    assert not list(cache.rglob("chunk-*")) if cache.exists() else True  # no chunk was fetched at all


def _index(*names) -> dict:
    spec = json.dumps([1, {"type": "builtins.dict", "context": json.dumps(["id", "index", "count", "label", "image"])}])
    return {"chunks": [{"filename": n, "chunk_bytes": 1, "chunk_size": 1, "dim": None} for n in names],
            "config": {**PACKED_FORMAT, "data_spec": spec}}


@pytest.mark.parametrize("name", [
    "/etc/passwd", "../chunk-0-0.bin", "sub/chunk-0-0.bin", "chunk-0-0.bin/../../x.bin", "..\\chunk-0-0.bin",
    "chunk-0-0.bin\0", "chunk-0-0.bin\n", "C:\\x.bin", "chunk-0-0.zstd.bin", "x.bin", "", 7, None,
])
def test_every_name_but_packs_own_is_refused_by_name(name):
    check_shard_format(_index("chunk-0-0.bin", "chunk-12-345.bin"), "x/index.json")  # what pack writes
    with pytest.raises(DataError, match=r"x/index.json: chunk 1 is named .*; `bincount pack` writes"):
        check_shard_format(_index("chunk-0-0.bin", name), "x/index.json")


def test_a_chunk_name_used_twice_or_a_chunk_that_is_not_a_record_is_refused():
    with pytest.raises(DataError, match=r"chunk 1 is named 'chunk-0-0.bin' again"):
        check_shard_format(_index("chunk-0-0.bin", "chunk-0-0.bin"), "x/index.json")
    broken = _index("chunk-0-0.bin")
    broken["chunks"].append("chunk-0-1.bin")
    with pytest.raises(DataError, match=r"chunk 1 is not a record with a filename"):
        check_shard_format(broken, "x/index.json")
