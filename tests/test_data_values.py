"""What the data path computes, checked by value: the GPU decoder's CPU fallback keeps ``data.max_pixels``,
and ``augment=flip``/``light`` mirror training images (and only training images).

The decoder runs with ``device="cpu"``: the same ``BatchDecoder`` code as on CUDA (see test_gpu_decode.py).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bincount.data.gpu_decode import BatchDecoder
from bincount.data.transforms import build_transform
from bincount.layout import DataError
from bincount.samples import collate_skipping_bad, encoded_image

SEEDS = range(32)  # a fair coin shows both sides in 32 seeded draws (flip: 15 of them mirrored)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def bogus_huffman(jpeg: bytes) -> bytes:
    """Complete, with a sane frame header, but a Huffman table no decoder accepts: the device decode fails."""
    out = bytearray(jpeg)
    dht = out.find(b"\xff\xc4")
    out[dht + 5: dht + 21] = b"\xff" * 16
    return bytes(out)


def encoded_batch(blobs: list[bytes]) -> dict:
    """A collated ``data.decode=gpu`` batch, ids 00001.., as the loader workers hand it over.

    The workers' header check runs with the default limit: the decoder's own ``max_pixels`` is the guard
    under test, so it must hold even for bytes that reached it from elsewhere (a shard packed with
    another limit).
    """
    return collate_skipping_bad([{"image": encoded_image(b), "label": k, "index": k, "id": f"{k + 1:05d}"}
                                 for k, b in enumerate(blobs)])


def decoder(max_pixels: int, bad_input: str = "skip") -> BatchDecoder:
    return BatchDecoder(build_transform(16, train=True), build_transform(16, train=False), bad_input,
                        max_pixels=max_pixels, device="cpu")


# -- the decoder's CPU fallback keeps data.max_pixels ------------------------------------------------
def test_a_png_above_max_pixels_is_skipped_with_its_size_not_decoded_on_the_cpu():
    """nvJPEG reads JPEG only, so a PNG always takes the CPU fallback: that fallback must refuse a bomb."""
    batch = encoded_batch([encode(noise(10, 10), "JPEG"), encode(noise(21, 30), "PNG")])
    out = decoder(max_pixels=600)(batch, train=False)
    assert out["id"] == ["00001"] and out["label"].tolist() == [0] and out["image"].shape == (1, 3, 16, 16)
    assert out["bad"] == [("00002", "bin-images/00002.jpg: image too large: 30x21 = 630 pixels declared, "
                                    "above the limit of 600 (data.max_pixels)")]


def test_a_png_above_max_pixels_fails_the_run_under_bad_input_fail():
    batch = encoded_batch([encode(noise(21, 30), "PNG")])
    with pytest.raises(DataError, match=r"^bin 00001 \(bin-images/00001\.jpg: image too large: 30x21 = 630 pixels "
                                        r"declared, above the limit of 600 \(data\.max_pixels\)\) \(bad_input='fail'"):
        decoder(max_pixels=600, bad_input="fail")(batch, train=False)


def test_a_jpeg_the_device_cannot_decode_is_refused_for_its_size_on_the_cpu():
    """The device decode fails first (bogus Huffman table); the CPU retry must check the size before decoding."""
    batch = encoded_batch([encode(noise(10, 10), "JPEG"), bogus_huffman(encode(noise(40, 50, seed=1), "JPEG"))])
    out = decoder(max_pixels=1999)(batch, train=False)
    assert out["id"] == ["00001"] and out["image"].shape == (1, 3, 16, 16)
    ((sample_id, reason),) = out["bad"]
    assert sample_id == "00002" and reason.startswith("bin-images/00002.jpg: decoding on cpu failed (")
    assert reason.endswith("and on the CPU: image too large: 50x40 = 2,000 pixels declared, above the limit of "
                           "1,999 (data.max_pixels)")


def test_at_max_pixels_the_cpu_fallback_still_decodes_the_exact_pixels():
    """The limit is "above max_pixels": an image of exactly max_pixels is an ordinary image."""
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:, :15] = 200
    out = decoder(max_pixels=600)(encoded_batch([encode(pixels, "PNG")]), train=False)
    expected = build_transform(16, train=False)(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
    assert out["bad"] == [] and torch.equal(out["image"][0], expected)


# -- augment=flip mirrors training images ------------------------------------------------------------
def asymmetric(size: int = 16) -> torch.Tensor:
    """A uint8 3xHxW image whose mirror differs everywhere: a left-to-right ramp in red, a stripe in green."""
    image = torch.zeros((3, size, size), dtype=torch.uint8)
    image[0] = torch.arange(size, dtype=torch.uint8).mul(255 // size).expand(size, size)
    image[1, :, : size // 4] = 255
    return image


def mirrored_draws(augment: str, train: bool = True) -> list[bool]:
    """Whether each seeded draw of the transform gave the mirror image; asserts it gave one of the two."""
    image = asymmetric()
    plain = build_transform(16, train=False)(image)
    mirror = plain.flip(-1)
    assert not torch.equal(plain, mirror)
    transform = build_transform(16, train=train, augment=augment)
    draws = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        out = transform(image)
        assert torch.equal(out, plain) or torch.equal(out, mirror), f"seed {seed}: neither the image nor its mirror"
        draws.append(torch.equal(out, mirror))
    return draws


def test_augment_flip_mirrors_about_half_of_the_training_images_exactly():
    draws = mirrored_draws("flip")
    assert 8 <= sum(draws) <= 24, draws  # p=0.5; both orientations appear


@pytest.mark.parametrize(("augment", "train"), [("none", True), ("flip", False), ("light", False)])
def test_without_training_augmentation_nothing_is_ever_mirrored(augment, train):
    assert not any(mirrored_draws(augment, train=train))


def test_augment_light_mirrors_too():
    """light crops first (at least 70% of the area, aspect near 1), so the left edge always comes from the
    left part of the image: bright red on the left edge means unmirrored, on the right edge mirrored."""
    image = torch.zeros((3, 32, 32), dtype=torch.uint8)
    image[0, :, :16] = 255
    transform = build_transform(16, train=True, augment="light", mean=(0, 0, 0), std=(1, 1, 1))
    mirrored = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        red = transform(image)[0]
        left, right = red[:, 0].mean().item(), red[:, -1].mean().item()
        assert {round(left), round(right)} == {0, 1}, (seed, left, right)
        mirrored.append(right > left)
    assert 8 <= sum(mirrored) <= 24, mirrored
