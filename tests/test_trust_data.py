"""Untrusted data cannot run code or exhaust memory (issue 14: shards with pickles, image bombs, size caps).

Each test plants the attack in the form it would arrive (a shard index in a shared bucket, a tiny file
declaring 30000x30000 pixels, an oversized metadata object) and shows it refused by name, with nothing
executed and the good data around it still read.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from s3_server import s3_client, s3_endpoint  # noqa: F401

from bincount.data.dataset import BinImageDataset
from bincount.layout import MAX_METADATA_BYTES, DataError, TooLarge
from bincount.manifest import ClassRange, ManifestRow, build_manifest
from bincount.s3.store import open_store
from bincount.samples import BadImage, check_image_header, decode_image_bytes, jpeg_size

BOMB_SIDE = 30000


def jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    """A real 16x16 JPEG whose frame header is rewritten to declare ``side`` x ``side`` pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):  # walk to the start-of-frame segment
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    data[pos + 5:pos + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A PNG header declaring ``side`` x ``side`` RGB pixels, followed by a few bytes of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("make", [jpeg_bomb, png_bomb])
def test_image_bombs_are_refused_from_the_header(make):
    data = make()
    assert len(data) < 2000
    for check in (decode_image_bytes, check_image_header):
        with pytest.raises(BadImage, match=r"image too large: .*(900,000,000|900000000) pixels"):
            check(data)
        with pytest.raises(BadImage, match=r"too large: 3000x3000 = 9,000,000 pixels declared, above the limit of 1,000,000"):
            check(make(3000), max_pixels=1_000_000)  # below PIL's own guard: only ours refuses it


def test_jpeg_size_reads_the_frame_header():
    buf = io.BytesIO()
    Image.new("RGB", (40, 24)).save(buf, "JPEG")
    assert jpeg_size(buf.getvalue()) == (40, 24)
    assert jpeg_size(jpeg_bomb(1234)) == (1234, 1234)


def test_a_bomb_in_a_dataset_follows_skip_and_fail(tiny_abid_copy):
    (tiny_abid_copy / "bin-images" / "00002.jpg").write_bytes(jpeg_bomb())
    rows = [ManifestRow("00001", "bin-images/00001.jpg", 1, 0, "train"),
            ManifestRow("00002", "bin-images/00002.jpg", 2, 1, "train")]
    ds = BinImageDataset(tiny_abid_copy, rows, bad_input="skip")
    assert ds[0]["image"].shape[0] == 3
    assert ds[1]["bad"][0] == "00002" and "too large: 30000x30000" in ds[1]["bad"][1]
    with pytest.raises(DataError, match=r"00002.jpg: image too large.*data.max_pixels"):
        BinImageDataset(tiny_abid_copy, rows, bad_input="fail")[1]
    small_limit = BinImageDataset(tiny_abid_copy, rows[:1], bad_input="skip", max_pixels=100)
    assert "too large: 32x24" in small_limit[0]["bad"][1]  # the limit is the config's, not a constant


def test_pack_never_writes_a_bomb_into_the_shards(tiny_abid_copy, tmp_path):
    pytest.importorskip("litdata")
    from bincount.shards.pack import pack

    (tiny_abid_copy / "bin-images" / "00002.jpg").write_bytes(jpeg_bomb())
    info = pack(str(tiny_abid_copy), str(tmp_path / "out"), cache_dir=str(tmp_path / "m"), progress=False)
    bad = dict(info["report"]["pack_bad_images"])
    assert list(bad) == ["00002"] and "too large: 30000x30000" in bad["00002"]
    with pytest.raises(DataError, match="00002.jpg: image too large"):
        pack(str(tiny_abid_copy), str(tmp_path / "out2"), cache_dir=str(tmp_path / "m"), progress=False,
             bad_input="fail")


class Payload:
    """Unpickling this creates ``marker``: the proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_shards_declaring_pickle_are_refused_before_any_chunk_is_read(tiny_abid, tmp_path):
    pytest.importorskip("litdata")
    from litdata.streaming.writer import BinaryWriter

    from bincount.data.datamodule import BinCountDataModule
    from bincount.shards.pack import pack

    out = tmp_path / "shards"
    pack(str(tiny_abid), str(out), cache_dir=str(tmp_path / "m"), progress=False)
    marker = tmp_path / "pwned"
    writer = BinaryWriter(str(tmp_path / "evil"), chunk_bytes="1MB")
    writer.add_item(0, {"id": "00001", "index": 0, "count": 1, "label": 0, "image": Payload(marker)})
    writer.done()
    writer.merge()
    assert json.loads((tmp_path / "evil" / "index.json").read_text())["config"]["data_format"][-1] == "pickle"
    for f in (out / "train").iterdir():
        f.unlink()
    for f in (tmp_path / "evil").iterdir():
        f.rename(out / "train" / f.name)

    dm = BinCountDataModule(str(tiny_abid), classes={"min_count": 1, "max_count": 5}, img_size=32, batch_size=4,
                            num_workers=0, persistent_workers=False, reader={"mode": "shards", "shards": str(out)})
    dm.prepare_data()
    with pytest.raises(DataError, match=r"train/index.json: data_format=\[.*'pickle'\].*refusing"):
        dm.setup("fit")
    assert not marker.exists()


def test_the_shard_check_names_each_unexpected_setting():
    from bincount.shards.stream import PACKED_FORMAT, check_shard_format

    good = {"chunks": [], "config": {**PACKED_FORMAT, "data_spec": json.dumps(
        [1, {"type": "builtins.dict", "context": json.dumps(["id", "index", "count", "label", "image"])}])}}
    check_shard_format(good, "x/index.json")
    for key, bad in (("compression", "zstd"), ("encryption", "fernet"), ("item_loader", "TokensLoader")):
        with pytest.raises(DataError, match=f"{key}="):
            check_shard_format({**good, "config": {**good["config"], key: bad}}, "x/index.json")
    spec = json.dumps([1, {"context": json.dumps(["id", "image", "extra"])}])
    with pytest.raises(DataError, match="fields"):
        check_shard_format({**good, "config": {**good["config"], "data_spec": spec}}, "x/index.json")
    with pytest.raises(DataError, match="not a litdata index"):
        check_shard_format([], "x/index.json")


def test_oversized_metadata_is_bad_input_not_a_read(tiny_abid_copy, tmp_path):
    big = tiny_abid_copy / "metadata" / "00003.json"
    big.write_text(json.dumps({"EXPECTED_QUANTITY": 3, "pad": "x" * MAX_METADATA_BYTES}))
    manifest = build_manifest(tiny_abid_copy, ClassRange(1, 5), cache_dir=tmp_path / "c", progress=False)
    reasons = dict(manifest.report["bad_metadata"])
    assert list(reasons) == ["00003"] and "above the limit of 1,048,576 bytes" in reasons["00003"]
    assert "00004" in {r.id for r in manifest.rows}


def test_s3_reads_check_the_size_before_the_body(s3_endpoint):
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="sizes")
    client.put_object(Bucket="sizes", Key="abid/metadata/00001.json", Body=b"{" + b" " * MAX_METADATA_BYTES + b"}")
    client.put_object(Bucket="sizes", Key="abid/bin-images/00001.jpg", Body=b"\xff" * 5000)
    store = open_store("s3://sizes/abid", {"endpoint_url": s3_endpoint})
    with pytest.raises(TooLarge, match=r"s3://sizes/abid/metadata/00001.json is 1,048,578 bytes"):
        store.read("metadata/00001.json")
    assert len(store.read("bin-images/00001.jpg")) == 5000
    with pytest.raises(TooLarge, match="5,000 bytes, above the limit of 4,096"):
        store.read("bin-images/00001.jpg", max_bytes=4096)
    results = store.read_many(["bin-images/00001.jpg", "metadata/00001.json"])
    assert len(results[0]) == 5000 and isinstance(results[1], TooLarge)


@pytest.mark.parametrize("name", ["pack.json", "manifest.csv", "train/index.json"])
def test_a_shard_sets_own_files_are_size_checked_before_reading(tiny_abid, tmp_path, monkeypatch, name):
    """A pack.json, manifest.csv or index.json above its limit is refused from its size, unread."""
    pytest.importorskip("litdata")
    from bincount.shards import stream
    from bincount.shards.pack import pack

    out = tmp_path / "shards"
    pack(str(tiny_abid), str(out), cache_dir=str(tmp_path / "m"), progress=False)
    limit = (out / name).stat().st_size - 1
    monkeypatch.setitem(stream.MAX_SHARD_FILE_BYTES, name.rsplit("/", 1)[-1], limit)
    shards = stream.ShardStreams(str(out), stream.ReaderConfig.from_mapping({"mode": "shards"}), ClassRange(1, 5))
    with pytest.raises(TooLarge, match=rf"{name} is .* bytes, above the limit of {limit:,}"):
        shards.manifest() if name == "manifest.csv" else shards.chunk_sizes("train") if "index" in name else shards.info()
