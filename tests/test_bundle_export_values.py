"""Values of ``bincount.bundle.write`` and ``bincount.bundle.export``, without training.

A run directory is made by hand: a tiny ``BinCounter`` (timm's ``test_resnet``), a Lightning-style
checkpoint (``hyper_parameters`` + ``state_dict``, saved with ``torch.save``), ``resolved_config.yaml``
and ``metrics.json``. Each test checks the bundle's exact values, or an error's exact message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from bincount.bundle import BUNDLE_FILE, WEIGHTS_FILE, BundleError
from bincount.bundle.export import CONFIG_FILES, _setting, best_checkpoint, export_run, load_checkpoint_module
from bincount.bundle.write import KEY_METRICS, MODEL_DIR, SM_MODEL_DIR, key_metrics, write_bundle, write_run_bundle

TEST_RESNET_STATS = [0.5, 0.5, 0.5]  # timm's resolved mean and std for test_resnet
CONFIG = {
    "data": {"img_size": 48, "max_pixels": 250_000, "synthetic": {"size": 64, "num_images": 10},
             "classes": {"min_count": 1, "max_count": 5, "overflow": "drop"}},
    "trainer": {"precision": "bf16-mixed"},
}
METRICS = {"best_checkpoint": "checkpoints/epoch=01-step=4.ckpt", "test/acc": 0.123456789, "test/rmse": 1.23456789e-4,
           "val/mae": 2, "test/per_class_acc": [0.5, 0.25], "val/loss": 0.75, "epoch": 1}


# -- a tiny BinCounter and its checkpoints ----------------------------------------------------------
def make_counter(seed: int = 0, **kwargs):
    import torch

    from bincount.models.module import BinCounter

    torch.manual_seed(seed)
    args = {"backbone": "test_resnet", "num_classes": 5, "min_count": 1, "pretrained": False,
            "head": {"name": "linear"}, **kwargs}
    return BinCounter(**args)


def save_ckpt(path: Path, module, **hparams) -> Path:
    """A checkpoint as Lightning writes one, as far as export reads it: hyper_parameters and state_dict."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "hyper_parameters": {**dict(module.hparams), **hparams},
                "state_dict": module.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def counters():
    """Two tiny models with different weights (read only: every test rebuilds what it changes)."""
    return make_counter(seed=1), make_counter(seed=2)


@pytest.fixture(scope="module")
def ckpts(counters, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ckpts")
    return save_ckpt(base / "a.ckpt", counters[0]), save_ckpt(base / "b.ckpt", counters[1])


def make_run(tmp_path: Path, ckpt: Path | None, cfg: dict | None = CONFIG, metrics: dict | None = METRICS,
             name: str = "last.ckpt", config_file: str = "resolved_config.yaml") -> Path:
    run = tmp_path / "logs" / "runs" / "2024-05-01_12-00-00"
    (run / "checkpoints").mkdir(parents=True)
    if ckpt is not None:
        shutil.copyfile(ckpt, run / "checkpoints" / name)
    if cfg is not None:
        (run / config_file).parent.mkdir(parents=True, exist_ok=True)
        (run / config_file).write_text(yaml.safe_dump(cfg))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def read_bundle(out: Path) -> dict:
    return json.loads((out / BUNDLE_FILE).read_text())


def assert_weights_of(out: Path, module) -> None:
    import torch
    from safetensors.torch import load_file

    tensors, state = load_file(str(out / WEIGHTS_FILE)), module.state_dict()
    assert sorted(tensors) == sorted(state)
    assert all(torch.equal(tensors[k], state[k].cpu()) for k in state)


# -- key_metrics ------------------------------------------------------------------------------------
def test_key_metrics_keeps_the_headline_numbers_rounded_as_metrics_json():
    metrics = {"test/acc": 0.123456789, "test/rmse": 12345.6789, "test/mae": 3, "test/within_one": True,
               "test/f1_macro": "0.5", "test/f1_weighted": None, "test/num_samples": 250,
               "val/acc": 0.987654321, "val/f1_weighted": 1.0000004, "val/num_samples": 40.0,
               "val/loss": 0.5, "train/acc": 0.9, "test/per_class_acc": [0.1], "acc": 0.3, "best_checkpoint": "x"}
    got = key_metrics(metrics)
    assert got == {"test/acc": 0.123457, "test/rmse": 12345.7, "test/mae": 3.0, "test/within_one": 1.0,
                   "test/num_samples": 250.0, "val/acc": 0.987654, "val/f1_weighted": 1.0, "val/num_samples": 40.0}
    assert all(type(v) is float for v in got.values())
    assert list(got) == [k for k in (f"{s}/{n}" for s in ("test", "val") for n in KEY_METRICS) if k in got]
    assert key_metrics({}) == {} and key_metrics({"val/loss": 1.0, "test/acc": "n/a"}) == {}


# -- write_bundle -----------------------------------------------------------------------------------
@pytest.fixture
def written(tmp_path_factory):
    """One bundle of a model with every model field off its default, written twice into the same folder.

    Function scope on purpose: mutmut maps a function to the tests that call it, and a module fixture's calls
    count only for the first test that uses it (a mutant of the JSON's indent survived the test that reads it)."""
    module = make_counter(seed=3, num_classes=4, min_count=0, head={"name": "mlp", "hidden": 8}, drop_rate=0.25,
                          channels_last=True)
    out = tmp_path_factory.mktemp("written") / "a" / "b" / "model"
    run = out.parent / "2024-06-02_08-30-00"
    kwargs = dict(img_size=40, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), overflow="clip", max_pixels=123_456,
                  metrics={"test/acc": 0.66666666666, "val/rmse": 0.5, "val/loss": 0.1}, run_dir=run,
                  checkpoint="checkpoints/epoch=3.ckpt", precision="16-mixed",
                  trained_on={"data": "abid", "counts": [0, 3], "input_size": 40, "image_size": None})
    write_bundle(out, make_counter(seed=4), **{**kwargs, "run_dir": None})  # a first bundle, then one over it
    returned = write_bundle(out, module, **kwargs)
    return {"out": out, "returned": returned, "module": module, "run": run}


def test_write_bundle_metadata_values(written):
    out = written["out"]
    meta = read_bundle(out)
    assert written["returned"] == out
    assert {k: v for k, v in meta.items() if k not in ("created", "versions", "weights")} == {
        "format": "bincount-model",
        "format_version": 1,
        "model": {"backbone": "test_resnet", "num_classes": 4, "head": {"name": "mlp", "hidden": 8},
                  "drop_rate": 0.25, "channels_last": True},
        "classes": {"min_count": 0, "max_count": 3, "overflow": "clip", "counts": [0, 1, 2, 3],
                    "meaning": {"0": "0", "1": "1", "2": "2", "3": ">=3"}},
        "preprocess": {"channels": "RGB", "input": "uint8 CHW, decoded by bincount.samples", "resize": [40, 40],
                       "interpolation": "bilinear", "antialias": True, "crop": None, "scale": "1/255",
                       "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "max_pixels": 123_456,
                       "input_size": [3, 40, 40]},
        "run": {"id": "2024-06-02_08-30-00", "parent": "b", "checkpoint": "checkpoints/epoch=3.ckpt",
                "precision": "16-mixed"},
        "metrics": {"test/acc": 0.666667, "val/rmse": 0.5},
        "trained_on": {"data": "abid", "counts": [0, 3], "input_size": 40, "image_size": None},
    }
    import timm
    import torch

    assert meta["versions"] == {"bincount": version("bincount"), "torch": torch.__version__, "timm": timm.__version__}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", meta["created"]), meta["created"]


def test_write_bundle_weights_entry_and_file(written):
    from safetensors import safe_open

    out, module = written["out"], written["module"]
    meta = read_bundle(out)
    assert meta["weights"] == {"file": "model.safetensors", "tensors": len(module.state_dict()),
                               "sha256": hashlib.sha256((out / WEIGHTS_FILE).read_bytes()).hexdigest()}
    assert_weights_of(out, module)  # the second write's weights, not the first's
    with safe_open(str(out / WEIGHTS_FILE), framework="pt") as f:
        assert f.metadata() == {"format": "bincount-model"}


def test_write_bundle_file_is_sorted_indented_json_and_leaves_no_temporary_files(written):
    out = written["out"]
    text = (out / BUNDLE_FILE).read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert text.startswith('{\n  "classes": {\n    "counts": [\n      0,\n')
    assert sorted(os.listdir(out)) == [BUNDLE_FILE, WEIGHTS_FILE]


def test_write_bundle_defaults_no_run_no_metrics_no_record_and_a_linear_head(tmp_path):
    module = make_counter(seed=5, head=None, min_count=2)
    out = write_bundle(tmp_path / "m", module, img_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, overflow="drop",
                       max_pixels=1000)
    meta = read_bundle(out)
    assert meta["model"] == {"backbone": "test_resnet", "num_classes": 5, "head": {"name": "linear"},
                             "drop_rate": 0.0, "channels_last": False}
    assert meta["classes"]["meaning"] == {"0": "2", "1": "3", "2": "4", "3": "5", "4": "6"}
    assert meta["run"] == {"id": None, "parent": None, "checkpoint": None, "precision": None}
    assert meta["metrics"] == {} and "trained_on" not in meta
    assert (meta["preprocess"]["mean"], meta["preprocess"]["std"]) == ([0.5] * 3, [0.25] * 3)


# -- write_run_bundle -------------------------------------------------------------------------------
def make_datamodule(tmp_path: Path):
    """A real DataModule (never set up: nothing is rendered), with every field the bundle reads off its default."""
    from bincount.data.datamodule import BinCountDataModule

    return BinCountDataModule(root=str(tmp_path / "synthetic"), classes={"min_count": 1, "max_count": 5, "overflow": "drop"},
                              synthetic={"size": 56, "num_images": 10}, img_size=36, num_workers=0,
                              mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), max_pixels=654_321)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return make_datamodule(tmp_path_factory.mktemp("dm"))


def test_write_run_bundle_takes_the_datamodule_metrics_and_run(counters, datamodule, tmp_path, monkeypatch):
    monkeypatch.delenv(SM_MODEL_DIR, raising=False)
    run = tmp_path / "multirun" / "7"
    metrics = {"best_checkpoint": "checkpoints/epoch=02.ckpt", "test/acc": 0.5, "val/within_one": 0.91234567}
    out = write_run_bundle(run, counters[0], datamodule, metrics, precision="32-true")
    assert out == run / MODEL_DIR
    meta = read_bundle(out)
    assert meta["run"] == {"id": "7", "parent": "multirun", "checkpoint": "checkpoints/epoch=02.ckpt",
                           "precision": "32-true"}
    assert meta["metrics"] == {"test/acc": 0.5, "val/within_one": 0.912346}
    assert meta["classes"]["overflow"] == "drop" and meta["classes"]["meaning"]["4"] == "5"
    pre = meta["preprocess"]
    assert (pre["resize"], pre["mean"], pre["std"], pre["max_pixels"]) == ([36, 36], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1],
                                                                           654_321)
    assert meta["trained_on"] == {"data": "synthetic", "counts": [1, 5], "input_size": 36, "image_size": [56, 56]}
    assert_weights_of(out, counters[0])
    assert sorted(os.listdir(run)) == [MODEL_DIR]


def test_write_run_bundle_without_a_best_checkpoint_records_none(counters, datamodule, tmp_path, monkeypatch):
    monkeypatch.setenv(SM_MODEL_DIR, "")  # set but empty: no copy (into the working directory or anywhere)
    monkeypatch.chdir(tmp_path)
    out = write_run_bundle(tmp_path / "run", counters[1], datamodule, {"test/acc": 1}, precision=None)
    assert read_bundle(out)["run"] == {"id": "run", "parent": tmp_path.name, "checkpoint": None, "precision": None}
    assert sorted(os.listdir(tmp_path)) == ["run"]


@pytest.mark.parametrize("existing", [False, True], ids=["new-nested-dir", "existing-dir"])
def test_write_run_bundle_copies_the_bundle_into_sm_model_dir(existing, counters, datamodule, tmp_path, monkeypatch):
    sm_dir = tmp_path / "opt" / "ml" / "model"
    if existing:
        sm_dir.mkdir(parents=True)
    monkeypatch.setenv(SM_MODEL_DIR, str(sm_dir))
    out = write_run_bundle(tmp_path / "run", counters[0], datamodule, {"best_checkpoint": "c.ckpt"}, precision="16")
    assert out == tmp_path / "run" / MODEL_DIR
    assert sorted(os.listdir(sm_dir)) == [BUNDLE_FILE, WEIGHTS_FILE]
    for name in (BUNDLE_FILE, WEIGHTS_FILE):
        assert (sm_dir / name).read_bytes() == (out / name).read_bytes(), name
    assert read_bundle(sm_dir)["run"]["checkpoint"] == "c.ckpt"


# -- export: _setting and _config -------------------------------------------------------------------
def test_setting_reads_dotted_keys_with_defaults():
    cfg = {"data": {"img_size": 0, "classes": {"overflow": "drop"}, "flat": 5, "none": None}}
    assert _setting(cfg, "data.img_size", 128) == 0  # a falsy value is a value
    assert _setting(cfg, "data.classes.overflow", "clip") == "drop"
    assert _setting(cfg, "data.flat.deeper", "d") == "d"  # through a non-mapping
    assert _setting(cfg, "data.none", 7) == 7 and _setting(cfg, "data.missing") is None
    assert _setting(cfg, "nope.at.all", [1]) == [1]
    assert _setting({"a": "$ {not} one {x}$"}, "a") == "$ {not} one {x}$"


def test_setting_refuses_an_unresolved_interpolation():
    with pytest.raises(BundleError) as info:
        _setting({"data": {"img_size": "${model.size}"}}, "data.img_size", 128)
    assert str(info.value) == ("config key data.img_size='${model.size}' is an unresolved interpolation; "
                               "export needs resolved_config.yaml")


def test_export_without_a_config_says_which_files_it_looked_for(ckpts, tmp_path):
    run = make_run(tmp_path, ckpts[0], cfg=None)
    with pytest.raises(BundleError) as info:
        export_run(run)
    assert str(info.value) == (f"{run} has none of ['resolved_config.yaml', '.hydra/config.yaml']: "
                               "is it a bincount run directory?")
    assert list(CONFIG_FILES) == ["resolved_config.yaml", ".hydra/config.yaml"]


def test_export_refuses_a_config_that_is_not_a_mapping(ckpts, tmp_path):
    run = make_run(tmp_path, ckpts[0], cfg=None)
    (run / "resolved_config.yaml").write_text("- data\n- trainer\n")
    with pytest.raises(BundleError) as info:
        export_run(run)
    assert str(info.value) == f"{run / 'resolved_config.yaml'} is not a mapping of config keys"


def test_export_of_hydra_config_with_interpolations_names_the_key(ckpts, tmp_path):
    cfg = {"data": {"img_size": 48, "max_pixels": "${oc.env:PIXELS}"}}
    run = make_run(tmp_path, ckpts[0], cfg=cfg, config_file=".hydra/config.yaml")
    with pytest.raises(BundleError) as info:
        export_run(run)
    assert str(info.value) == ("config key data.max_pixels='${oc.env:PIXELS}' is an unresolved interpolation; "
                               "export needs resolved_config.yaml")
    assert not (run / MODEL_DIR).exists()


# -- export: best_checkpoint ------------------------------------------------------------------------
def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_best_checkpoint_is_metrics_json_best_before_last(tmp_path):
    run = tmp_path / "run"
    best = touch(run / "checkpoints" / "epoch=01-step=4.ckpt")
    touch(run / "checkpoints" / "last.ckpt")
    (run / "metrics.json").write_text(json.dumps({"best_checkpoint": "checkpoints/epoch=01-step=4.ckpt"}))
    assert best_checkpoint(run) == best


def test_best_checkpoint_recorded_elsewhere_is_found_by_name_in_checkpoints(tmp_path):
    """A run copied from another machine: metrics.json names the old absolute path; the file is in checkpoints/."""
    run = tmp_path / "run"
    here = touch(run / "checkpoints" / "epoch=03.ckpt")
    touch(run / "checkpoints" / "last.ckpt")
    (run / "metrics.json").write_text(json.dumps({"best_checkpoint": "/gone/elsewhere/checkpoints/epoch=03.ckpt"}))
    assert best_checkpoint(run) == here


@pytest.mark.parametrize("metrics", [None, {"test/acc": 0.5}, {"best_checkpoint": None},
                                     {"best_checkpoint": "checkpoints/removed.ckpt"}],
                         ids=["no-metrics", "no-key", "null", "missing-file"])
def test_best_checkpoint_falls_back_to_last(metrics, tmp_path):
    run = tmp_path / "run"
    last = touch(run / "checkpoints" / "last.ckpt")
    touch(run / "checkpoints" / "epoch=00.ckpt")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    assert best_checkpoint(run) == last


def test_best_checkpoint_error_lists_candidates_and_checkpoints_found(tmp_path):
    run = tmp_path / "run"
    for name in ("epoch=09.ckpt", "epoch=10.ckpt", "notes.txt", "last.CKPT.bak"):
        touch(run / "checkpoints" / name)
    (run / "metrics.json").write_text(json.dumps({"best_checkpoint": "old/best.ckpt"}))
    with pytest.raises(BundleError) as info:
        best_checkpoint(run)
    looked = [str(run / "old" / "best.ckpt"), str(run / "checkpoints" / "best.ckpt"), str(run / "checkpoints" / "last.ckpt")]
    assert str(info.value) == (f"{run} has no best or last checkpoint (looked for {looked}; "
                               "checkpoints found: ['epoch=09.ckpt', 'epoch=10.ckpt']); pass one with --checkpoint")


def test_best_checkpoint_error_without_checkpoints_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(BundleError) as info:
        best_checkpoint(run)
    assert str(info.value) == (f"{run} has no best or last checkpoint (looked for {[str(run / 'checkpoints' / 'last.ckpt')]}; "
                               "checkpoints found: []); pass one with --checkpoint")


# -- export: load_checkpoint_module ----------------------------------------------------------------
def test_load_checkpoint_module_rebuilds_the_weights_in_eval_mode(counters, ckpts):
    module = load_checkpoint_module(ckpts[0])
    assert not module.training and not module.backbone.training
    assert dict(module.hparams) == dict(counters[0].hparams)
    import torch

    state, expected = module.state_dict(), counters[0].state_dict()
    assert sorted(state) == sorted(expected) and all(torch.equal(state[k], expected[k]) for k in expected)


def test_load_checkpoint_module_ignores_the_training_weights_source(counters, tmp_path, monkeypatch):
    """Trained from pretrained weights or a local file: neither is fetched again (offline, the file gone)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = save_ckpt(tmp_path / "p.ckpt", counters[1], pretrained=True, weights_file=str(tmp_path / "gone.safetensors"))
    module = load_checkpoint_module(path)
    assert (module.hparams.pretrained, module.hparams.weights_file) == (False, None)
    assert_state_equal(module, counters[1])


def assert_state_equal(a, b) -> None:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k]) for k in sb)


@pytest.mark.parametrize("drop", ["hyper_parameters", "state_dict", "backbone"])
def test_load_checkpoint_module_refuses_other_checkpoints(drop, counters, tmp_path):
    import torch

    ckpt = {"hyper_parameters": dict(counters[0].hparams), "state_dict": counters[0].state_dict()}
    if drop == "backbone":
        del ckpt["hyper_parameters"]["backbone"]
    elif drop == "hyper_parameters":
        ckpt["hyper_parameters"] = None
    else:
        del ckpt["state_dict"]
    path = tmp_path / "other.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(BundleError) as info:
        load_checkpoint_module(path)
    assert str(info.value) == f"{path} has no bincount hyper_parameters/state_dict: not a BinCounter checkpoint"


def test_load_checkpoint_module_never_unpickles_objects(counters, tmp_path, monkeypatch):
    import pickle

    import torch

    from bincount import safe_checkpoint

    path = tmp_path / "pickled.ckpt"
    torch.save({"hyper_parameters": dict(counters[0].hparams), "state_dict": counters[0].state_dict(),
                "loops": {"ratio": Fraction(1, 3)}}, path)
    with pytest.raises(BundleError) as e:  # the first guard: bincount's own reading of the pickle
        load_checkpoint_module(path)
    assert str(e.value).startswith(f"{path} would import ['fractions Fraction']; ")
    monkeypatch.setattr(safe_checkpoint, "check_checkpoint", lambda p: None)  # without it, torch's guard holds
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint_module(path)


# -- export_run -------------------------------------------------------------------------------------
def test_export_run_bundle_values(counters, ckpts, tmp_path):
    run = make_run(tmp_path, ckpts[0], name="epoch=01-step=4.ckpt")
    shutil.copyfile(ckpts[1], run / "checkpoints" / "last.ckpt")  # metrics.json's best comes first
    out = export_run(run)
    assert out == run / MODEL_DIR and sorted(os.listdir(out)) == [BUNDLE_FILE, WEIGHTS_FILE]
    meta = read_bundle(out)
    assert meta["run"] == {"id": "2024-05-01_12-00-00", "parent": "runs", "checkpoint": "checkpoints/epoch=01-step=4.ckpt",
                           "precision": "bf16-mixed"}
    assert meta["metrics"] == {"test/acc": 0.123457, "test/rmse": 0.000123457, "val/mae": 2.0}
    pre = meta["preprocess"]
    assert (pre["resize"], pre["input_size"], pre["mean"], pre["std"], pre["max_pixels"], pre["interpolation"]) == (
        [48, 48], [3, 48, 48], TEST_RESNET_STATS, TEST_RESNET_STATS, 250_000, "bilinear")
    assert meta["classes"] == {"min_count": 1, "max_count": 5, "overflow": "drop", "counts": [1, 2, 3, 4, 5],
                               "meaning": {"0": "1", "1": "2", "2": "3", "3": "4", "4": "5"}}
    assert meta["model"] == {"backbone": "test_resnet", "num_classes": 5, "head": {"name": "linear"},
                             "drop_rate": 0.0, "channels_last": False}
    assert meta["trained_on"] == {"data": "synthetic", "counts": [1, 5], "input_size": 48, "image_size": [64, 64]}
    assert_weights_of(out, counters[0])


def test_export_run_defaults_from_an_empty_config_and_no_metrics(counters, ckpts, tmp_path):
    run = make_run(tmp_path, ckpts[1], cfg=None, metrics=None)
    (run / "resolved_config.yaml").write_text("")  # empty: every setting takes its default
    out = export_run(str(run), str(tmp_path / "elsewhere"))
    assert out == tmp_path / "elsewhere" and not (run / MODEL_DIR).exists()
    meta = read_bundle(out)
    pre = meta["preprocess"]
    assert (pre["resize"], pre["max_pixels"]) == ([128, 128], 40_000_000)
    assert meta["classes"]["overflow"] == "clip" and meta["classes"]["meaning"]["4"] == ">=5"
    assert meta["run"] == {"id": "2024-05-01_12-00-00", "parent": "runs", "checkpoint": "checkpoints/last.ckpt",
                           "precision": None}
    assert meta["metrics"] == {}
    assert meta["trained_on"] == {"data": "abid", "counts": [0, 0], "input_size": 128, "image_size": None}
    assert_weights_of(out, counters[1])


def test_export_run_reads_hydra_config_when_there_is_no_resolved_one(ckpts, tmp_path):
    cfg = {"data": {"img_size": 24, "classes": {"overflow": "fail"}}}
    run = make_run(tmp_path, ckpts[0], cfg=cfg, config_file=".hydra/config.yaml")
    meta = read_bundle(export_run(run))
    assert meta["preprocess"]["resize"] == [24, 24] and meta["classes"]["overflow"] == "fail"
    (run / "resolved_config.yaml").write_text(yaml.safe_dump({"data": {"img_size": 20}}))  # it comes first
    meta = read_bundle(export_run(run, run / "again"))
    assert meta["preprocess"]["resize"] == [20, 20] and meta["classes"]["overflow"] == "clip"


def test_export_run_with_a_checkpoint_outside_the_run(counters, ckpts, tmp_path):
    run = make_run(tmp_path, ckpts[0])  # last.ckpt holds model a; the checkpoint passed holds model b
    out = export_run(run, checkpoint=ckpts[1])
    meta = read_bundle(out)
    assert meta["run"]["checkpoint"] == str(ckpts[1])
    assert_weights_of(out, counters[1])


def test_export_run_with_a_checkpoint_inside_the_run_records_it_relative(counters, ckpts, tmp_path):
    run = make_run(tmp_path, ckpts[0])
    shutil.copyfile(ckpts[1], run / "checkpoints" / "epoch=07.ckpt")
    out = export_run(run, checkpoint=str(run / "checkpoints" / "epoch=07.ckpt"))
    assert read_bundle(out)["run"]["checkpoint"] == "checkpoints/epoch=07.ckpt"
    assert_weights_of(out, counters[1])


def test_export_run_refuses_a_missing_run_or_checkpoint(ckpts, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        export_run(tmp_path / "nope")
    assert str(info.value) == (f"{tmp_path / 'nope'} is not a directory "
                               "(a run directory holds checkpoints/ and resolved_config.yaml)")
    run = make_run(tmp_path, ckpts[0])
    with pytest.raises(FileNotFoundError) as info:
        export_run(run, checkpoint=run / "checkpoints" / "typo.ckpt")
    assert str(info.value) == f"checkpoint {run / 'checkpoints' / 'typo.ckpt'} does not exist"
    assert not (run / MODEL_DIR).exists()


def test_export_run_without_any_checkpoint(tmp_path):
    run = make_run(tmp_path, None, metrics={"test/acc": 0.5})
    with pytest.raises(BundleError, match=r"has no best or last checkpoint .*checkpoints found: \[\]\); pass one"):
        export_run(run)


# -- the eval preprocessing a bundle records is the run's (a fault found by these tests: it was always bilinear)
def test_write_run_bundle_records_the_datamodules_interpolation(counters, tmp_path, monkeypatch):
    """Training's eval transform resizes with the DataModule's interpolation (timm's bicubic for resnet50);
    the bundle must say the same, or `bincount predict` preprocesses unlike the run's predictions.csv."""
    from bincount.data.datamodule import BinCountDataModule

    monkeypatch.delenv(SM_MODEL_DIR, raising=False)
    dm = BinCountDataModule(root=str(tmp_path / "synthetic"), classes={"min_count": 1, "max_count": 5},
                            synthetic={"size": 56, "num_images": 10}, img_size=36, num_workers=0,
                            interpolation="bicubic")
    meta = read_bundle(write_run_bundle(tmp_path / "run", counters[0], dm, {}, precision=None))
    assert meta["preprocess"]["interpolation"] == "bicubic"
    assert dm._transform("val").transforms[0].interpolation.value == "bicubic"  # what the run evaluated with


def test_export_run_takes_interpolation_mean_std_from_the_config_before_the_backbones(ckpts, tmp_path):
    cfg = {"data": {"img_size": 40, "interpolation": "bicubic", "mean": [0.1, 0.2, 0.3], "std": [0.3, 0.3, 0.3]}}
    pre = read_bundle(export_run(make_run(tmp_path, ckpts[0], cfg=cfg)))["preprocess"]
    assert (pre["interpolation"], pre["mean"], pre["std"]) == ("bicubic", [0.1, 0.2, 0.3], [0.3, 0.3, 0.3])


def test_export_run_takes_what_the_config_leaves_null_from_the_backbone(ckpts, tmp_path):
    cfg = {"data": {"img_size": 40, "interpolation": None, "mean": [0.1, 0.2, 0.3], "std": None}}
    pre = read_bundle(export_run(make_run(tmp_path, ckpts[0], cfg=cfg)))["preprocess"]
    assert (pre["interpolation"], pre["mean"], pre["std"]) == ("bilinear", [0.1, 0.2, 0.3], TEST_RESNET_STATS)


def test_with_backbone_defaults_fills_only_the_null_keys():
    from bincount.data.transforms import with_backbone_defaults

    backbone = {"interpolation": "bicubic", "mean": (0.4, 0.4, 0.4), "std": (0.2, 0.2, 0.2), "crop_pct": 0.9}
    data = {"img_size": 64, "interpolation": None, "mean": [0.5, 0.5, 0.5]}
    assert with_backbone_defaults(data, backbone) == {"img_size": 64, "interpolation": "bicubic",
                                                      "mean": [0.5, 0.5, 0.5], "std": (0.2, 0.2, 0.2)}
    assert data == {"img_size": 64, "interpolation": None, "mean": [0.5, 0.5, 0.5]}  # the caller's dict is kept
