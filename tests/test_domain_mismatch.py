"""Issue 27 item 5, silent domain mismatch: a bundle records what it was trained on (``trained_on``), and
``bincount predict`` / ``bincount serve`` say so once when the inputs are of another kind."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import write_tiny_bundle

from bincount import cli
from bincount.bundle import BUNDLE_FILE, load_model
from bincount.bundle.provenance import (SizeWatch, from_config, from_datamodule, input_mismatch, record, trained_on,
                                        watch_model)
from bincount.manifest import ClassRange

SYNTHETIC = trained_on("synthetic", 1, 5, 32, [64, 64])
ABID = trained_on("abid", 0, 5, 32, [500, 400])


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory) -> Path:
    """A bundle without ``trained_on``: what every bundle written before issue 27 looks like."""
    return write_tiny_bundle(tmp_path_factory.mktemp("old") / "model")


def bundle_with(old: Path, where: Path, rec: dict) -> Path:
    """The same bundle, its metadata given ``rec`` (the weights' sha256 does not cover the metadata)."""
    out = Path(shutil.copytree(old, where))
    meta = json.loads((out / BUNDLE_FILE).read_text())
    (out / BUNDLE_FILE).write_text(json.dumps({**meta, "trained_on": rec}))
    return out


def mark_synthetic(root: Path) -> Path:
    (root / ".complete.json").write_text(json.dumps({"renderer_version": 1}))  # what the renderer leaves
    return root


def predict(bundle: Path, root: Path, tmp_path: Path, capsys) -> tuple[list[str], dict]:
    out = tmp_path / f"{root.name}.csv"
    status = cli.main(["predict", str(bundle), str(root), "-o", str(out), "--num-workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    return warnings, json.loads(out.with_name(f"{out.stem}.summary.json").read_text())


def test_synthetic_model_on_an_abid_root_warns_once_naming_the_counts(old_bundle, make_abid, tmp_path, capsys):
    """The issue's case: counts 12, 17, 16, 5 for a model of synthetic bins with counts 1-5."""
    bundle = bundle_with(old_bundle, tmp_path / "synthetic", SYNTHETIC)
    root = make_abid([12, 17, 16, 5], name="real")
    warnings, summary = predict(bundle, root, tmp_path, capsys)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("bincount predict: warning: this model was trained on synthetic bins, counts 1-5")
    assert f"{root} holds ABID photos" in warnings[0]
    assert "3 of 4 true counts are outside 1-5 (12 to 17)" in warnings[0]
    assert summary["warning"] in warnings[0]


def test_matching_roots_say_nothing(old_bundle, make_abid, tmp_path, capsys):
    synthetic_root = mark_synthetic(make_abid([1, 2, 3, 5], name="render"))
    warnings, summary = predict(bundle_with(old_bundle, tmp_path / "s", SYNTHETIC), synthetic_root, tmp_path, capsys)
    assert warnings == [] and "warning" not in summary
    warnings, _ = predict(bundle_with(old_bundle, tmp_path / "a", ABID), make_abid([0, 3, 5], name="abid"), tmp_path,
                          capsys)
    assert warnings == []


def test_abid_model_on_a_synthetic_render_warns(old_bundle, make_abid, tmp_path, capsys):
    root = mark_synthetic(make_abid([1, 2], name="render"))
    warnings, _ = predict(bundle_with(old_bundle, tmp_path / "a", ABID), root, tmp_path, capsys)
    assert len(warnings) == 1 and "trained on ABID photos, counts 0-5, 500x400 px images" in warnings[0]
    assert f"{root} holds synthetic bins" in warnings[0] and "true counts" not in warnings[0]


def test_an_old_bundle_says_nothing(old_bundle, make_abid, tmp_path, capsys):
    """No ``trained_on``: unknown, so no warning, even for counts its classes cannot say."""
    warnings, summary = predict(old_bundle, make_abid([12, 17, 16, 5]), tmp_path, capsys)
    assert warnings == [] and "warning" not in summary
    assert record(load_model(old_bundle).metadata) is None


def test_write_bundle_records_trained_on(tmp_path):
    import torch

    from bincount.bundle import write_bundle
    from bincount.models.module import BinCounter

    torch.manual_seed(0)
    module = BinCounter(backbone="test_resnet", num_classes=5, min_count=1, pretrained=False, head={"name": "linear"})
    out = write_bundle(tmp_path / "m", module, img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, overflow="clip",
                       max_pixels=1_000_000, trained_on=SYNTHETIC)
    meta = load_model(out).metadata
    assert meta["trained_on"] == {"data": "synthetic", "counts": [1, 5], "input_size": 32, "image_size": [64, 64]}
    assert record(meta) == {"data": "synthetic", "counts": [1, 5], "image_size": [64, 64]}


def test_the_record_of_a_run_comes_from_its_data(make_abid):
    """Synthetic: the renderer's size; ABID: the median size of a few training images, read from their headers."""
    render = SimpleNamespace(synthetic={"size": 64, "num_images": 10}, store=None, shards=None, root=Path("/nowhere"),
                             class_range=ClassRange(1, 5), img_size=32, manifest=None)
    assert from_datamodule(render) == trained_on("synthetic", 1, 5, 32, [64, 64])
    root = make_abid([3, 4, 7], size=(500, 400))
    rows = [SimpleNamespace(image=f"bin-images/{i:05d}.jpg") for i in (1, 2, 3)]
    real = SimpleNamespace(synthetic=None, store=None, shards=None, root=root, class_range=ClassRange(0, 5),
                           img_size=224, manifest=SimpleNamespace(split=lambda name: rows))
    assert from_datamodule(real) == trained_on("abid", 0, 5, 224, [500, 400])
    assert from_datamodule(SimpleNamespace(**{**vars(real), "root": mark_synthetic(root)}))["data"] == "synthetic"


def test_export_takes_the_record_from_the_resolved_config():
    from bincount.bundle.export import _setting

    cfg = {"data": {"synthetic": {"size": 128}, "img_size": 64, "classes": {"min_count": 1, "max_count": 5}}}
    assert from_config(cfg, _setting) == trained_on("synthetic", 1, 5, 64, [128, 128])
    cfg = {"data": {"synthetic": None, "img_size": 224, "classes": {"min_count": 0, "max_count": 9}}}
    assert from_config(cfg, _setting) == trained_on("abid", 0, 9, 224, None)


def test_a_record_it_does_not_understand_reads_as_unknown():
    assert record({"trained_on": {"data": "\x1b]0;evil\x07"}}) is None
    assert record({"trained_on": "synthetic"}) is None
    odd = record({"trained_on": {"data": "abid", "counts": ["1", 5], "image_size": [True, 3]}})
    assert odd == {"data": "abid", "counts": None, "image_size": None}
    assert input_mismatch({"trained_on": odd}, [], [40]) is None  # no counts recorded: nothing to compare


def test_serve_logs_the_record_once_and_warns_once_for_images_of_another_size(old_bundle, tmp_path, caplog):
    import torch

    model = load_model(bundle_with(old_bundle, tmp_path / "s", SYNTHETIC))
    log = logging.getLogger("bincount.serve")
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        watch_model(model, log)
        assert isinstance(model.transform, SizeWatch)
        assert "model trained on synthetic bins, counts 1-5, 64x64 px images" in caplog.text
        model.transform(torch.zeros(3, 64, 80, dtype=torch.uint8))  # like the training images: nothing said
        assert "WARNING" not in caplog.text
        for _ in range(3):
            out = model.transform(torch.zeros(3, 400, 500, dtype=torch.uint8))  # an ABID photo
    assert tuple(out.shape) == (3, 32, 32)  # still the bundle's own preprocessing
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "an image of 500x400 px" in warned[0].getMessage()


def test_serve_loads_an_old_bundle_saying_it_does_not_know(old_bundle, caplog):
    from bincount.serve.app import Settings, State

    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        state = State(Settings(model=str(old_bundle), device="cpu"))
        state.load()
        if state.batcher is not None:
            state.batcher.close()
    assert state.error is None, state.error
    assert "data its bundle does not record" in caplog.text


def test_true_counts_outside_the_classes_are_named_as_one_value_or_a_range():
    meta = {"trained_on": trained_on("abid", 1, 5, 64, None)}
    assert input_mismatch(meta, [], [3, 9, None]).endswith(
        "1 of 2 true counts are outside 1-5 (9): its counts for these images may mean little")
    assert "2 of 3 true counts are outside 1-5 (0 to 12)" in input_mismatch(meta, [], [0, 4, 12])
    assert input_mismatch(meta, [], [1, 5]) is None
