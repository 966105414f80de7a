"""Manifest: class ranges, stratified deterministic splits, caching, file lists, bad input, path safety."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pytest

from bincount.layout import DataError, check_id, check_key, read_file_list
from bincount.manifest import ClassRange, Manifest, build_manifest
from bincount.manifest import metadata as manifest_metadata
from bincount.manifest import table as manifest_table
from bincount.manifest.metadata import read_metadata
from bincount.manifest.splits import check_fractions, split_sizes

from conftest import TINY_COUNTS


def build(root: Path, cache: Path, **kwargs) -> Manifest:
    return build_manifest(root, cache_dir=cache, progress=False, **kwargs)


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count calls to the read_metadata seam."""
    calls: Counter = Counter()

    def counting(root, id_):
        calls[id_] += 1
        return read_metadata(root, id_)

    monkeypatch.setattr(manifest_metadata, "read_metadata", counting)
    return calls


# ---------------------------------------------------------------------------------------- class range


def test_class_range_labels_and_counts():
    cr = ClassRange(1, 5, "clip")
    assert cr.num_classes == 5
    assert [cr.label(c) for c in range(8)] == [None, 0, 1, 2, 3, 4, 4, 4]
    assert [cr.count(k) for k in range(5)] == [1, 2, 3, 4, 5]
    assert ClassRange(1, 5, "drop").label(6) is None
    assert ClassRange(0, 3).label(0) == 0
    with pytest.raises(DataError, match="count 9 is above max_count=5"):
        ClassRange(1, 5, "fail").label(9)
    with pytest.raises(ValueError, match="outside 0..4"):
        cr.count(5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_count": 3, "max_count": 3}, "min_count=3, max_count=3"),
        ({"min_count": -1}, "0 <= min_count < max_count"),
        ({"overflow": "wrap"}, "overflow='wrap' is not one of clip, drop, fail"),
        ({"max_count": 5.5}, "max_count must be an integer, got 5.5"),
    ],
)
def test_class_range_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClassRange(**kwargs)


# ---------------------------------------------------------------------------------------- tiny dir


def test_build_tiny_default_range(tiny_abid, tmp_path):
    m = build(tiny_abid, tmp_path)
    counts = Counter(TINY_COUNTS)
    assert len(m.rows) == len(TINY_COUNTS) - counts[0]
    assert m.report["metadata_files"] == 60
    assert m.report["excluded_below_min"] == counts[0]
    assert m.report["clipped_above_max"] == counts[6]
    assert m.report["bad_metadata"] == [] and m.report["images_missing"] == []
    by_id = {r.id: r for r in m.rows}
    assert by_id["00003"].count == 3 and by_id["00003"].label == 2
    assert by_id["00006"].label == 4 and by_id["00006"].count == 6  # clipped, raw count kept
    assert by_id["00001"].image == "bin-images/00001.jpg"
    assert "00007" not in by_id  # count 0
    assert sum(m.report["splits"].values()) == len(m.rows)
    assert m.path.parent == tmp_path and m.path.suffix == ".csv"
    header = m.path.read_text().splitlines()[0]
    assert header == "id,image,count,label,split"


def test_drop_and_fail_above_max(tiny_abid, tmp_path):
    m = build(tiny_abid, tmp_path, class_range=ClassRange(1, 5, "drop"))
    assert m.report["excluded_above_max"] == Counter(TINY_COUNTS)[6]
    assert all(r.count <= 5 for r in m.rows)
    with pytest.raises(DataError, match=r"00006\.json.*above max_count=5"):
        build(tiny_abid, tmp_path, class_range=ClassRange(1, 5, "fail"))


def test_min_count_zero_includes_empty_bins(tiny_abid, tmp_path):
    m = build(tiny_abid, tmp_path, class_range=ClassRange(0, 6))
    assert len(m.rows) == 60 and m.report["excluded_below_min"] == 0
    assert sum(m.class_counts(s)[0] for s in ("train", "val", "test")) == Counter(TINY_COUNTS)[0]


def test_class_counts_length_and_split_name(tiny_abid, tmp_path):
    m = build(tiny_abid, tmp_path)
    assert len(m.class_counts("train")) == 5
    assert sum(sum(m.class_counts(s)) for s in ("train", "val", "test")) == len(m.rows)
    with pytest.raises(ValueError, match="'dev' is not one of train, val, test"):
        m.split("dev")


# ---------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (1, (0.8, 0.1, 0.1), [1, 0, 0]),
        (2, (0.8, 0.1, 0.1), [2, 0, 0]),
        (5, (0.8, 0.1, 0.1), [4, 1, 0]),
        (10, (0.8, 0.1, 0.1), [8, 1, 1]),
        (9, (0.5, 0.5, 0.0), [5, 4, 0]),
        (7, (0.0, 0.0, 1.0), [0, 0, 7]),
        (0, (0.8, 0.1, 0.1), [0, 0, 0]),
    ],
)
def test_split_sizes_largest_remainder(n, fractions, expected):
    assert split_sizes(n, fractions) == expected


@pytest.mark.parametrize(
    ("fractions", "message"),
    [((0.8, 0.2), "must be 3 numbers"), ((0.9, 0.2, -0.1), "non-negative"), ((0.5, 0.3, 0.1), "sum to 1")],
)
def test_fractions_validated(fractions, message):
    with pytest.raises(ValueError, match=message):
        check_fractions(fractions)


def assignment(m: Manifest) -> dict[str, str]:
    return {r.id: r.split for r in m.rows}


def test_splits_deterministic_stratified_and_seeded(tiny_abid, tmp_path):
    cr = ClassRange(0, 6)
    a = build(tiny_abid, tmp_path / "a", class_range=cr, split_fractions=(0.5, 0.25, 0.25), seed=1)
    b = build(tiny_abid, tmp_path / "b", class_range=cr, split_fractions=(0.5, 0.25, 0.25), seed=1)
    c = build(tiny_abid, tmp_path / "c", class_range=cr, split_fractions=(0.5, 0.25, 0.25), seed=2)
    assert assignment(a) == assignment(b)
    assert assignment(a) != assignment(c)
    for label, n in Counter(r.label for r in a.rows).items():
        per_split = [a.class_counts(s)[label] for s in ("train", "val", "test")]
        assert per_split == split_sizes(n, (0.5, 0.25, 0.25))


def test_zero_fraction_split_is_empty(tiny_abid, tmp_path):
    m = build(tiny_abid, tmp_path, split_fractions=(0.9, 0.1, 0.0))
    assert m.split("test") == [] and m.report["splits"]["test"] == 0
    assert len(m.split("train")) > len(m.split("val")) > 0


# ---------------------------------------------------------------------------------------- cache


def test_second_build_reads_no_metadata(tiny_abid, tmp_path, count_reads):
    first = build(tiny_abid, tmp_path)
    assert sum(count_reads.values()) == 60
    second = build(tiny_abid, tmp_path)
    assert sum(count_reads.values()) == 60  # nothing read again
    assert second.path == first.path
    assert [vars(r) for r in second.rows] == [vars(r) for r in first.rows]
    assert second.report == first.report
    assert second.class_range == first.class_range
    assert json.loads(first.path.with_suffix(".json").read_text())["report"] == first.report


def test_cache_key_follows_settings_and_data(tiny_abid_copy, tmp_path, count_reads):
    root, cache = tiny_abid_copy, tmp_path / "cache"
    base = build(root, cache)
    assert build(root, cache, seed=1).path != base.path
    assert build(root, cache, class_range=ClassRange(1, 4)).path != base.path
    assert build(root, cache, split_fractions=(0.7, 0.2, 0.1)).path != base.path
    meta = root / "metadata" / "00003.json"
    meta.write_text(json.dumps({"EXPECTED_QUANTITY": 4, "BIN_FCSKU_DATA": {}}))
    os.utime(meta, ns=(1, 1))
    changed = build(root, cache)
    assert changed.path != base.path
    assert {r.id: r.count for r in changed.rows}["00003"] == 4
    assert len(list(cache.glob("*.csv"))) == 5


def test_default_cache_dir_and_read_only_fallback(tiny_abid_copy, tmp_path, monkeypatch):
    m = build_manifest(tiny_abid_copy, progress=False)
    assert m.path.parent == tiny_abid_copy / ".bincount" / "manifests"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(manifest_table, "_writable", lambda directory: False)
    fallback = build_manifest(tiny_abid_copy, progress=False, seed=3)
    assert fallback.path.parent == tmp_path / "xdg" / "bincount" / "manifests"


def test_progress_bar_path(tiny_abid, tmp_path):
    assert len(build_manifest(tiny_abid, cache_dir=tmp_path, progress=True, workers=2).rows) > 0


def test_manifest_load_roundtrip(tiny_abid, tmp_path):
    m = build(tiny_abid, tmp_path)
    loaded = Manifest.load(m.path)
    assert [vars(r) for r in loaded.rows] == [vars(r) for r in m.rows]
    assert loaded.class_range == m.class_range


# ---------------------------------------------------------------------------------------- file list


def write_file_list(path: Path, mapping: dict[str, list[str]]) -> Path:
    path.write_text(json.dumps(mapping))
    return path


def test_file_list_selects_ids(tiny_abid, tmp_path, count_reads):
    fl = write_file_list(
        tmp_path / "file_list.json",
        {"1": ["data/metadata/00001.json", "data/metadata/00008.json"], "2": ["metadata/00002.json"],
         "3": ["data/metadata/00004.json"]},  # 00004 really has 4: reported as a mismatch
    )
    m = build(tiny_abid, tmp_path / "cache", file_list=fl)
    assert sorted(r.id for r in m.rows) == ["00001", "00002", "00004", "00008"]
    assert set(count_reads) == {"00001", "00002", "00004", "00008"}
    assert m.report["source"] == "file_list" and m.report["metadata_files"] == 4
    assert m.report["file_list_count_mismatches"] == [["00004", 3, 4]]
    fl.write_text(json.dumps({"1": ["data/metadata/00001.json"]}))
    assert build(tiny_abid, tmp_path / "cache", file_list=fl).path != m.path


def test_real_file_list_format_parses(abid_sample_dir):
    path = abid_sample_dir.parent / "file_list.json"  # the capstone list lies next to the sample
    if not path.exists():
        pytest.skip(f"{path} not present")
    ids = read_file_list(path)
    assert len(ids) == 10441 and ids["00710"] == 1 and ids["100313"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"1": ["data/../../etc/metadata/00001.json"]}, "unsafe path"),
        ({"1": ["/abs/metadata/00001.json"]}, "unsafe path"),
        ({"1": ["data/images/00001.json"]}, "not of the form"),
        ({"1": ["data/metadata/..json"]}, "unsafe or invalid image id"),
        ({"one": ["data/metadata/00001.json"]}, "key 'one' is not an integer"),
        ({"1": "data/metadata/00001.json"}, "must be a list"),
        (["data/metadata/00001.json"], "must map counts"),
    ],
)
def test_file_list_refuses_bad_entries(tmp_path, content, message):
    fl = write_file_list(tmp_path / "fl.json", content)
    with pytest.raises(DataError, match=message):
        read_file_list(fl)


# ---------------------------------------------------------------------------------------- bad input


def damage(root: Path) -> dict[str, str]:
    """Damage five bins (all with counts in 1..5) and return id -> expected reason fragment."""
    (root / "metadata" / "00001.json").write_text("{not json")
    (root / "metadata" / "00002.json").write_text(json.dumps({"BIN_FCSKU_DATA": {}}))
    (root / "metadata" / "00003.json").write_text(json.dumps({"EXPECTED_QUANTITY": -2}))
    (root / "metadata" / "00004.json").write_text(json.dumps({"EXPECTED_QUANTITY": "4"}))
    (root / "bin-images" / "00005.jpg").unlink()
    return {"00001": "malformed JSON", "00002": "no EXPECTED_QUANTITY", "00003": "-2 is negative",
            "00004": "'4' is not an integer", "00005": "image missing"}


def test_bad_input_skip_reports_and_warns(tiny_abid_copy, tmp_path, caplog):
    expected = damage(tiny_abid_copy)
    (tiny_abid_copy / "bin-images" / "09999.jpg").write_bytes(b"orphan image")
    with caplog.at_level(logging.WARNING, logger="bincount.manifest"):
        m = build(tiny_abid_copy, tmp_path)
    ids = {r.id for r in m.rows}
    assert not ids & set(expected)
    reasons = dict(m.report["bad_metadata"])
    for id_ in ("00001", "00002", "00003", "00004"):
        assert expected[id_] in reasons[id_]
    assert m.report["bad_metadata_count"] == 4
    assert m.report["images_missing"] == ["00005"]
    assert m.report["metadata_missing_for_images"] == ["09999"]
    assert "metadata/00001.json" in caplog.text and "bin-images/00005.jpg" in caplog.text


@pytest.mark.parametrize("id_", ["00001", "00002", "00003", "00004", "00005"])
def test_bad_input_fail_names_file_and_problem(tiny_abid_copy, tmp_path, id_):
    expected = damage(tiny_abid_copy)
    # a file list isolates one damaged bin, so the error must be about that one
    fl = write_file_list(tmp_path / "fl.json", {"1": [f"metadata/{id_}.json"], "2": ["metadata/00010.json"]})
    with pytest.raises(DataError, match=rf"{id_}\.(json|jpg): .*{expected[id_][:10]}"):
        build(tiny_abid_copy, tmp_path / "cache", file_list=fl, bad_input="fail")


def test_missing_metadata_from_file_list(tiny_abid, tmp_path):
    fl = write_file_list(tmp_path / "fl.json", {"1": ["metadata/00001.json", "metadata/77777.json"]})
    m = build(tiny_abid, tmp_path / "c", file_list=fl)
    assert m.report["bad_metadata"] == [["77777", "metadata file missing"]]
    with pytest.raises(DataError, match=r"77777\.json: metadata file missing"):
        build(tiny_abid, tmp_path / "c", file_list=fl, bad_input="fail")


def test_bad_input_choice_validated(tiny_abid, tmp_path):
    with pytest.raises(ValueError, match="bad_input='ignore' is not one of skip, fail"):
        build(tiny_abid, tmp_path, bad_input="ignore")


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        build(tmp_path / "nowhere", tmp_path)


# ---------------------------------------------------------------------------------------- path safety


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "/etc/passwd", "..", "a\\b", "", "x..y"])
def test_unsafe_ids_refused(bad, tiny_abid):
    with pytest.raises(DataError, match="unsafe or invalid image id"):
        check_id(bad)
    with pytest.raises(DataError):
        read_metadata(tiny_abid, bad)


@pytest.mark.parametrize("key", ["../x.jpg", "/etc/passwd", "bin-images/../../x.jpg", "bin-images\\..\\x.jpg", ""])
def test_unsafe_keys_refused(key):
    with pytest.raises(DataError, match="unsafe key"):
        check_key(key)


def test_key_prefix_enforced():
    assert check_key("bin-images/00001.jpg", "bin-images") == "bin-images/00001.jpg"
    with pytest.raises(DataError, match="under bin-images/"):
        check_key("metadata/00001.json", "bin-images")


def test_odd_metadata_file_name_is_skipped_or_fails(tiny_abid_copy, tmp_path):
    (tiny_abid_copy / "metadata" / "a b.json").write_text(json.dumps({"EXPECTED_QUANTITY": 1}))
    m = build(tiny_abid_copy, tmp_path / "c")
    assert ["a b", "unsafe or invalid id in the file name"] in m.report["bad_metadata"]
    with pytest.raises(DataError, match="a b.json: unsafe or invalid id"):
        build(tiny_abid_copy, tmp_path / "c", bad_input="fail")


# ---------------------------------------------------------------------------------------- real sample


def sample_counts(root: Path) -> Counter:
    return Counter(json.loads(p.read_text())["EXPECTED_QUANTITY"] for p in (root / "metadata").glob("*.json"))


def test_real_sample_default_range(abid_sample_dir, tmp_path):
    counts = sample_counts(abid_sample_dir)
    m = build(abid_sample_dir, tmp_path)
    above = sum(n for c, n in counts.items() if c > 5)
    assert m.report["metadata_files"] == 300
    assert m.report["excluded_below_min"] == counts[0] > 0
    assert m.report["clipped_above_max"] == above > 0
    assert len(m.rows) == 300 - counts[0]
    total = [sum(m.class_counts(s)[k] for s in ("train", "val", "test")) for k in range(5)]
    assert total == [counts[1], counts[2], counts[3], counts[4], counts[5] + above]


def test_real_sample_drop_and_zero(abid_sample_dir, tmp_path):
    counts = sample_counts(abid_sample_dir)
    dropped = build(abid_sample_dir, tmp_path, class_range=ClassRange(1, 5, "drop"))
    assert dropped.report["excluded_above_max"] == sum(n for c, n in counts.items() if c > 5)
    assert len(dropped.rows) == sum(counts[c] for c in range(1, 6))
    zero = build(abid_sample_dir, tmp_path, class_range=ClassRange(0, 19))
    assert len(zero.rows) == 300 and zero.report["excluded_below_min"] == 0
    assert sorted({r.count for r in zero.rows}) == sorted(counts)
