"""``bincount pack`` and local shard streaming: raw bytes, global shuffle, bad input, cache budget, config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bincount.cli import main as cli_main
from bincount.data.datamodule import BinCountDataModule
from bincount.layout import DataError
from bincount.manifest import ClassRange
from bincount.shards.pack import pack
from bincount.shards.stream import ReaderConfig, cache_budgets, parse_size, resolve_mode

pytest.importorskip("litdata")


@pytest.fixture(scope="module")
def packed(tiny_abid: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "shards"
    cache = tmp_path_factory.mktemp("manifests")
    assert cli_main(["pack", str(tiny_abid), "--out", str(out), "--chunk-bytes", "8KB", "--cache-dir", str(cache),
                     "--no-progress", "--workers", "4"]) == 0
    return out


def _items(split_dir: Path) -> list[dict]:
    from litdata import StreamingDataset

    ds = StreamingDataset(str(split_dir))
    return [ds[i] for i in range(len(ds))]


def test_pack_stores_raw_jpeg_bytes_shuffled_globally_with_manifest(packed, tiny_abid):
    info = json.loads((packed / "pack.json").read_text())
    rows = list(csv.DictReader(open(packed / "manifest.csv")))
    assert info["splits"] == {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert sum(info["splits"].values()) == 60 - 8  # TINY_COUNTS has 8 zeros below min_count=1
    train = _items(packed / "train")
    assert [t["id"] for t in train] == [r["id"] for r in rows if r["split"] == "train"]
    assert [t["index"] for t in train] == list(range(len(train)))
    for item in train:  # byte-identical to the source file: never re-encoded
        assert item["image"] == (tiny_abid / "bin-images" / f"{item['id']}.jpg").read_bytes()
    ids = [t["id"] for t in train]
    assert ids != sorted(ids)  # shuffled across the whole split, not within chunks only
    assert len(list((packed / "train").glob("chunk-*.bin"))) > 3
    first_chunk_ids = {t["id"] for t in train[:5]}
    assert max(int(i) for i in first_chunk_ids) - min(int(i) for i in first_chunk_ids) > 10


def test_pack_skips_and_reports_or_fails_on_bad_images(tiny_abid_copy, tmp_path):
    (tiny_abid_copy / "bin-images" / "00003.jpg").write_bytes(
        (tiny_abid_copy / "bin-images" / "00003.jpg").read_bytes()[:200])  # truncated
    (tiny_abid_copy / "bin-images" / "00004.jpg").unlink()
    info = pack(str(tiny_abid_copy), str(tmp_path / "out"), chunk_bytes="8KB", cache_dir=str(tmp_path / "m"),
                progress=False)
    bad = dict(info["report"]["pack_bad_images"]) | {i: "missing" for i in info["report"]["images_missing"]}
    assert "00003" in bad and "truncated" in bad["00003"]
    assert "00004" in bad  # missing at manifest time: reported by the manifest, not packed
    rows = list(csv.DictReader(open(tmp_path / "out" / "manifest.csv")))
    assert {"00003", "00004"}.isdisjoint(r["id"] for r in rows)
    with pytest.raises(DataError, match="00003.jpg: corrupt or truncated"):
        (tiny_abid_copy / "bin-images" / "00004.jpg").write_bytes((tiny_abid_copy / "bin-images" / "00005.jpg").read_bytes())
        pack(str(tiny_abid_copy), str(tmp_path / "out2"), cache_dir=str(tmp_path / "m2"), bad_input="fail",
             progress=False)


def test_pack_refuses_to_overwrite_and_bad_arguments(packed, tiny_abid, capsys):
    assert cli_main(["pack", str(tiny_abid), "--out", str(packed), "--no-progress"]) == 1  # the world: exit 1
    assert "already has shards" in capsys.readouterr().err
    assert cli_main(["pack", str(tiny_abid), "--bad-input", "maybe"]) == 2  # a usage mistake: exit 2
    assert "valid choices" in capsys.readouterr().err
    assert cli_main(["pack", str(tiny_abid), "--split", "0.8,x"]) == 2
    assert "--split '0.8,x'" in capsys.readouterr().err
    assert cli_main(["pack", str(tiny_abid), "--overflow", "wrap"]) == 2
    assert "wrap" in capsys.readouterr().err
    assert cli_main(["pack", "/nonexistent/abid"]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_reader_config_errors_name_the_choices():
    with pytest.raises(DataError, match=r"valid choices: \['auto', 'files', 'objects', 'shards'\]"):
        ReaderConfig.from_mapping({"mode": "tar"})
    with pytest.raises(DataError, match="valid:"):
        ReaderConfig.from_mapping({"cache_size": "1GB"})
    with pytest.raises(DataError, match="not a size"):
        ReaderConfig.from_mapping({"cache_limit": "lots"})
    assert parse_size("1.5GB") == 1_500_000_000 and parse_size("2MiB") == 2 * 2**20
    assert resolve_mode("s3://b/p", "auto") == "shards" and resolve_mode("/data", "auto") == "files"
    with pytest.raises(DataError, match="reader=shards"):
        resolve_mode("s3://b/p", "files")


def test_cache_too_small_is_a_config_error_with_the_arithmetic():
    chunks = {"train": [8_000_000] * 10, "val": [1_000_000]}
    with pytest.raises(DataError, match=r"processes \(2\) x workers \(4\) x \(max_pre_download \(2\) \+ 1\)"):
        cache_budgets(100_000_000, chunks, workers=4, max_pre_download=2, processes=2)
    budgets = cache_budgets(300_000_000, chunks, workers=4, max_pre_download=2, processes=2)
    assert sum(budgets.values()) <= 300_000_000 and budgets["train"] >= 2 * 4 * 3 * 8_000_000


def _datamodule(root: Path, **reader) -> BinCountDataModule:
    return BinCountDataModule(str(root), classes={"min_count": 1, "max_count": 5}, img_size=32, batch_size=8,
                              num_workers=0, persistent_workers=False, reader={"mode": "shards", **reader})


def test_datamodule_streams_local_shards_like_files(packed, tiny_abid):
    dm = _datamodule(tiny_abid, shards=str(packed))
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["label"].dtype.is_floating_point is False
    assert dm.class_counts("train") == dm.manifest.class_counts("train")
    ids = [i for b in dm.val_dataloader() for i in b["id"]]
    assert sorted(ids) == sorted(dm.split_ids("val"))


def test_datamodule_refuses_missing_pack_and_other_class_range(packed, tiny_abid, tmp_path):
    with pytest.raises(DataError, match="bincount pack"):
        _datamodule(tmp_path).prepare_data()
    dm = BinCountDataModule(str(tiny_abid), classes={"min_count": 0, "max_count": 5}, reader={"mode": "shards", "shards": str(packed)})
    with pytest.raises(DataError, match="packed with classes"):
        dm.prepare_data()
    with pytest.raises(DataError, match="cache_limit"):
        dm = _datamodule(tiny_abid, shards=str(packed), cache_limit="10KB")
        dm.setup("fit")
    assert ClassRange() == ClassRange(1, 5, "clip")


def test_pack_with_empty_splits_writes_only_the_train_split(tiny_abid, tmp_path):
    info = pack(str(tiny_abid), str(tmp_path / "out"), fractions=(1.0, 0.0, 0.0), cache_dir=str(tmp_path / "m"),
                progress=False)
    assert info["splits"] == {"train": 52, "val": 0, "test": 0}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.csv", "pack.json", "train"]


def test_a_corrupt_packed_image_follows_the_skip_fail_policy(tiny_abid):
    from bincount.shards.stream import ShardSample

    good = (tiny_abid / "bin-images" / "00001.jpg").read_bytes()
    item = {"id": "00001", "index": 7, "label": 0, "count": 1, "image": good[:150]}
    skipped = ShardSample(None, "skip")(item)
    assert set(skipped) == {"bad", "index"} and skipped["index"] == 7
    bad = skipped["bad"]
    assert bad[0] == "00001" and "bin-images/00001.jpg" in bad[1]
    with pytest.raises(DataError, match=r"00001.jpg \(packed\).*bad_input='fail'"):
        ShardSample(None, "fail")(item)
    sample = ShardSample(None, "skip")({**item, "image": good})
    assert sample["image"].shape[0] == 3 and sample["index"] == 7 and sample["id"] == "00001"
