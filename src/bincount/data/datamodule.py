"""``BinCountDataModule``: one DataModule for synthetic bins, the ABID sample and full ABID.

Every source is read through the same ABID layout and the same cached manifest, so a recipe that works
on synthetic bins works unchanged on real data: only ``data.root`` (and ``data.synthetic``) differ.
``prepare_data`` does the once-per-machine work (rendering, the manifest); ``setup`` only reads the
cached manifest, so DDP ranks agree on the splits without re-reading metadata. With ``data.decode=gpu``
the workers pass encoded bytes and the batch hooks below decode them on the device (:mod:`.gpu_decode`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from torch.utils.data import DataLoader

from bincount.data.dataset import BinImageDataset
from bincount.layout import BAD_INPUT_CHOICES, SPLITS, DataError
from bincount.manifest import ClassRange, Manifest, build_manifest
from bincount.samples import DEFAULT_MAX_PIXELS, collate_skipping_bad
from bincount.data.gpu_decode import BatchDecoder, check_decode
from bincount.data.transforms import build_transform

log = logging.getLogger(__name__)



class BinCountDataModule(L.LightningDataModule):
    """Bins from ``root`` (ABID layout), labels from the manifest, transforms from the model's data config."""

    def __init__(
        self,
        root: str,
        classes: dict | None = None,
        split: dict | None = None,
        file_list: str | None = None,
        synthetic: dict | None = None,
        img_size: int = 128,
        batch_size: int = 32,
        num_workers: int = 2,
        augment: str = "light",
        bad_input: str = "skip",
        cache_dir: str | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        interpolation: str = "bilinear",
        reader: dict | None = None,
        s3: dict | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        decode: str = "cpu",
        decode_device: str | None = None,
    ) -> None:
        super().__init__()
        if bad_input not in BAD_INPUT_CHOICES:
            raise ValueError(f"data.bad_input={bad_input!r}; valid choices: {list(BAD_INPUT_CHOICES)}")
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"data.max_pixels={max_pixels!r}; expected a positive number of pixels")
        self.max_pixels = max_pixels
        self.root = root if str(root).startswith("s3://") else Path(root).expanduser()
        self.store = _open_s3_store(str(root), s3) if str(root).startswith("s3://") else None
        self.class_range = ClassRange(**(classes or {}))
        split = dict(split or {})
        self.split_seed = int(split.pop("seed", 0))
        self.split_fractions = tuple(float(split.get(name, default)) for name, default in zip(SPLITS, (0.8, 0.1, 0.1)))
        if set(split) - set(SPLITS):
            raise ValueError(f"data.split has unknown keys {sorted(set(split) - set(SPLITS))}; valid: {[*SPLITS, 'seed']}")
        self.file_list, self.synthetic = file_list, dict(synthetic) if synthetic else None
        self.img_size, self.batch_size, self.num_workers = int(img_size), int(batch_size), int(num_workers)
        self.augment, self.bad_input, self.cache_dir = augment, bad_input, cache_dir
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers and num_workers > 0
        self.prefetch_factor = int(prefetch_factor) if prefetch_factor and num_workers > 0 else None  # batches per worker
        self.mean, self.std, self.interpolation = tuple(mean), tuple(std), interpolation
        self._transform("train")  # fail on a bad augment or interpolation name now
        self.decode, self.decode_device = decode, check_decode(decode, decode_device)  # refuses gpu without CUDA
        self.decoder = BatchDecoder(self._transform("train"), self._transform("val"), bad_input, max_pixels,
                                    self.decode_device, locate=self._locate) if decode == "gpu" else None
        self.manifest: Manifest | None = None
        self.datasets: dict[str, BinImageDataset] = {}
        self._init_reader(str(root), reader, s3)

    def _init_reader(self, root: str, reader: dict | None, s3: dict | None) -> None:
        """``reader.mode`` (conf/reader/): ``files`` reads local dirs here; ``shards`` delegates to bincount.shards."""
        from bincount.shards.stream import ReaderConfig, ShardStreams, join, resolve_mode

        self.reader = ReaderConfig.from_mapping(reader)
        self.read_mode = resolve_mode(root, self.reader.mode)
        self.shards = None
        if self.read_mode == "shards":
            url = self.reader.shards or join(root if "://" in root else str(self.root), "shards")
            self.shards = ShardStreams(url, self.reader, self.class_range, s3=s3)

    def _transform(self, split: str):
        """The split's transform; the workers apply it (``data.decode=cpu``), or the GPU decoder does (``gpu``)."""
        return build_transform(self.img_size, train=split == "train", augment=self.augment, mean=self.mean,
                               std=self.std, interpolation=self.interpolation)

    # -- once per machine -------------------------------------------------------------------------
    def _build_manifest(self, progress: bool) -> Manifest:
        return build_manifest(
            self.store or self.root, self.class_range, split_fractions=self.split_fractions, seed=self.split_seed,
            file_list=self.file_list, bad_input=self.bad_input, cache_dir=self.cache_dir, progress=progress,
        )

    def prepare_data(self) -> None:
        if self.shards is not None:
            self.shards.info()  # fails early (no pack, wrong class range) on the main process
            return
        if self.synthetic:
            from bincount.data.synthetic import render_dataset

            render_dataset(self.root, **self.synthetic)
        elif self.store is not None:
            if not self.store.exists():
                raise DataError(f"data.root={self.root!r} has no objects (expected bin-images/ and metadata/ under it)")
        elif not self.root.is_dir():
            raise DataError(
                f"data.root={str(self.root)!r} does not exist. Point data.root at a directory in the ABID layout "
                "(bin-images/, metadata/), or use data=synthetic to render one."
            )
        self._build_manifest(progress=True)

    # -- every process ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._check_decode_device()
        if self.shards is not None and self.manifest is None:
            transforms = {name: self._worker_transform(name) for name in SPLITS}
            processes = getattr(self.trainer, "num_devices", 1) if self.trainer is not None else 1
            self.manifest, self.datasets = self.shards.setup(transforms, self.bad_input, self.num_workers, processes,
                                                             seed=self.split_seed, max_pixels=self.max_pixels,
                                                             decode=self.decode)
            self._check_fits_data(self.manifest)
        if self.manifest is None:
            self.manifest = self._build_manifest(progress=False)  # the cached file written by prepare_data
            self._check_fits_data(self.manifest)
        for name in SPLITS:
            if name not in self.datasets and self.manifest.split(name):
                self.datasets[name] = BinImageDataset(self.root, self.manifest.split(name), self._worker_transform(name),
                                                      self.bad_input, reader=self.store, max_pixels=self.max_pixels,
                                                      decode=self.decode)

    def _locate(self, key: str) -> str:
        """Where an image key lives, for bad-input messages: a path, an ``s3://`` URL, or the shards holding it."""
        if self.shards is not None:
            return f"{key} (packed in {self.shards.url})"
        return self.store.url(key) if self.store is not None else str(self.root / key)

    def _worker_transform(self, split: str):
        return self._transform(split) if self.decoder is None else None

    def _check_decode_device(self) -> None:
        """``data.decode=gpu`` with no ``data.decode_device`` decodes where the trainer trains: that must be CUDA."""
        if self.decoder is None or self.decode_device is not None or self.trainer is None:
            return
        device = self.trainer.strategy.root_device
        if device.type != "cuda":
            raise DataError(f"data.decode=gpu decodes on the trainer's device, which is {device}, not CUDA: use "
                            "trainer=gpu, or data.decode=cpu (data.decode_device=cpu runs this path on the CPU, for tests)")

    # -- batches on the device (data.decode=gpu) ----------------------------------------------------
    def transfer_batch_to_device(self, batch: Any, device, dataloader_idx: int) -> Any:
        """The encoded bytes stay in host memory: torchvision's nvJPEG decode reads its inputs from the CPU."""
        if self.decoder is None or not isinstance(batch, dict) or not isinstance(batch.get("image"), list):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        rest = super().transfer_batch_to_device({k: v for k, v in batch.items() if k != "image"}, device, dataloader_idx)
        return {**rest, "image": batch["image"]}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``data.decode=gpu``: decode, transform (the train one while training) and normalize on the device."""
        if self.decoder is None or not isinstance(batch, dict):
            return batch
        return self.decoder(batch, train=self.trainer is not None and self.trainer.training)

    def _check_fits_data(self, manifest: Manifest) -> None:
        """A class range the data cannot fill is a config error, found before the first step."""
        for name, fraction in zip(SPLITS, self.split_fractions):
            if fraction > 0 and not manifest.split(name):
                raise DataError(f"the {name} split of {self.root} is empty (fraction {fraction}); "
                                f"data quality report: {_short_report(manifest.report)}")
        train_counts = manifest.class_counts("train")
        empty = [self.class_range.count(i) for i, n in enumerate(train_counts) if n == 0]
        if empty:
            present = sorted({row.count for row in manifest.rows})
            raise DataError(
                f"data.classes (counts {self.class_range.min_count}-{self.class_range.max_count}) does not fit the "
                f"data in {self.root}: counts {empty} have no training samples. Counts present: {present}. "
                "Narrow data.classes.max_count / min_count or use more data."
            )

    def class_counts(self, split: str = "train") -> list[int]:
        if self.manifest is None:
            self.setup()
        return self.manifest.class_counts(split)

    def split_ids(self, split: str) -> list[str]:
        return [row.id for row in self.manifest.split(split)]

    # -- loaders --------------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise DataError(f"the {split} split is empty; set data.split.{split} > 0")
        if self.shards is not None:
            from bincount.shards.stream import streaming_loader

            loader = streaming_loader(self.datasets[split], self.batch_size, self.num_workers, self.pin_memory, drop_last)
            return self.shards.train_state.attach(loader) if split == "train" else loader
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=collate_skipping_bad, pin_memory=self.pin_memory, drop_last=drop_last,
            persistent_workers=self.persistent_workers, prefetch_factor=self.prefetch_factor,
        )

    def train_dataloader(self) -> DataLoader:
        # drop_last only when the last batch would hold one sample (it breaks BatchNorm in the mlp_bn head
        # and backbones): otherwise every sample is read each epoch, and a bad one is always counted.
        size = len(self.datasets.get("train", ()))
        drop = size > self.batch_size and size % self.batch_size == 1
        return self._loader("train", shuffle=True, drop_last=drop)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """Streamed shards: the train loader's mid-epoch position (see ``TrainLoaderState``); files: nothing."""
        return self.shards.train_state.state_dict() if self.shards is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.shards is not None:
            self.shards.train_state.load_state_dict(state_dict)

    def data_quality(self) -> dict[str, Any]:
        """The manifest's report (what was excluded while indexing), for ``metrics.json``."""
        return dict(self.manifest.report) if self.manifest else {}


def _open_s3_store(root: str, s3: dict | None):
    """``data.root=s3://...``: per-object reads through :mod:`bincount.s3` (imported only for S3 roots)."""
    from bincount.s3.store import open_store

    return open_store(root, s3)


def _short_report(report: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in report.items() if isinstance(v, (int, float)))
