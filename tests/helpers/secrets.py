"""Planted secrets: values of the shapes ``bincount.secrets`` catches, and the scan for them in files."""

from __future__ import annotations

from pathlib import Path

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example secret key
# AWS's documented example access key id, put together at run time so that no secret scanner reads this
# file as holding a key (it is the shape, not a credential, that the tests plant)
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"


def files_containing(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``secret`` (the planted-secret scan of other tests)."""
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]
