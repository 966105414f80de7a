"""Planted secrets: values of the shapes ``bincount.secrets`` catches, and the scan for them in files."""

from __future__ import annotations

from pathlib import Path

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example secret key
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"


def files_containing(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``secret`` (the planted-secret scan of other tests)."""
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]
