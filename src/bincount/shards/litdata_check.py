"""The litdata release the shard code is written against, checked before litdata is used.

Why a check of our own: the padded DDP plan and the http endpoint allowance call litdata's private
hooks (``_create_shuffler``, ``_associate_chunks_and_intervals_to_workers``, ``_chunk_byte_sizes``,
``downloader._OBSTORE_CLIENT_OPTIONS``), verified on 0.2.76. An older litdata would fail deep inside a
DataLoader worker with an AttributeError; this fails at once and names both versions.
"""

from __future__ import annotations

from functools import lru_cache

LITDATA_MIN = "0.2.76"
INSTALL_HINT = 'pip install -c constraints.txt -e ".[s3]"'


def check_litdata_version(installed: str | None) -> None:
    """ImportError naming the installed and the required version unless ``installed`` is new enough."""
    from packaging.version import Version

    if installed is None:
        raise ImportError(f"reading or writing shards needs litdata>={LITDATA_MIN}, which is not installed: {INSTALL_HINT}")
    if Version(installed) < Version(LITDATA_MIN):
        raise ImportError(f"litdata {installed} is installed; bincount's shard code needs litdata>={LITDATA_MIN} "
                          f"(it uses hooks added since): {INSTALL_HINT}")


@lru_cache(maxsize=1)
def require_litdata() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("litdata")
    except PackageNotFoundError:
        installed = None
    check_litdata_version(installed)
