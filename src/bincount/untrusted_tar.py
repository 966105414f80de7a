"""Extracting a tar archive that someone else may have written (a job's output, a ``model.tar.gz``).

Why by hand: tarfile's ``filter="data"`` is the only other guard, and its realpath check was bypassed by a
chain of directory symlinks longer than PATH_MAX (CVE-2025-4517) on every Python before 3.11.13 / 3.12.11 /
3.13.4, which is what these machines run. So this module never lets tarfile write anything: it walks the
members itself and writes only regular files, and the directories they need, with names it has checked.

Refused, naming the member (the whole archive, before anything is written): symlinks, hardlinks, devices,
FIFOs, absolute names, ``..``, empty or over-long names, control characters, duplicates (after
normalising ``./``), more than ``max_members`` members, more than ``max_bytes`` in all, and GNU long-name
or PAX headers above ``MAX_HEADER_BYTES`` (tarfile reads such a header whole into memory: a 1 MB gzip of a
1 GiB long name would cost 1 GiB before any other check). Files are written with ``O_NOFOLLOW`` into
directories checked not to be links, mode 0644, never setuid or owned by the archive's uid.
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable

MAX_HEADER_BYTES = 64 << 10  # a long name or PAX record set: real ones are a few hundred bytes
MAX_NAME_BYTES = 1024  # a member's whole name; each part also stays within NAME_MAX (255)
MAX_PART_BYTES = 255
# Headers whose payload tarfile reads whole into memory while it walks the archive.
_BIG_HEADERS = {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE}
_CHUNK = 1 << 20


class UnsafeArchive(ValueError):
    """An archive (or one of its members) refused as a whole; the message names the archive and the member."""


class ArchiveTooLarge(UnsafeArchive):
    """More members or bytes than the caller's limits allow (the caller may name the setting that raises them)."""


class _CappedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses an oversized long-name/PAX header before tarfile reads its payload.

    ``_proc_member`` is the hook tarfile calls right after parsing a 512-byte header (3.8 to 3.14); the
    test with a 1 GiB long-name header fails if a future Python stops calling it.
    """

    def _proc_member(self, tarfile_):
        if self.type in _BIG_HEADERS and self.size > MAX_HEADER_BYTES:
            raise UnsafeArchive(f"a {'PAX' if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE) else 'GNU long-name'} "
                                f"header of {self.size:,} bytes (the limit is {MAX_HEADER_BYTES:,})")
        return super()._proc_member(tarfile_)


@dataclass(frozen=True)
class Limits:
    max_members: int = 100_000
    max_bytes: int = 2 << 30


def member_path(name: str) -> PurePosixPath:
    """The member's normalised relative path, or UnsafeArchive saying why it could land outside the target."""
    if not name or "\x00" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafeArchive(f"member {name!r}: an empty name or one with a control character")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UnsafeArchive(f"member {name[:60]!r}...: a name of {len(name):,} characters (the limit is "
                            f"{MAX_NAME_BYTES} bytes)")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"member {name!r}: an absolute name")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r}: a '..' component")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_PART_BYTES for p in parts):
        raise UnsafeArchive(f"member {name[:60]!r}: a path part longer than {MAX_PART_BYTES} bytes")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


Member = tuple[PurePosixPath, tarfile.TarInfo]


def checked_members(tar: tarfile.TarFile, limits: Limits) -> list[Member]:
    """Every member, checked: only regular files and directories, unique safe names, within the limits."""
    seen: dict[PurePosixPath, bool] = {}  # path -> is a directory (a directory may repeat)
    out, total = [], 0
    for member in tar:
        if len(out) >= limits.max_members:
            raise ArchiveTooLarge(f"more than {limits.max_members:,} members")
        if not (member.isreg() or member.isdir()):
            kind = ("a symlink" if member.issym() else "a hardlink" if member.islnk() else
                    "a FIFO" if member.isfifo() else "a device" if member.isdev() else f"type {member.type!r}")
            raise UnsafeArchive(f"member {member.name!r} is {kind}; only regular files and directories are extracted")
        path = member_path(member.name)
        if member.isreg() and path == PurePosixPath("."):
            raise UnsafeArchive(f"member {member.name!r}: a file without a name")
        if path in seen and not (member.isdir() and seen[path]):
            raise UnsafeArchive(f"member {member.name!r} appears twice")
        seen[path] = member.isdir()
        total += member.size if member.isreg() else 0
        if total > limits.max_bytes:
            raise ArchiveTooLarge(f"members add up to more than {limits.max_bytes:,} bytes")
        out.append((path, member))
    return out


def _real_dir(dest: Path, rel: PurePosixPath) -> Path:
    """``dest/rel`` as a real directory, each part created or checked not to be a link (O_NOFOLLOW for dirs)."""
    here = dest
    for part in rel.parts:
        here = here / part
        try:
            os.mkdir(here, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                raise UnsafeArchive(f"{here} exists and is not a directory (a link or a file)") from None
    return here


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except OSError as e:  # ELOOP: a link planted where the file goes
        raise UnsafeArchive(f"cannot write {target} ({e.strerror})") from None
    with os.fdopen(fd, "wb") as out:
        left = member.size
        while left > 0:
            chunk = source.read(min(_CHUNK, left))
            if not chunk:
                raise UnsafeArchive(f"member {member.name!r} is truncated")
            out.write(chunk)
            left -= len(chunk)


class _Refused(Exception):
    """What ``choose`` raised, carried past ``extract``'s handlers, which would call it a damaged archive."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _chosen(choose: Callable[[list[Member]], Iterable[PurePosixPath]], members: list[Member]) -> set[PurePosixPath]:
    try:
        return set(choose(members))
    except UnsafeArchive:
        raise
    except Exception as e:  # the caller's refusal (a BundleError naming the member), raised as it was
        raise _Refused(e) from None


def extract(fileobj: IO[bytes], dest: Path, where: str, limits: Limits = Limits(),
            choose: Callable[[list[Member]], Iterable[PurePosixPath]] | None = None) -> list[PurePosixPath]:
    """Check every member of the archive in ``fileobj``, then write its regular files under ``dest``: all of
    them, or the paths ``choose(members)`` picks (it may raise to refuse: its exception reaches the caller as it
    was). Returns the paths written.
    Raises UnsafeArchive naming ``where`` and the member; nothing is written unless every member passed."""
    dest = Path(dest)
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*", tarinfo=_CappedTarInfo) as tar:
            members = checked_members(tar, limits)
            wanted = None if choose is None else _chosen(choose, members)
            dest.mkdir(parents=True, exist_ok=True)
            written = []
            for path, member in members:
                if wanted is not None and path not in wanted:
                    continue
                if member.isdir():
                    _real_dir(dest, path)
                    continue
                _write(tar, member, _real_dir(dest, path.parent) / path.name)
                written.append(path)
            return written
    except UnsafeArchive as e:
        raise type(e)(f"{where}: {e}; refusing the archive") from None
    except _Refused as e:
        raise e.error from None
    except tarfile.ReadError as e:  # tarfile's message for r:* lists each method tried, over several lines
        raise UnsafeArchive(f"{where} is not a readable tar archive (ReadError: not gzip, bzip2, xz or plain tar"
                            f"{'' if 'file could not be opened' in str(e) else ': ' + ' '.join(str(e).split())})") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:  # truncated, a bad header
        raise UnsafeArchive(f"{where} is not a readable tar archive ({type(e).__name__}: {' '.join(str(e).split())})") from None
