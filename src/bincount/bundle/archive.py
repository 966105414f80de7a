"""Taking a bundle out of a ``model.tar.gz`` (SageMaker's model artifact) without trusting the archive.

Why so careful: the archive may come from a bucket someone else can write. ``bincount.untrusted_tar``
checks every member first (no links, devices, ``..``, absolute or duplicate names, oversized headers) and
refuses the archive as a whole, naming the member. Then only the two bundle files are written, each under
its own size cap, so a checkpoint (a pickle) or a huge member packed beside them never reaches the disk.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from bincount.bundle.format import BUNDLE_FILE, MAX_METADATA_BYTES, MAX_WEIGHTS_BYTES, WEIGHTS_FILE, BundleError
from bincount.untrusted_tar import Limits, Member, UnsafeArchive, extract

MAX_MEMBERS = 100_000
# Everything a bundle archive may hold in all: the two files plus what a training job leaves beside them.
MAX_ARCHIVE_BYTES = MAX_WEIGHTS_BYTES + (1 << 30)


def _bundle_prefix(names: list[PurePosixPath], where: str) -> PurePosixPath:
    """The folder inside the archive holding ``bincount-model.json``: the top, or the shallowest one."""
    found = sorted((n.parent for n in names if n.name == BUNDLE_FILE), key=lambda p: (len(p.parts), str(p)))
    if not found:
        shown = [str(n) for n in names[:10]]
        raise BundleError(f"{where} holds no {BUNDLE_FILE} (members: {shown}{' ...' if len(names) > 10 else ''})")
    return found[0]


def extract_bundle(archive: str | Path, dest: str | Path) -> Path:
    """Extract the bundle in ``archive`` into ``dest``; return the directory holding its two files."""
    archive, dest = Path(archive), Path(dest)
    prefix = PurePosixPath(".")

    def choose(members: list[Member]) -> list[PurePosixPath]:
        nonlocal prefix
        by_path = dict(members)
        prefix = _bundle_prefix(list(by_path), str(archive))
        wanted = []
        for name, limit in ((BUNDLE_FILE, MAX_METADATA_BYTES), (WEIGHTS_FILE, MAX_WEIGHTS_BYTES)):
            path = prefix / name
            member = by_path.get(path)
            if member is None or not member.isfile():
                raise BundleError(f"{archive} has no regular file {str(path)!r} beside its {BUNDLE_FILE}")
            if member.size > limit:
                raise BundleError(f"{archive}: {str(path)!r} is {member.size:,} bytes, above the limit of {limit:,}")
            wanted.append(path)
        return wanted

    try:
        with open(archive, "rb") as f:
            extract(f, dest, str(archive), Limits(max_members=MAX_MEMBERS, max_bytes=MAX_ARCHIVE_BYTES), choose)
    except UnsafeArchive as e:
        raise BundleError(str(e)) from None
    return dest / prefix
