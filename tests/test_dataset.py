"""BinImageDataset decoding and the skip/fail policy; collate with bad samples, through worker processes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bincount.data.dataset import BinImageDataset
from bincount.layout import DataError
from bincount.manifest import ClassRange, ManifestRow, build_manifest
from bincount.samples import BadImage, collate_skipping_bad, decode_image_bytes
from bincount.data.transforms import build_transform


def rows_of(root: Path, cache: Path, **kwargs) -> list[ManifestRow]:
    m = build_manifest(root, cache_dir=cache, progress=False, class_range=ClassRange(0, 6), **kwargs)
    return sorted(m.rows, key=lambda r: r.id)


def damage_images(root: Path) -> dict[str, str]:
    """Damage five images and return id -> expected reason fragment."""
    img = root / "bin-images"
    (img / "00001.jpg").write_bytes(b"not an image at all")
    data = (img / "00002.jpg").read_bytes()
    (img / "00002.jpg").write_bytes(data[: len(data) * 2 // 3])
    (img / "00003.jpg").unlink()
    (img / "00004.jpg").write_bytes(b"")
    (img / "00005.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)
    return {"00001": "cannot decode", "00002": "truncated", "00003": "image missing", "00004": "empty file",
            "00005": "corrupt or truncated"}


def test_good_sample_without_transform(tiny_abid, tmp_path):
    rows = rows_of(tiny_abid, tmp_path)
    ds = BinImageDataset(tiny_abid, rows)
    sample = ds[2]
    assert set(sample) == {"image", "label", "index", "id"}
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 24, 32)
    assert sample["label"] == rows[2].label and sample["index"] == 2 and sample["id"] == rows[2].id


def test_transform_gets_uint8_chw(tiny_abid, tmp_path):
    seen = []
    ds = BinImageDataset(tiny_abid, rows_of(tiny_abid, tmp_path), transform=lambda x: seen.append(x) or x.float())
    ds[0]
    assert seen[0].dtype == torch.uint8 and seen[0].shape[0] == 3


def test_bad_images_skipped_with_reasons(tiny_abid_copy, tmp_path):
    rows = rows_of(tiny_abid_copy, tmp_path)  # manifest built before the damage
    expected = damage_images(tiny_abid_copy)
    ds = BinImageDataset(tiny_abid_copy, rows)
    for i in range(5):
        sample = ds[i]
        assert set(sample) == {"bad", "index"} and sample["index"] == i
        id_, reason = sample["bad"]
        assert id_ == rows[i].id and expected[id_] in reason and f"bin-images/{id_}.jpg" in reason
    assert "image" in ds[5]


@pytest.mark.parametrize("i", range(5))
def test_bad_images_fail_names_file(tiny_abid_copy, tmp_path, i):
    rows = rows_of(tiny_abid_copy, tmp_path)
    expected = damage_images(tiny_abid_copy)
    ds = BinImageDataset(tiny_abid_copy, rows, bad_input="fail")
    with pytest.raises(DataError, match=rf"{rows[i].id}\.jpg: .*{expected[rows[i].id]}"):
        ds[i]


def test_truncated_real_jpeg_detected(abid_sample_dir):
    data = (abid_sample_dir / "bin-images" / "00001.jpg").read_bytes()
    assert decode_image_bytes(data).shape[0] == 3
    for cut in (0.3, 0.9, 0.999):
        with pytest.raises(BadImage, match="truncated"):
            decode_image_bytes(data[: int(len(data) * cut)])


def test_real_sample_with_transform(abid_sample_dir, tmp_path):
    m = build_manifest(abid_sample_dir, cache_dir=tmp_path, progress=False)
    ds = BinImageDataset(abid_sample_dir, m.split("val")[:4], transform=build_transform(64, train=False))
    batch = collate_skipping_bad([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (4, 3, 64, 64) and batch["bad"] == []


def test_corrupt_jpeg_header_falls_back_then_fails():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    assert decode_image_bytes(bytes(data)).shape == (3, 8, 8)
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = b"\x00\x00"  # height 0
    with pytest.raises(BadImage, match=r"corrupt JPEG \(.*\); cannot decode"):
        decode_image_bytes(bytes(data))


def test_non_jpeg_decoded_with_pil():
    buf = io.BytesIO()
    Image.new("L", (5, 4), 128).save(buf, format="PNG")
    image = decode_image_bytes(buf.getvalue())
    assert image.shape == (3, 4, 5) and image.dtype == torch.uint8 and int(image[1, 2, 3]) == 128


def test_custom_reader_seam(tiny_abid, tmp_path):
    rows = rows_of(tiny_abid, tmp_path)[:2]
    store = {rows[0].image: (tiny_abid / rows[0].image).read_bytes()}
    keys = []

    def reader(key: str) -> bytes:
        keys.append(key)
        return store[key] if key in store else (_ for _ in ()).throw(FileNotFoundError(key))

    ds = BinImageDataset("s3://bucket/prefix", rows, reader=reader)
    assert "image" in ds[0] and ds[1]["bad"] == (rows[1].id, f"{rows[1].image}: image missing")
    assert keys == [rows[0].image, rows[1].image]


def test_path_traversal_in_rows_refused(tiny_abid):
    row = ManifestRow("00001", "../outside.jpg", 1, 0, "train")
    with pytest.raises(DataError, match="unsafe key"):
        BinImageDataset(tiny_abid, [row])[0]


def test_bad_input_choice_validated(tiny_abid):
    with pytest.raises(ValueError, match="bad_input='warn' is not one of skip, fail"):
        BinImageDataset(tiny_abid, [], bad_input="warn")


# ---------------------------------------------------------------------------------------- collate


def good(i: int, label: int = 1) -> dict:
    return {"image": torch.full((3, 4, 4), float(i)), "label": label, "index": i, "id": f"id{i}"}


def test_collate_mixed():
    batch = collate_skipping_bad([good(0), {"bad": ("x", "truncated"), "index": 1}, good(2, 3)])
    assert batch["image"].shape == (2, 3, 4, 4) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == [1, 3] and batch["label"].dtype == torch.long
    assert batch["index"].tolist() == [0, 2] and batch["index"].dtype == torch.long
    assert batch["id"] == ["id0", "id2"] and batch["bad"] == [("x", "truncated")]


def test_collate_all_bad():
    batch = collate_skipping_bad([{"bad": ("a", "r1"), "index": 0}, {"bad": ("b", "r2"), "index": 1}])
    assert batch["image"].shape == (0, 3, 1, 1)
    assert batch["label"].shape == (0,) and batch["label"].dtype == torch.long
    assert batch["index"].shape == (0,) and batch["index"].dtype == torch.long
    assert batch["id"] == [] and batch["bad"] == [("a", "r1"), ("b", "r2")]


def test_dataloader_workers_carry_bad(tiny_abid_copy, tmp_path):
    rows = rows_of(tiny_abid_copy, tmp_path)[:12]
    expected = damage_images(tiny_abid_copy)
    ds = BinImageDataset(tiny_abid_copy, rows, transform=build_transform(16, train=True))
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_skipping_bad)
    batches = list(loader)
    assert batches[0]["label"].numel() == 0 and len(batches[0]["bad"]) == 4  # the all-bad first batch
    bad = [b for batch in batches for b in batch["bad"]]
    assert {id_ for id_, _ in bad} == set(expected)
    assert all(isinstance(b, tuple) and all(isinstance(x, str) for x in b) for b in bad)
    indices = sorted(i for batch in batches for i in batch["index"].tolist())
    assert indices == list(range(5, 12))
    assert all(batch["image"].shape[1:] == (3, 16, 16) for batch in batches[1:])
