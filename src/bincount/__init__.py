"""bincount: count objects in warehouse bin images (Amazon Bin Image Dataset) with Lightning, Hydra and timm.

``bincount.load_model(path)`` is the one name at the top: it is looked up on first use, so
``import bincount`` (and every ``bincount.<module>`` import, which runs this file) stays light.
"""

from __future__ import annotations

__all__ = ["load_model"]


def __getattr__(name: str):
    if name == "load_model":
        from bincount.bundle import load_model

        return load_model
    raise AttributeError(f"module 'bincount' has no attribute {name!r}")
