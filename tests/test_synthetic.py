"""Synthetic bins: real ABID layout and schema, determinism, resume/idempotence, CLI, visible items.

Images are rendered small (32-64 px) and few, so the whole file runs in seconds on a shared CPU.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bincount import cli
from bincount.data import synthetic
from bincount.data.synthetic import CAPSTONE_COUNT_DISTRIBUTION, bin_count, image_id, render_bin, render_dataset

ITEM_KEYS = {"asin", "name", "normalizedName", "quantity", "height", "length", "width", "weight"}
SIZE = 48


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def _decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """One small finished dataset shared by the read-only tests."""
    out = tmp_path_factory.mktemp("synthetic") / "bins"
    return render_dataset(out, num_images=6, seed=0, size=SIZE, progress=False)


# --- layout and schema ---------------------------------------------------------------------------


def test_layout_matches_the_bucket(rendered: Path) -> None:
    ids = [image_id(i) for i in range(6)]
    assert ids[:2] == ["00001", "00002"]
    assert sorted(p.name for p in (rendered / "bin-images").iterdir()) == [f"{i}.jpg" for i in ids]
    assert sorted(p.name for p in (rendered / "metadata").iterdir()) == [f"{i}.json" for i in ids]
    assert (rendered / ".complete.json").is_file()
    assert not list(rendered.rglob("*.tmp"))


def test_image_ids_widen_past_five_digits() -> None:
    assert (image_id(0), image_id(99998), image_id(99999)) == ("00001", "99999", "100000")


def test_jpegs_decode_at_the_requested_size(rendered: Path) -> None:
    for path in (rendered / "bin-images").iterdir():
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))


def test_metadata_schema(rendered: Path) -> None:
    for path in (rendered / "metadata").iterdir():
        meta = json.loads(path.read_text())
        assert set(meta) == {"BIN_FCSKU_DATA", "EXPECTED_QUANTITY"}
        items = meta["BIN_FCSKU_DATA"]
        assert meta["EXPECTED_QUANTITY"] == sum(item["quantity"] for item in items.values())
        for key, item in items.items():
            assert set(item) == ITEM_KEYS and key == item["asin"] and item["quantity"] >= 1
            assert item["name"] == item["normalizedName"]
            assert all(item[d]["unit"] == "IN" and item[d]["value"] > 0 for d in ("height", "length", "width"))
            assert item["weight"]["unit"] == "pounds" and item["weight"]["value"] > 0


def test_metadata_keys_match_the_real_sample(rendered: Path, abid_sample_dir: Path) -> None:
    def shape(meta: dict) -> set:
        items = meta["BIN_FCSKU_DATA"].values()
        return {(k, tuple(sorted(v)) if isinstance(v, dict) else type(v).__name__) for item in items for k, v in item.items()}

    real = [json.loads(p.read_text()) for p in sorted((abid_sample_dir / "metadata").glob("*.json"))[:20]]
    ours = [json.loads(p.read_text()) for p in (rendered / "metadata").iterdir()]
    assert {k for m in real for k in m} == {k for m in ours for k in m}
    assert set().union(*map(shape, real)) >= set().union(*map(shape, ours))
    assert {type(m["EXPECTED_QUANTITY"]) for m in ours} == {int}


# --- determinism and counts ----------------------------------------------------------------------


def test_render_bin_is_deterministic() -> None:
    first = render_bin(7, 3, size=SIZE)
    assert render_bin(7, 3, size=SIZE) == first
    assert render_bin(8, 3, size=SIZE)[0] != first[0]
    assert render_bin(7, 4, size=SIZE)[0] != first[0]


def test_counts_follow_the_capstone_distribution() -> None:
    draws = np.array([bin_count(0, i) for i in range(2000)])
    keys = sorted(CAPSTONE_COUNT_DISTRIBUTION)
    weights = np.array([CAPSTONE_COUNT_DISTRIBUTION[k] for k in keys], dtype=float)
    expected = weights / weights.sum() * len(draws)
    observed = np.array([(draws == k).sum() for k in keys])
    assert observed.sum() == len(draws)  # nothing outside 1..5
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 18.5, (observed, expected)  # p = 0.001 with 4 degrees of freedom


def test_counts_override_and_metadata_agree() -> None:
    counts = {0: 1, 3: 1}
    draws = [bin_count(1, i, counts) for i in range(400)]
    assert set(draws) == {0, 3} and 150 < draws.count(0) < 250
    for i in range(4):
        assert render_bin(1, i, size=32, counts=counts)[1]["EXPECTED_QUANTITY"] == draws[i]
    empty = render_bin(1, 0, size=32, counts={0: 1})[1]
    assert empty == {"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 0}


def test_items_are_visible() -> None:
    """Same index => same bin, bands and lighting whatever the count, so the items are the difference."""
    one, five = [], []
    for i in range(8):
        empty = _decode(render_bin(2, i, size=64, counts={0: 1})[0])
        one.append(np.abs(_decode(render_bin(2, i, size=64, counts={1: 1})[0]) - empty).mean())
        five.append(np.abs(_decode(render_bin(2, i, size=64, counts={5: 1})[0]) - empty).mean())
    assert min(one) > 0.5, one  # a single item always shows
    assert np.mean(five) > 2 * np.mean(one), (one, five)
    assert sum(f > o for o, f in zip(one, five)) >= 7, (one, five)


# --- the dataset directory: idempotence, mismatch, resume, workers -------------------------------


def test_second_call_rewrites_nothing(rendered: Path) -> None:
    before = _mtimes(rendered)
    assert render_dataset(rendered, num_images=6, seed=0, size=SIZE, progress=False) == rendered
    assert _mtimes(rendered) == before


@pytest.mark.parametrize(("change", "named"), [({"seed": 1}, "seed"), ({"num_images": 7}, "num_images"), ({"size": 40}, "size"), ({"counts": {2: 1}}, "counts")])
def test_other_parameters_are_refused(rendered: Path, change: dict, named: str) -> None:
    before = _files(rendered)
    with pytest.raises(ValueError, match=named):
        render_dataset(rendered, **{"num_images": 6, "seed": 0, "size": SIZE, "progress": False, **change})
    assert _files(rendered) == before


def test_resume_after_a_killed_render(rendered: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial"
    for name, data in _files(rendered).items():  # a copy, then "kill" it: unfinished, files missing
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    (out / ".complete.json").rename(out / ".partial.json")  # what a killed render leaves
    (out / "bin-images/00002.jpg").unlink()
    (out / "metadata/00005.json").unlink()
    (out / "bin-images/.00003.jpg.123.tmp").write_bytes(b"truncated")
    kept = _mtimes(out)["bin-images/00001.jpg"]
    render_dataset(out, num_images=6, seed=0, size=SIZE, progress=False)
    assert _files(out) == _files(rendered)  # byte-identical, no tmp file left
    assert _mtimes(out)["bin-images/00001.jpg"] == kept  # existing files were skipped


def test_partial_directory_with_other_parameters_is_refused(tmp_path: Path) -> None:
    render_dataset(tmp_path, num_images=2, seed=0, size=32, progress=False)
    (tmp_path / ".complete.json").unlink()
    (tmp_path / ".partial.json").write_text(json.dumps({"seed": 5}))
    with pytest.raises(ValueError, match="seed"):
        render_dataset(tmp_path, num_images=2, seed=0, size=32, progress=False)


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bin-images").mkdir()
    (tmp_path / "bin-images/00001.jpg").write_bytes(b"a real photo")
    with pytest.raises(ValueError, match="not a synthetic render"):
        render_dataset(tmp_path, num_images=2, size=32, progress=False)
    assert (tmp_path / "bin-images/00001.jpg").read_bytes() == b"a real photo"
    assert not (tmp_path / "metadata").exists()


def test_workers_write_the_same_files(rendered: Path, tmp_path: Path) -> None:
    out = render_dataset(tmp_path / "parallel", num_images=6, seed=0, size=SIZE, workers=2, progress=False)
    assert _files(out) == _files(rendered)


# --- arguments and CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_images": 0}, "num_images.*0"),
        ({"size": 31}, "size.*31"),
        ({"seed": -1}, "seed.*-1"),
        ({"workers": 0}, "workers.*0"),
        ({"counts": {-1: 1}}, "-1"),
        ({"counts": {1.5: 1}}, "1.5"),
        ({"counts": {1: 0}}, "positive total"),
        ({"counts": {1: -2}}, "-2"),
        ({"counts": {}}, "non-empty"),
        ({"counts": {1000: 1}}, "1000"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_dataset(tmp_path, **{"num_images": 1, "size": 32, "progress": False, **kwargs})
    assert not any(tmp_path.iterdir())  # nothing written


def test_render_bin_checks_size() -> None:
    with pytest.raises(ValueError, match="size.*16"):
        render_bin(0, 0, size=16)


def test_cli_render(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["render", str(out), "--num-images", "3", "--size", "40", "--seed", "3", "--workers", "1", "--counts", "0:1,2:1"]
    assert cli.main(argv) == 0
    assert "rendered 3 images" in capsys.readouterr().out
    quantities = {json.loads(p.read_text())["EXPECTED_QUANTITY"] for p in (out / "metadata").iterdir()}
    assert quantities <= {0, 2} and len(list((out / "bin-images").iterdir())) == 3
    assert cli.main([*argv, "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert cli.main([*argv[:-1], "0:1", "--no-progress"]) == 1  # OUT_DIR holds another render: a run-time failure
    assert "counts" in capsys.readouterr().err


def test_cli_rejects_malformed_counts(tmp_path: Path, capsys) -> None:
    assert cli.main(["render", str(tmp_path), "--counts", "1-5", "--no-progress"]) == 2
    assert "--counts" in capsys.readouterr().err


def test_cli_defaults() -> None:
    args = cli.build_parser(["render", "x"]).parse_args(["render", "x"])
    assert (args.num_images, args.size, args.seed, args.counts, args.progress) == (2000, 128, 0, None, True)
    assert args.workers >= 1 and synthetic.JPEG_QUALITY == 90


def test_two_processes_rendering_one_dataset_at_once_both_succeed(tmp_path: Path) -> None:
    """Two jobs of a local sweep render the same dataset into the shared data dir at the same time."""
    import subprocess
    import sys

    code = ("import sys; from bincount.data.synthetic import render_dataset; "
            "render_dataset(sys.argv[1], num_images=150, seed=1, size=48, workers=1, progress=False)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "shared")], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert len(list((tmp_path / "shared" / "bin-images").iterdir())) == 150
    assert (tmp_path / "shared" / ".complete.json").is_file() and not (tmp_path / "shared" / ".partial.json").exists()
