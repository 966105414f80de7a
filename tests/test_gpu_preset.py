"""``trainer=gpu``'s performance defaults compose and train (on the CPU here), workers follow the machine,
and ``model.compile=true`` trains through torch.compile with its warm-up reported apart."""

from __future__ import annotations

import json

import pytest
from helpers.metrics import assert_val_metrics_add_up
from helpers.train import TINY, compose_cfg

from bincount.resolvers import loader_workers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu_preset_data")


def run(overrides, data_dir, tmp_path, monkeypatch) -> dict:
    from bincount.train import train

    monkeypatch.setenv("BINCOUNT_DATA_DIR", str(data_dir))
    cfg = compose_cfg([*TINY, "logger=none", "test=false", f"paths.output_dir={tmp_path}", *overrides], tmp_path)
    train(cfg)
    return cfg, json.loads((tmp_path / "metrics.json").read_text())


@pytest.mark.slow
def test_gpu_preset_sets_what_it_says_and_trains(data_dir, tmp_path, monkeypatch):
    # The preset, with only the device swapped for the CPU this machine has (bf16 autocast runs on CPUs too).
    cfg, metrics = run(["trainer=gpu", "trainer.accelerator=cpu", "trainer.max_epochs=1", "data.num_workers=1",
                        "data.pin_memory=false"], data_dir, tmp_path, monkeypatch)
    assert (cfg.trainer.precision, cfg.trainer.benchmark, cfg.model.channels_last) == ("bf16-mixed", True, True)
    assert (cfg.data.prefetch_factor, cfg.optimizer.fused) == (4, True)
    train, batch_size = metrics["data_quality"]["splits"]["train"], cfg.data.batch_size
    train_batches = train // batch_size + (train % batch_size > 1)  # a last batch of one sample is dropped
    assert metrics["global_steps"] == train_batches * metrics["epochs_trained"] > 0  # every batch, none twice
    assert_val_metrics_add_up(metrics)  # bf16 autocast scored every val image once, into a consistent accuracy
    from bincount.train import build_datamodule, build_model

    datamodule = build_datamodule(cfg, build_model(cfg).data_config)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert (loader.prefetch_factor, loader.num_workers) == (4, 1)
    composed = compose_cfg(["trainer=gpu"], tmp_path)
    assert composed.data.pin_memory is True and composed.data.persistent_workers is True
    assert composed.data.num_workers == loader_workers(1)


def test_loader_workers_follow_sagemakers_cpu_count(monkeypatch):
    monkeypatch.setenv("SM_NUM_CPUS", "4")  # a g5.xlarge
    assert loader_workers(1) == 3
    monkeypatch.setenv("SM_NUM_CPUS", "96")
    assert loader_workers(1) == 16
    monkeypatch.setenv("SM_NUM_CPUS", "1")
    assert loader_workers(1) == 1


@pytest.mark.slow
def test_compiled_training_reports_its_warmup_apart(data_dir, tmp_path, monkeypatch):
    # backend=eager: TorchDynamo captures the graphs (the part that breaks on unsupported code) without
    # inductor's C++ build, which takes minutes on 2 cores; the GPU benchmark uses inductor.
    from torch._dynamo.utils import counters

    counters.clear()
    cfg, metrics = run(["model.compile=true", "model.compile_backend=eager", "trainer.max_epochs=1"],
                       data_dir, tmp_path, monkeypatch)
    assert counters["stats"]["unique_graphs"] > 0, "TorchDynamo captured no graph: the model was not compiled"
    timing = metrics["step_timing"]
    assert timing["compiled"] is True and timing["warmup_s"] > 0 and timing["steady_step_s"] > 0
    assert (tmp_path / "model" / "model.safetensors").is_file()  # the bundle holds the original module's weights
    from bincount.bundle import load_model

    model = load_model(tmp_path)  # weights without a torch.compile prefix: the bundle loads by name
    assert not any(k.startswith("_orig_mod") for k in model.module.state_dict())
