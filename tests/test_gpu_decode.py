"""``data.decode=gpu``: the batched decode gives the CPU path's tensors, bad JPEGs are named, no CUDA is
refused by name, and a tiny run trains through it.

The decode runs with ``device="cpu"`` here: the same ``torchvision.io.decode_jpeg(list, device=...)`` call
and the same transforms that run on CUDA. On the CPU both paths use libjpeg-turbo and the same v2
transforms, so the tensors must be *equal*, not merely close; on CUDA (nvJPEG's IDCT, CUDA's resize
kernels) ``benchmarks/gpu.py`` measures the difference.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import find_sample, write_abid
from PIL import Image
from helpers.metrics import assert_val_metrics_add_up
from helpers.train import TINY, compose_cfg, read_csv

from bincount.data.datamodule import BinCountDataModule
from bincount.data.gpu_decode import BatchDecoder, check_decode
from bincount.data.transforms import build_transform
from bincount.layout import DataError
from bincount.samples import BadImage, collate_skipping_bad, encoded_image

NO_CUDA = r"data\.decode=gpu needs a CUDA device.*torch\.cuda\.is_available\(\) is False.*data\.decode=cpu"


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory) -> Path:
    """The real ABID sample when present; else noise JPEGs of several sizes (ABID photos differ in size)."""
    sample = find_sample()
    if sample is not None:
        return sample
    root = write_abid(tmp_path_factory.mktemp("noise_abid"), [i % 6 for i in range(1, 41)])
    for i, path in enumerate(sorted((root / "bin-images").glob("*.jpg"))):
        size = (400 + 20 * (i % 5), 300 + 30 * (i % 4), 3)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, size, dtype=np.uint8)).save(path, quality=90)
    return root


def datamodule(root: Path, tmp_path: Path, **kw) -> BinCountDataModule:
    dm = BinCountDataModule(str(root), classes={"min_count": 0, "max_count": 5}, img_size=48, batch_size=8,
                            num_workers=0, interpolation="bicubic", cache_dir=str(tmp_path / "manifests"), **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def jpeg(seed: int = 0, size=(40, 50)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def corrupt(data: bytes) -> bytes:
    """Complete, with sane headers (the workers' checks pass), but a bogus Huffman table: no decoder reads it."""
    out = bytearray(data)
    dht = out.find(b"\xff\xc4")
    out[dht + 5: dht + 21] = b"\xff" * 16
    return bytes(out)


def batch_of(blobs: list[bytes], ids: list[str]) -> dict:
    samples = [{"image": encoded_image(b), "label": k % 5, "index": k, "id": i} for k, (b, i) in enumerate(zip(blobs, ids))]
    return collate_skipping_bad(samples)


def decoder(bad_input: str = "skip") -> BatchDecoder:
    return BatchDecoder(build_transform(32, train=True), build_transform(32, train=False), bad_input, device="cpu")


@pytest.mark.parametrize("augment", ["light", "strong"])  # strong: the per-image tail (RandomErasing)
@pytest.mark.parametrize("split", ["train", "val"])
def test_batched_decode_gives_the_cpu_paths_tensors(jpeg_root, tmp_path, split, augment):
    cpu = datamodule(jpeg_root, tmp_path, augment=augment)
    gpu = datamodule(jpeg_root, tmp_path, augment=augment, decode="gpu", decode_device="cpu")
    n = min(12, len(cpu.datasets[split]))
    torch.manual_seed(0)  # the train transforms draw the same crops and flips on both paths
    expected = collate_skipping_bad([cpu.datasets[split][i] for i in range(n)])
    encoded = collate_skipping_bad([gpu.datasets[split][i] for i in range(n)])
    assert all(t.dim() == 1 and t.dtype == torch.uint8 for t in encoded["image"]), "the workers pass bytes"
    torch.manual_seed(0)
    got = gpu.decoder(gpu.transfer_batch_to_device(encoded, torch.device("cpu"), 0), train=split == "train")
    assert got["image"].shape == expected["image"].shape == (n, 3, 48, 48) and n > 1
    assert got["id"] == expected["id"] and torch.equal(got["label"], expected["label"])
    assert (got["image"] - expected["image"]).abs().max().item() == 0.0  # same decoder, same transforms


def test_the_same_tail_runs_once_on_the_batch_and_per_image_draws_stay_per_image():
    from torchvision.transforms import v2

    from bincount.data.gpu_decode import split_transform

    per_image, batched = split_transform(build_transform(32, train=False))
    assert [type(t) for t in per_image.transforms] == [v2.Resize]
    assert [type(t) for t in batched.transforms] == [v2.ToDtype, v2.Normalize]
    strong = build_transform(32, train=True, augment="strong")  # RandomErasing after Normalize: drawn per image
    assert split_transform(strong) == (strong, None)


def test_the_encoded_bytes_stay_in_host_memory_while_the_rest_moves(tmp_path):
    # torchvision's decode_jpeg(device="cuda") wants its inputs on the CPU; "meta" stands in for a GPU here.
    dm = datamodule(write_abid(tmp_path / "abid", [0, 1, 2, 3, 4, 5] * 7), tmp_path, decode="gpu", decode_device="cpu")
    batch = next(iter(dm.train_dataloader()))
    moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert [t.device.type for t in moved["image"]] == ["cpu"] * len(batch["image"])
    assert moved["label"].device.type == "meta"


def test_streamed_shards_carry_the_bytes_and_decode_like_the_files(tiny_abid, tmp_path):
    from bincount.layout import image_key
    from bincount.samples import decode_image_bytes
    from bincount.shards.pack import pack

    pack(str(tiny_abid), str(tmp_path / "shards"), cache_dir=str(tmp_path / "m"), progress=False)
    dm = BinCountDataModule(str(tiny_abid), classes={"min_count": 1, "max_count": 5}, img_size=32, batch_size=8,
                            num_workers=0, persistent_workers=False, decode="gpu", decode_device="cpu",
                            reader={"mode": "shards", "shards": str(tmp_path / "shards")})
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert all(t.dim() == 1 and t.dtype == torch.uint8 for t in batch["image"]), "the workers pass bytes"
    out = dm.decoder(batch, train=False)
    eval_ = dm._transform("val")
    expected = [eval_(decode_image_bytes((tiny_abid / image_key(i)).read_bytes())) for i in out["id"]]
    assert len(expected) == len(batch["image"]) > 1 and torch.equal(out["image"], torch.stack(expected))


@pytest.mark.parametrize("bad_input", ["skip", "fail"])
def test_a_corrupt_jpeg_in_a_batch_is_named_and_the_rest_decode(bad_input):
    blobs = [jpeg(0), corrupt(jpeg(1)), jpeg(2, size=(30, 20))]
    batch = batch_of(blobs, ["00001", "00002", "00003"])
    if bad_input == "fail":
        with pytest.raises(DataError, match=r"bin 00002 \(bin-images/00002\.jpg: .*Bogus Huffman table"):
            decoder("fail")(batch, train=False)
        return
    out = decoder("skip")(batch, train=False)
    assert out["image"].shape == (2, 3, 32, 32) and out["id"] == ["00001", "00003"]
    assert out["label"].tolist() == [0, 2] and out["index"].tolist() == [0, 2]
    ((sample_id, reason),) = out["bad"]
    assert sample_id == "00002" and "bin-images/00002.jpg" in reason and "Bogus Huffman table" in reason
    alone = decoder()(batch_of([jpeg(0), jpeg(2, size=(30, 20))], ["00001", "00003"]), train=False)
    assert torch.equal(alone["image"], out["image"]), "the good images decode as in a batch without the bad one"


def test_the_datamodule_names_the_file_that_no_decoder_reads(tmp_path):
    root = write_abid(tmp_path / "abid", [0, 1, 2, 3, 4, 5] * 7)
    bad = root / "bin-images" / "00003.jpg"
    bad.write_bytes(corrupt(bad.read_bytes()))
    dm = datamodule(root, tmp_path, decode="gpu", decode_device="cpu", bad_input="fail")
    split = next(s for s in ("train", "val", "test") if "00003" in dm.split_ids(s))
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    with pytest.raises(DataError, match=rf"bin 00003 \({bad}: decoding on cpu failed .*Bogus Huffman"):
        for batch in loader:
            dm.decoder(batch, train=False)


def test_an_all_bad_batch_is_an_empty_batch_that_still_reports():
    out = decoder()(batch_of([corrupt(jpeg(1))], ["00007"]), train=True)
    assert out["image"].shape[0] == 0 and out["label"].numel() == 0 and out["bad"][0][0] == "00007"


def test_a_png_is_decoded_on_the_cpu_beside_the_jpegs():
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8)).save(buf, "PNG")
    out = decoder("fail")(batch_of([jpeg(0), buf.getvalue()], ["00001", "00002"]), train=False)
    expected = build_transform(32, train=False)(torch.full((3, 20, 30), 200, dtype=torch.uint8))
    assert out["image"].shape == (2, 3, 32, 32) and torch.equal(out["image"][1], expected)


def test_the_workers_still_refuse_what_needs_no_pixel():
    with pytest.raises(BadImage, match="truncated JPEG"):
        encoded_image(jpeg(0)[:-200])
    with pytest.raises(BadImage, match="image too large"):
        encoded_image(jpeg(0), max_pixels=100)


def test_gpu_decode_without_cuda_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=NO_CUDA):
        check_decode("gpu", None)
    with pytest.raises(ValueError, match=NO_CUDA):
        check_decode("gpu", "cuda:0")
    with pytest.raises(ValueError, match=NO_CUDA):
        BinCountDataModule(str(tmp_path), decode="gpu")
    from bincount.config import ConfigError, check_config

    with pytest.raises(ConfigError, match=NO_CUDA):
        check_config(compose_cfg(["data.decode=gpu"], tmp_path))
    assert check_decode("gpu", "cpu") == torch.device("cpu")  # the same code on the CPU, on request


def test_bad_decode_settings_name_the_choices(tmp_path):
    from bincount.config import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"data\.decode='nvjpeg' is not a valid choice; valid: cpu, gpu"):
        check_config(compose_cfg(["data.decode=nvjpeg"], tmp_path))
    with pytest.raises(ValueError, match=r"data\.decode_device='mps' is not a valid choice; valid: null"):
        check_decode("gpu", "mps")
    with pytest.raises(ValueError, match=r"data\.decode_device='cpu' applies to data\.decode=gpu only"):
        check_decode("cpu", "cpu")


def test_gpu_decode_on_the_trainers_cpu_is_refused_at_setup(monkeypatch, tmp_path):
    import lightning as L

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA machine, but trainer.accelerator=cpu
    dm = BinCountDataModule(str(write_abid(tmp_path / "abid", [0, 1, 2, 3, 4, 5] * 7)), decode="gpu",
                            cache_dir=str(tmp_path / "m"))
    dm.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    dm.prepare_data()
    with pytest.raises(DataError, match=r"data\.decode=gpu decodes on the trainer's device, which is cpu"):
        dm.setup("fit")


@pytest.mark.slow
def test_a_tiny_run_trains_with_gpu_decode_on_the_cpu(tmp_path, monkeypatch):
    """Every training image goes through the decoder once an epoch, the metrics add up, and the test split's
    probabilities are the bundle's on the same files decoded by the CPU path (what ``bincount predict`` gives)."""
    from bincount.bundle import load_model
    from bincount.train import train

    calls, images = {True: 0, False: 0}, {True: 0, False: 0}
    decode = BatchDecoder.__call__

    def counted(self, batch, train):
        calls[train] += 1
        out = decode(self, batch, train)
        images[train] += len(out["label"])
        return out

    monkeypatch.setattr(BatchDecoder, "__call__", counted)
    monkeypatch.setenv("BINCOUNT_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_cfg([*TINY, "logger=none", "trainer.max_epochs=1", f"paths.output_dir={tmp_path}",
                       "data.decode=gpu", "data.decode_device=cpu"], tmp_path)
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    splits = metrics["data_quality"]["splits"]
    assert calls[True] == metrics["global_steps"] > 0 and calls[False] > 0, calls  # every train and val batch
    assert images[True] == splits["train"] * metrics["epochs_trained"], images
    assert_val_metrics_add_up(metrics)
    rows = read_csv(tmp_path / "predictions.csv")
    assert len(rows) == splits["test"] > 1
    probs = [k for k in rows[0] if k.startswith("prob_")]
    files = [Path(cfg.data.root) / "bin-images" / f"{row['id']}.jpg" for row in rows]
    expected = load_model(tmp_path / "model").predict(files)["probs"]
    got = torch.tensor([[float(row[k]) for k in probs] for row in rows])
    assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-5


def test_bins_the_workers_already_dropped_stay_reported_beside_the_decoders():
    """A batch arrives with the workers' own bad list (unreadable files); the decoder adds its bad JPEGs to
    that list, and loses none of the workers' entries (the run's summary counts every dropped bin)."""
    batch = batch_of([jpeg(0), corrupt(jpeg(1))], ["00001", "00002"])
    batch["bad"] = [("00009", "bin-images/00009.jpg: file is empty")]
    out = decoder("skip")(batch, train=False)
    assert [sample_id for sample_id, _ in out["bad"]] == ["00009", "00002"]
    assert out["bad"][0] == ("00009", "bin-images/00009.jpg: file is empty")


def test_decode_setting_errors_say_all_of_it(monkeypatch):
    """The whole message, not a prefix: the valid choices and the way out are the part a user acts on."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # so a bad name is refused as a name
    choices = ("is not a valid choice; valid: null (the trainer's device), cuda, cuda:N, cpu (the same decode "
               "code on the CPU, for tests and benchmarks)")
    for bad in ("mps", "gpu zero", "cuda:x"):
        with pytest.raises(ValueError) as e:
            check_decode("gpu", bad)
        assert str(e.value) == f"data.decode_device={bad!r} {choices}"
    with pytest.raises(ValueError) as e:
        check_decode("cpu", "cuda")
    assert str(e.value) == ("data.decode_device='cuda' applies to data.decode=gpu only; with data.decode=cpu the "
                            "loader workers decode: remove data.decode_device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as e:
        check_decode("gpu", None)
    assert str(e.value) == ("data.decode=gpu needs a CUDA device (nvJPEG); this machine has none "
                            "(torch.cuda.is_available() is False). Valid choices: data.decode=cpu|gpu; use "
                            "data.decode=cpu here (data.decode_device=cpu runs the GPU decode path on the CPU, "
                            "for tests)")
