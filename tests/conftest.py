"""Shared fixtures: the real ABID sample (beside the clone, or $BINCOUNT_ABID_SAMPLE) and tiny ABID-layout
dirs written with PIL.

The tiny dirs do not use ``bincount.data.synthetic`` on purpose: data tests must not depend on the
renderer they are meant to check against.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image

from bincount.resolvers import register_resolvers

# pytest-xdist runs one worker per core: each worker's torch (and the train.py subprocesses it starts) uses
# one thread, so the workers do not oversubscribe the cores. Set before torch is first imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _resolvers():
    """Tests compose conf/ in process (hydra.compose); train.py registers the same resolvers before composing.
    A fixture, not an import-time call: a mutation run makes every function of the package fail once, on
    purpose, and a conftest that fails to import is a usage error to pytest, not a failing test."""
    register_resolvers()

# Fixtures several test files use (moto_server, the fake SageMaker), without importing them.
pytest_plugins = ["helpers.fixtures", "helpers.quotas"]


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory: pytest.TempPathFactory):
    """Sweeps' result keys go to the user's state directory ($XDG_STATE_HOME): a temporary one in tests,
    inherited by the subprocesses the tests start."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old

SAMPLE_ENV = "BINCOUNT_ABID_SAMPLE"
# Where the README says the sample sits: ../shared/data/abid/sample beside the clone.
DEFAULT_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "abid" / "sample"


def sample_path() -> tuple[Path, str]:
    """The real ABID sample's path and where it came from: $BINCOUNT_ABID_SAMPLE, else beside the clone."""
    value = os.environ.get(SAMPLE_ENV)
    return (Path(value), f"{SAMPLE_ENV}={value}") if value else (DEFAULT_SAMPLE, f"{DEFAULT_SAMPLE} (no ${SAMPLE_ENV})")


def write_tiny_bundle(out_dir: Path) -> Path:
    """A model bundle of timm's tiny ``test_resnet`` with random weights, 5 classes (counts 1-5), 32 px.

    The head's weights are scaled so that different images get clearly different probabilities:
    serving tests check that each answer goes to the right request, not accuracy.
    """
    import torch

    from bincount.bundle import write_bundle
    from bincount.models.module import BinCounter

    torch.manual_seed(0)
    module = BinCounter(backbone="test_resnet", num_classes=5, min_count=1, pretrained=False, head={"name": "linear"})
    with torch.no_grad():
        for p in module.head.parameters():
            p.mul_(40)
    return write_bundle(out_dir, module, img_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        overflow="clip", max_pixels=40_000_000)


def find_sample() -> Path | None:
    path, _ = sample_path()
    return path if (path / "metadata").is_dir() and (path / "bin-images").is_dir() else None
TINY_COUNTS = tuple(i % 7 for i in range(1, 61))  # 60 bins, counts 0..6, 8-9 bins each


def write_abid(root: Path, counts: Sequence[int], size: tuple[int, int] = (32, 24)) -> Path:
    """Write bins ``00001..`` with solid-colour JPEGs and ABID-schema metadata for ``counts``."""
    (root / "bin-images").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for i, count in enumerate(counts, start=1):
        id_ = f"{i:05d}"
        colour = ((37 * i) % 256, (11 * count * 20) % 256, (5 * i) % 256)
        Image.new("RGB", size, colour).save(root / "bin-images" / f"{id_}.jpg", quality=90)
        items = {f"ASIN{id_}": {"asin": f"ASIN{id_}", "name": "thing", "quantity": count}} if count else {}
        meta = {"BIN_FCSKU_DATA": items, "EXPECTED_QUANTITY": count}
        (root / "metadata" / f"{id_}.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def abid_sample_dir() -> Path:
    """The real ABID sample (300 bins, counts 0-19); skips, naming the path it looked at, when absent."""
    path, where = sample_path()
    if find_sample() is None:
        pytest.skip(f"no ABID sample (metadata/ and bin-images/) at {where}: put it there or set {SAMPLE_ENV}")
    return path


@pytest.fixture(scope="session")
def tiny_abid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 solid-colour bins in the ABID layout, counts 0..6 (``TINY_COUNTS``). Read-only by convention:
    tests that damage files use ``tiny_abid_copy``; tests that build manifests pass ``cache_dir``."""
    return write_abid(tmp_path_factory.mktemp("tiny_abid"), TINY_COUNTS)


@pytest.fixture
def tiny_abid_copy(tiny_abid: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_abid`` that a test may damage."""
    return Path(shutil.copytree(tiny_abid, tmp_path / "abid", ignore=shutil.ignore_patterns(".bincount")))


@pytest.fixture
def make_abid(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_abid(counts, name="abid", size=(32, 24))`` writes a fresh ABID dir under tmp_path."""

    def make(counts: Sequence[int], name: str = "abid", size: tuple[int, int] = (32, 24)) -> Path:
        return write_abid(tmp_path / name, counts, size)

    return make
