"""build_transform: shapes and dtypes for every augment level, count-safe crop scales, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from bincount.data.transforms import AUGMENT_CHOICES, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, build_transform


def image(h: int = 30, w: int = 40) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8)


def parts(transform: v2.Compose, kind: type) -> list:
    return [t for t in transform.transforms if isinstance(t, kind)]


@pytest.mark.parametrize("augment", AUGMENT_CHOICES)
@pytest.mark.parametrize("train", [True, False])
def test_output_shape_and_dtype(augment, train):
    torch.manual_seed(0)
    out = build_transform(24, train=train, augment=augment)(image())
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32


def test_eval_normalizes_with_given_stats():
    grey = torch.full((3, 10, 10), 255, dtype=torch.uint8)
    out = build_transform(8, train=False)(grey)
    expected = [(1 - m) / s for m, s in zip(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
    assert torch.allclose(out.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4)
    plain = build_transform(8, train=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(grey)
    assert torch.allclose(plain, torch.ones_like(plain))


def test_eval_and_none_are_deterministic_resize_without_crop():
    x = image()
    assert torch.equal(build_transform(16, train=False)(x), build_transform(16, train=True, augment="none")(x))
    assert not parts(build_transform(16, train=False), v2.RandomResizedCrop)
    assert not parts(build_transform(16, train=False), v2.CenterCrop)


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_count_safe_crops_are_mild(augment):
    (crop,) = parts(build_transform(16, train=True, augment=augment), v2.RandomResizedCrop)
    assert crop.scale[0] >= 0.7
    for erase in parts(build_transform(16, train=True, augment=augment), v2.RandomErasing):
        assert erase.scale[1] <= 0.05


def test_strong_adds_the_documented_jitter_rotation_and_erasing():
    t = build_transform(16, train=True, augment="strong")
    (crop,) = parts(t, v2.RandomResizedCrop)
    assert crop.scale == (0.7, 1.0) and crop.ratio == (3 / 4, 4 / 3)
    (jitter,) = parts(t, v2.ColorJitter)
    assert jitter.brightness == jitter.contrast == jitter.saturation == (0.8, 1.2)
    assert jitter.hue == (-0.02, 0.02)
    assert list(parts(t, v2.RandomRotation)[0].degrees) == [-10.0, 10.0]
    (erase,) = parts(t, v2.RandomErasing)
    assert (erase.p, erase.scale, erase.value) == (0.25, (0.01, 0.04), [0.0])
    assert isinstance(t.transforms[-1], v2.RandomErasing), "erasing after Normalize: 0 is the mean colour"


def _noise_spread(augment: str, train: bool) -> float:
    """Per-pixel spread after shrinking 256 px of noise to 8 px: about 2 with antialiasing (each output
    pixel averages ~32x32 inputs), tens without (it samples a few inputs); aliasing turns fine texture
    into false large structures a counting model would see."""
    torch.manual_seed(0)
    noise = torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8)
    out = build_transform(8, train=train, augment=augment, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))(noise)
    return float(out.std())


@pytest.mark.parametrize(("augment", "train"), [("light", False), ("flip", True), ("light", True),
                                                ("strong", False), ("capstone_refined", True)])
def test_every_resize_antialiases(augment, train):
    if augment == "capstone_refined":  # its crop may keep 8% of the area: 72 px to 8, still a 9x shrink
        assert _noise_spread(augment, train) < 12
    else:
        assert _noise_spread(augment, train) < 5


@pytest.mark.parametrize("interpolation", ["nearest", "bicubic"])
def test_every_preset_resizes_with_the_backbones_interpolation(interpolation):
    mode = {"nearest": v2.InterpolationMode.NEAREST, "bicubic": v2.InterpolationMode.BICUBIC}[interpolation]
    for augment in AUGMENT_CHOICES:
        for train in (True, False):
            t = build_transform(16, train=train, augment=augment, interpolation=interpolation)
            resizes = parts(t, v2.Resize) + parts(t, v2.RandomResizedCrop)
            assert [r.interpolation for r in resizes] == [mode], (augment, train)


@pytest.mark.parametrize("augment", AUGMENT_CHOICES)
def test_the_smallest_image_size_is_two_pixels(augment):
    assert build_transform(2, train=True, augment=augment)(image()).shape == (3, 2, 2)


def test_capstone_refined_matches_report():
    t = build_transform(224, train=True, augment="capstone_refined")
    (crop,) = parts(t, v2.RandomResizedCrop)
    assert crop.scale == (0.08, 1.0)  # torchvision's default, as in the report
    assert parts(t, v2.RandomHorizontalFlip)
    assert list(parts(t, v2.RandomRotation)[0].degrees) == [-15.0, 15.0]
    jitter = parts(t, v2.ColorJitter)[0]
    assert jitter.brightness == jitter.contrast == jitter.saturation == (0.8, 1.2) and jitter.hue is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"augment": "heavy"}, "augment='heavy' is not a valid choice; valid: none, flip, light, strong, capstone_refined"),
        ({"img_size": 1}, "img_size must be an integer >= 2, got 1"),
        ({"img_size": True}, "img_size must be an integer >= 2, got True"),
        ({"img_size": 16.0}, "img_size must be an integer >= 2, got 16.0"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 numbers"),
        ({"std": (0.5, 0.0, 0.5)}, "std must be positive"),
    ],
)
def test_validation(kwargs, message):
    args = {"img_size": 16, "train": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_transform(**args)


def test_the_backbones_preprocessing_reaches_the_transforms(tmp_path, monkeypatch):
    """Issue 18, item 1: a pretrained config asking for bicubic gets bicubic (and its mean/std); the config
    still wins by name."""
    from hydra import compose, initialize_config_dir
    from torchvision.transforms import v2

    from bincount.train import build_datamodule, build_model

    conf = str(Path(__file__).resolve().parents[1] / "conf")

    def datamodule(*overrides):
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose("train", overrides=["model.backbone=resnet18", "model.pretrained=false",
                                              f"paths.output_dir={tmp_path}", *overrides])
        model = build_model(cfg)
        return model.data_config, build_datamodule(cfg, model.data_config)

    def modes(dm):
        return {t.interpolation for split in ("train", "val") for t in dm._transform(split).transforms
                if isinstance(t, (v2.Resize, v2.RandomResizedCrop))}

    timm_cfg, dm = datamodule()
    assert timm_cfg["interpolation"] == "bicubic" and modes(dm) == {v2.InterpolationMode.BICUBIC}
    assert dm.mean == tuple(timm_cfg["mean"])
    _, dm = datamodule("data.interpolation=bilinear", "data.mean=[0.5,0.5,0.5]")
    assert modes(dm) == {v2.InterpolationMode.BILINEAR} and dm.mean == (0.5, 0.5, 0.5)


def test_an_unknown_interpolation_names_the_choices():
    with pytest.raises(ValueError, match="interpolation='lanczos'.*bilinear, bicubic"):
        build_transform(32, train=False, interpolation="lanczos")
