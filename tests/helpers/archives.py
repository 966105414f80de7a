"""Tar archives for tests: a job's output.tar.gz, a bundle's model.tar.gz (the standard library only, so
test files that need no SageMaker SDK can use it)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def tar_gz(files: dict[str, str | bytes]) -> bytes:
    """A .tar.gz holding ``files`` (name -> content), regular files only."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_tar(path: Path, files: dict[str, str | bytes]) -> Path:
    path.write_bytes(tar_gz(files))
    return path
