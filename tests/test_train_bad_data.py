"""Bad data through the whole training task: skipped files are counted and named, or the run fails naming them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bincount.layout import DataError
from bincount.data.synthetic import render_dataset
from bincount.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["model=tiny", "data.img_size=32", "data.batch_size=16", "data.num_workers=0",
        "data.persistent_workers=false", "trainer.max_epochs=1", "callbacks.progress_bar=null",
        "callbacks.model_summary=null", "logger=csv"]
pytestmark = pytest.mark.slow  # each test runs train() on the module's rendered, damaged bins


@pytest.fixture(scope="module")
def damaged_root(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("damaged")
    render_dataset(root, num_images=80, seed=3, size=64, progress=False)
    images = sorted((root / "bin-images").glob("*.jpg"))
    images[0].write_bytes(images[0].read_bytes()[:200])      # truncated JPEG
    images[1].write_bytes(b"this is not an image")            # garbage
    return root, [images[0].stem, images[1].stem]


def run(overrides: list[str], out: Path) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides, f"paths.output_dir={out}"])
    train(cfg)
    return json.loads((out / "metrics.json").read_text())


def test_corrupt_images_are_skipped_counted_and_named(damaged_root, tmp_path):
    root, bad_ids = damaged_root
    metrics = run(["data=abid", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}"], tmp_path / "run")
    quality = metrics["data_quality"]
    skipped = {i for stage in quality["skipped_samples"].values() for i in stage}
    # Every bad file of a split that was read is named; none of them silently vanished.
    seen = quality["skipped_train"] + quality["skipped_val"] + quality["skipped_test"]
    assert skipped == set(bad_ids), quality["skipped_samples"]  # both, whichever splits they fell in
    assert seen == 2


def test_corrupt_images_fail_the_run_naming_the_file(damaged_root, tmp_path):
    root, bad_ids = damaged_root
    with pytest.raises(Exception) as err:
        run(["data=abid", f"data.root={root}", "data.bad_input=fail", f"data.cache_dir={tmp_path / 'cache'}"],
            tmp_path / "run")
    assert any(i in str(err.value) for i in bad_ids), str(err.value)


def test_class_range_that_does_not_fit_the_data_fails_before_training(damaged_root, tmp_path):
    root, _ = damaged_root
    with pytest.raises(DataError, match=r"counts \[.*\] have no training samples"):
        run(["data=abid", f"data.root={root}", "data.classes.max_count=15", f"data.cache_dir={tmp_path / 'c'}"],
            tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
