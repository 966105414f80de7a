"""Taking a bundle out of a ``model.tar.gz`` (SageMaker's model artifact) without trusting the archive.

Why so careful: the archive may come from a bucket someone else can write. Every member is checked
with tarfile's ``data`` filter first, and an archive with one member that would land outside the
extraction directory (``../x``, an absolute path, a link out) is refused as a whole, naming it. Then
only the two bundle files are extracted, with the same filter and a size cap, so a checkpoint (a
pickle) or a huge member packed beside them is never written to disk.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from bincount.bundle.format import BUNDLE_FILE, MAX_METADATA_BYTES, MAX_WEIGHTS_BYTES, WEIGHTS_FILE, BundleError

MAX_MEMBERS = 100_000


def _bundle_prefix(names: list[str], where: str) -> str:
    """The folder inside the archive holding ``bincount-model.json``: the top, or the shallowest one."""
    found = sorted((PurePosixPath(n).parent for n in names if PurePosixPath(n).name == BUNDLE_FILE),
                   key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise BundleError(f"{where} holds no {BUNDLE_FILE} (members: {names[:10]}{' ...' if len(names) > 10 else ''})")
    return "" if str(found[0]) == "." else str(found[0])


def extract_bundle(archive: str | Path, dest: str | Path) -> Path:
    """Extract the bundle in ``archive`` into ``dest``; return the directory holding its two files."""
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            for member in tar:
                if len(members) >= MAX_MEMBERS:
                    raise BundleError(f"{archive} has more than {MAX_MEMBERS:,} members; not a model archive")
                try:
                    tarfile.data_filter(member, str(dest))
                except tarfile.FilterError as e:
                    raise BundleError(f"{archive}: member {member.name!r} is unsafe ({e}); refusing the archive") from None
                members.append(member)
            by_name = {PurePosixPath(m.name).as_posix().removeprefix("./"): m for m in members}
            prefix = _bundle_prefix(list(by_name), str(archive))
            wanted = []
            for name, limit in ((BUNDLE_FILE, MAX_METADATA_BYTES), (WEIGHTS_FILE, MAX_WEIGHTS_BYTES)):
                key = f"{prefix}/{name}" if prefix else name
                member = by_name.get(key)
                if member is None or not member.isfile():
                    raise BundleError(f"{archive} has no regular file {key!r} beside its {BUNDLE_FILE}")
                if member.size > limit:
                    raise BundleError(f"{archive}: {key!r} is {member.size:,} bytes, above the limit of {limit:,}")
                wanted.append(member)
            tar.extractall(dest, members=wanted, filter="data")
    except tarfile.TarError as e:
        raise BundleError(f"{archive} is not a readable tar archive ({e})") from None
    return dest / prefix if prefix else dest
