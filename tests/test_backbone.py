"""Backbones by name, pretrained weights without a network, freezing policies, staged unfreezing and
the warm-up schedule. Tiny timm models only (``test_resnet``); ResNet50/EfficientNet-B4 are built
without weights to check their stage layout."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from bincount.callbacks import StagedUnfreezing
from bincount.models import backbone as backbone_mod
from bincount.models.backbone import PretrainedWeightsUnavailable, check_backbone_name, create_backbone, save_weights
from bincount.models.freeze import apply_freeze, backbone_stages, num_trainable, unfreeze_last_stages
from bincount.models.schedulers import cosine_with_warmup


def _run_bounded(fn, seconds: float):
    """Run ``fn`` in a daemon thread and fail, instead of hanging, if it takes longer than ``seconds``."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return result, time.monotonic() - start


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """Point the Hugging Face cache at an empty folder, so no previously downloaded weights are found."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_HUB_CACHE", str(tmp_path / "hf"), raising=False)
    return tmp_path / "hf"


# -- names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("typo", ["resnet5O", "resnet51"])
def test_typo_suggests_close_names(typo):
    with pytest.raises(ValueError, match="Did you mean") as info:
        check_backbone_name(typo)
    assert "resnet50" in str(info.value) and repr(typo) in str(info.value)


def test_known_name_passes():
    check_backbone_name("test_resnet")


# -- creation and weights ---------------------------------------------------------------------------
def test_create_returns_pooled_features():
    model = create_backbone("test_resnet", pretrained=False).eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, model.num_features)


def test_local_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("test_resnet", pretrained=False)
    path = save_weights(source, tmp_path / "w" / "test_resnet.safetensors")
    assert path.is_file()
    loaded = create_backbone("test_resnet", pretrained=True, weights_file=str(path))
    expected = source.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=key)
    fresh = create_backbone("test_resnet", pretrained=False)  # the check above is not equal-by-chance
    assert any(not torch.equal(v, expected[k]) for k, v in fresh.state_dict().items() if v.is_floating_point())


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(PretrainedWeightsUnavailable, match="does not exist") as info:
        create_backbone("test_resnet", pretrained=True, weights_file=str(missing))
    assert str(missing) in str(info.value) and "model.weights_file" in str(info.value)


def _assert_offline_error(result, elapsed):
    error = result.get("error")
    assert isinstance(error, PretrainedWeightsUnavailable), result
    message = str(error)
    assert "model.weights_file" in message and "model.pretrained=false" in message
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_pretrained_without_hub_fails_fast(empty_hf_cache, monkeypatch):
    """Deterministic whatever the machine's network: the hub host is a closed local port."""
    monkeypatch.setattr(backbone_mod, "HUB_HOST", ("127.0.0.1", 9))
    result, elapsed = _run_bounded(lambda: create_backbone("test_resnet", pretrained=True), 20)
    _assert_offline_error(result, elapsed)


def test_pretrained_offline_real_probe_fails_fast(empty_hf_cache):
    """The real probe against the real host, as on an offline machine (skipped where the hub answers)."""
    if backbone_mod._hub_reachable(timeout=3.0):
        pytest.skip("the Hugging Face hub is reachable from this machine")
    result, elapsed = _run_bounded(lambda: create_backbone("test_resnet", pretrained=True), 20)
    _assert_offline_error(result, elapsed)


def _plant_in_hf_cache(cache: Path, model: nn.Module, hf_hub_id: str) -> None:
    """Lay out weights as ``hf_hub_download`` leaves them: refs/main -> snapshots/<sha>/model.safetensors."""
    repo = cache / ("models--" + hf_hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    save_weights(model, repo / "snapshots" / ("0" * 40) / "model.safetensors")


def _assert_same_weights(loaded: nn.Module, source: nn.Module) -> None:
    expected = source.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=key)


@pytest.mark.parametrize("offline_value", ["1", "true", "ON"])
def test_hf_hub_offline_loads_the_cache_without_probing(empty_hf_cache, monkeypatch, offline_value):
    """HF_HUB_OFFLINE set after huggingface_hub was imported still counts: the environment is read per call,
    no network probe is made, and the cached file an online run would have downloaded is the one loaded."""
    import timm

    torch.manual_seed(1)
    source = create_backbone("test_resnet")
    _plant_in_hf_cache(empty_hf_cache, source, timm.models.get_pretrained_cfg("test_resnet").hf_hub_id)
    monkeypatch.setenv("HF_HUB_OFFLINE", offline_value)
    monkeypatch.setattr(backbone_mod, "_hub_reachable", lambda *a, **k: pytest.fail("probed the network offline"))
    _assert_same_weights(create_backbone("test_resnet", pretrained=True), source)


def test_unreachable_hub_loads_the_cache(empty_hf_cache, monkeypatch):
    import timm

    torch.manual_seed(2)
    source = create_backbone("test_resnet")
    _plant_in_hf_cache(empty_hf_cache, source, timm.models.get_pretrained_cfg("test_resnet").hf_hub_id)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbone_mod, "HUB_HOST", ("127.0.0.1", 9))
    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    _assert_same_weights(create_backbone("test_resnet", pretrained=True), source)
    # timm was handed the cached file: the unreachable hub is not asked (its retries take ~45 s offline)
    assert [k.get("pretrained_cfg_overlay", {}).get("file", "") for k in calls if k.get("pretrained")] == [
        str(next(empty_hf_cache.rglob("model.safetensors")))]


def test_hf_hub_offline_without_cache_fails_fast(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result, elapsed = _run_bounded(lambda: create_backbone("test_resnet", pretrained=True), 20)
    _assert_offline_error(result, elapsed)
    assert "HF_HUB_OFFLINE" in str(result["error"])


# -- freezing ---------------------------------------------------------------------------------------
def _trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_policies_test_resnet():
    model = create_backbone("test_resnet")
    stages = backbone_stages(model)
    n = len(stages)
    assert n >= 3
    assert sum(len(s) for s in stages) == len(list(model.parameters()))  # every parameter in one stage
    assert apply_freeze(model, "all") == 0 and num_trainable(model) == 0
    assert apply_freeze(model, "none") == n and num_trainable(model) == sum(p.numel() for p in model.parameters())
    for keep in range(n + 1):
        assert apply_freeze(model, "all_but_last", keep) == keep
        expected = {id(p) for s in stages[n - keep:] for p in s}
        assert {id(p) for p in model.parameters() if p.requires_grad} == expected


def test_freeze_errors_name_the_choices():
    model = create_backbone("test_resnet")
    with pytest.raises(ValueError, match="none, all, all_but_last"):
        apply_freeze(model, "some")
    with pytest.raises(ValueError, match="trainable_stages=99"):
        apply_freeze(model, "all_but_last", 99)


def test_resnet50_all_but_last_one_is_layer4():
    """The first report's "freeze all but layer4 and fc" (the fc is the separate head)."""
    model = create_backbone("resnet50", pretrained=False)
    assert len(backbone_stages(model)) == 5  # stem, layer1..layer4
    apply_freeze(model, "all_but_last", 1)
    trainable = _trainable_names(model)
    assert trainable and all(n.startswith("layer4.") for n in trainable)
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("layer4.")}


def test_efficientnet_b4_stages():
    """timm's coarse matcher: stem, blocks.0 .. blocks.6, with conv_head/bn2 merged into the last stage."""
    model = create_backbone("efficientnet_b4", pretrained=False)
    stages = backbone_stages(model)
    assert len(stages) == 8
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in stages[0]} == {"conv_stem", "bn1"}
    assert {_block(names[id(p)]) for p in stages[-1]} == {"blocks.6", "conv_head", "bn2"}
    apply_freeze(model, "all_but_last", 2)
    assert {_block(n) for n in _trainable_names(model)} == {"blocks.5", "blocks.6", "conv_head", "bn2"}


def _block(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]


def test_unfreeze_last_stages_returns_newly_trainable():
    model = create_backbone("test_resnet")
    apply_freeze(model, "all")
    stages = backbone_stages(model)
    newly = unfreeze_last_stages(model, 1)
    assert {id(p) for p in newly} == {id(p) for p in stages[-1]}
    assert unfreeze_last_stages(model, 1) == []  # idempotent
    assert unfreeze_last_stages(model, 0) == []


# -- staged unfreezing --------------------------------------------------------------------------------
class TinyCounter(L.LightningModule):
    """A test_resnet backbone and a linear head: the shape StagedUnfreezing expects (``.backbone``)."""

    def __init__(self, policy: str = "all", trainable_stages: int = 0):
        super().__init__()
        self.backbone = create_backbone("test_resnet")
        self.head = nn.Linear(self.backbone.num_features, 3)
        apply_freeze(self.backbone, policy, trainable_stages)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def test_staged_unfreezing_finetune_function_directly():
    module = TinyCounter("all")
    stages = backbone_stages(module.backbone)
    optimizer = module.configure_optimizers()
    callback = StagedUnfreezing({1: 1, 2: 2}, lr_scale=0.1)
    callback.finetune_function(module, 0, optimizer)
    assert len(optimizer.param_groups) == 1 and num_trainable(module.backbone) == 0
    callback.finetune_function(module, 1, optimizer)
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.01)
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == {id(p) for p in stages[-1]}
    assert all(p.requires_grad for p in stages[-1]) and not any(p.requires_grad for p in stages[-2])
    callback.finetune_function(module, 1, optimizer)  # idempotent within an epoch
    assert len(optimizer.param_groups) == 2
    callback.finetune_function(module, 2, optimizer)
    assert len(optimizer.param_groups) == 3
    assert {id(p) for p in optimizer.param_groups[2]["params"]} == {id(p) for p in stages[-2]}


def test_staged_unfreezing_schedule_validation():
    with pytest.raises(ValueError, match="epochs >= 0"):
        StagedUnfreezing({-1: 1})


class _GroupRecorder(L.Callback):
    def __init__(self):
        self.groups: list[int] = []
        self.trainable: list[int] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.groups.append(len(trainer.optimizers[0].param_groups))
        self.trainable.append(num_trainable(pl_module.backbone))


def test_staged_unfreezing_in_a_lightning_fit(tmp_path):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    module = TinyCounter("all")
    recorder = _GroupRecorder()
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=[StagedUnfreezing({1: 1, 2: 2}), recorder],
    )
    trainer.fit(module, loader)
    stages = backbone_stages(module.backbone)
    last_two = sum(p.numel() for s in stages[-2:] for p in s)
    assert recorder.groups == [1, 2, 3]
    assert recorder.trainable[0] == 0 and recorder.trainable[2] == last_two
    assert 0 < recorder.trainable[1] < last_two


# -- schedules -------------------------------------------------------------------------------------
def _trajectory(scheduler, epochs: int) -> list[float]:
    lrs = []
    for _ in range(epochs):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_with_warmup_trajectory():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, max_epochs=10, warmup_epochs=2, warmup_start_factor=0.1, eta_min=0.01)
    lrs = _trajectory(sched, 11)
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.55)  # linear warm-up
    assert lrs[2] == pytest.approx(1.0)  # peak at the end of warm-up
    for t in range(9):  # cosine from the peak down to eta_min over the remaining 8 epochs
        assert lrs[2 + t] == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * t / 8)) / 2, abs=1e-6)
    assert lrs[10] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(lrs[2:10], lrs[3:11]))


def test_cosine_with_warmup_degenerate_cases():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = _trajectory(cosine_with_warmup(opt, max_epochs=4, warmup_epochs=0), 5)
    assert lrs[0] == pytest.approx(1.0) and lrs[4] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="max_epochs=0"):
        cosine_with_warmup(opt, max_epochs=0)
