"""Shared set-up for the benchmark scripts: compose the real training config, print a table.

Benchmarks compose the same Hydra config as ``train.py`` (not a hand-built copy), so what they measure
is what a run executes.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "abid" / "sample"


def sample_dir() -> Path | None:
    """The real ABID sample (``$BINCOUNT_ABID_SAMPLE``, else beside the clone), or None when it is not there."""
    path = Path(os.environ.get("BINCOUNT_ABID_SAMPLE", SAMPLE))
    return path if (path / "bin-images").is_dir() and (path / "metadata").is_dir() else None


def bin_jpegs(folder: Path, n: int) -> list[Path]:
    """``n`` JPEG paths: the real ABID sample's photos (``$BINCOUNT_ABID_SAMPLE`` or beside the clone),
    repeated as needed, else noise JPEGs at ABID's 500x400 written into ``folder``."""
    sample = sample_dir()
    real = sorted((sample / "bin-images").glob("*.jpg")) if sample else []
    if not real:
        import numpy as np
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(n, 64)):
            pixels = np.random.default_rng(i).integers(0, 255, (400, 500, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"noise{i:03d}.jpg", quality=90)
        real = sorted(folder.glob("noise*.jpg"))
    return [real[i % len(real)] for i in range(n)]


def compose(overrides: list[str]):
    """The training config for ``overrides``, resolved as ``train.py`` would (minus the run directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from bincount.resolvers import register_resolvers

    register_resolvers()

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=False)
    OmegaConf.set_struct(cfg, False)
    return cfg


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}, threads {torch.get_num_threads()}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, header: list[str], rows: list[list], digits: int = 1) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="right" if name != header[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:,.{digits}f}" if isinstance(v, float) else str(v) for v in row])
    # a log file or pipe gets the whole table, not one wrapped to rich's 80-column default
    Console(width=None if sys.stdout.isatty() else 200).print(table)
