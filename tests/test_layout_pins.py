"""Pinned bytes: moving code between modules must not change a rendered bin, a split or a cache key.

The hashes were taken from the code before ``data/synthetic.py`` and ``data/manifest.py`` were split
into packages; a change here means existing caches, datasets and run comparisons silently stop
matching, so it needs a version bump (``RENDERER_VERSION`` / ``MANIFEST_VERSION``), not a new pin.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from bincount.data.synthetic import bin_count, render_bin, render_dataset
from bincount.manifest import build_manifest
from bincount.manifest.table import cache_key


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize(("index", "jpeg", "metadata"), [
    (0, "c220c16ec07d49fc", "0996c059b4bfd919"),
    (1, "961c1fe1dfc58a58", "0bb62e5dbb78c631"),
    (2, "eb3e651609dcf930", "6a082736f0d0b8f1"),
    (3, "ec50e6e21ec0fc78", "3914bcefb2d615e7"),
])
def test_rendered_bins_are_byte_identical(index, jpeg, metadata):
    data, meta = render_bin(0, index, size=64)
    assert (_sha(data), _sha(json.dumps(meta, sort_keys=True).encode())) == (jpeg, metadata)


def test_counts_dataset_and_manifest_are_unchanged(tmp_path):
    assert [bin_count(3, i) for i in range(10)] == [1, 2, 1, 1, 5, 2, 3, 4, 3, 5]
    render_dataset(tmp_path / "ds", num_images=60, seed=1, size=48, workers=1, progress=False)
    digest = hashlib.sha256()
    for f in sorted((tmp_path / "ds").rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    assert digest.hexdigest()[:16] == "1cefc8382651d9a2"

    manifest = build_manifest(tmp_path / "ds", cache_dir=tmp_path / "cache", progress=False)
    rows = "\n".join(f"{r.id},{r.image},{r.count},{r.label},{r.split}" for r in manifest.rows)
    assert (_sha(rows.encode()), len(manifest.rows)) == ("5bd764c7e4a0da54", 60)  # split membership too
    key_parts = json.loads(manifest.path.with_suffix(".json").read_text())["key"]
    assert manifest.path.name == f"manifest-{cache_key(**key_parts)[:20]}.csv"
    assert sorted(key_parts) == ["bad_input", "class_range", "file_list", "fractions", "images", "metadata",
                                 "root", "seed", "version"]
    assert cache_key(version=1, root="/x", seed=0, fractions=(0.8, 0.1, 0.1))[:20] == "3c1a792454bb3bb9fa38"
