"""The code channel: which files of the project a job gets, staged for SageMaker to upload.

The code channel lands in a bucket that whoever can read the prefix can read, and the project directory
beside the code holds ``.env`` files, keys, cloud credentials, shell history and data. Two independent
guards decide what goes, both ours (standard library only: ``fnmatch`` on names, ``os.stat``), so that
either one alone keeps a credential at home (docs/security.md, "The code channel"):

1. an allowlist: only the ``include`` entries; inside their directories only the kinds of file a job
   needs (``UPLOAD_KINDS``, plus ``hydra.launcher.upload_patterns``). A file named in ``include`` itself
   (the entry script, ``pyproject.toml``, a path the user names) is the user's choice and goes whatever
   its kind.
2. a never-upload list (``NEVER_UPLOAD``), matched case-insensitively against every level of the path,
   whatever the allowlist says: each refused file (or directory) is named once in a warning.

Around them: a symbolic link is followed only to a file the channel uploads anyway, a file with several
hard links only if every link is a file the channel uploads, and a file above the size budget is named.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from omegaconf import DictConfig, OmegaConf

from bincount.sagemaker.settings import LauncherSettings

log = logging.getLogger(__name__)

# What a job reads from its code channel: Python code, Hydra configs and the data-less formats a package
# reads its settings from (JSON, TOML), requirement lists (a requirements file's `-r other.txt`). Not
# .md/.rst (docs; README.md is named in include), .csv/.parquet/.npy (data: a data channel), .sh (the
# job runs `python -m bincount.sagemaker.job.entry`), .cfg/.ini (where .s3cfg-, .boto- and alembic-style
# credentials live), nor checkpoints and archives. upload_patterns adds kinds (e.g. "*.jinja").
UPLOAD_KINDS = ("*.py", "*.yaml", "*.yml", "*.json", "*.toml", "*.txt")
# Never uploaded, whatever include, upload_patterns and ignore_patterns say: matched in lower case against
# each part of the path (a pattern with "/" against consecutive parts), so `.ENV`, `ID_RSA` and
# `conf/.Docker/config.json` are caught too. Not `secret*`/`token*`: bincount.secrets is code.
NEVER_UPLOAD = (
    # environment files
    ".env", ".env.*", "*.env",
    # private keys, certificates with keys, key stores
    "*.pem", "*.key", "*.p12", "*.pfx", "*.p8", "*.ppk", "*.jks", "*.keystore", "*.kdbx",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    # credential directories: AWS, SSH, Docker, Kubernetes, GnuPG, Azure, gcloud
    ".aws", ".ssh", ".docker", ".kube", ".gnupg", ".azure", ".config/gcloud",
    # cloud and service credentials
    "credentials*", "service-account*.json", "service_account*.json", "application_default_credentials.json",
    "access_tokens.db", "kubeconfig", ".boto", ".s3cfg", ".vault-token", ".dockercfg",
    # passwords and registry tokens
    ".netrc", "_netrc", ".git-credentials", ".pypirc", ".npmrc", ".pgpass", ".my.cnf", ".htpasswd",
    # infrastructure state and variables (Terraform keeps secrets in both)
    "*.tfvars", "*.tfvars.json", "*.tfstate", "*.tfstate.*",
    # shell and REPL history (commands typed with a password or a token in them)
    "*_history", ".zhistory", ".histfile",
)
MAX_FILE_MB = 10  # hydra.launcher.max_upload_file_mb: bincount's largest source file is under 0.1 MB
MAX_TOTAL_MB = 100  # hydra.launcher.max_upload_mb: bincount's whole channel is about 1 MB
MAX_NAMED = 20  # files named in one "not a kind a job needs" warning


def never_upload(rel: PurePosixPath) -> str | None:
    """The NEVER_UPLOAD pattern that ``rel`` (a path relative to the project) matches, if any."""
    parts = [p.lower() for p in rel.parts]
    for pat in NEVER_UPLOAD:
        n = pat.count("/") + 1
        if any(fnmatch.fnmatchcase("/".join(parts[i:i + n]), pat) for i in range(len(parts) - n + 1)):
            return pat
    return None


def code_entries(settings: LauncherSettings, config: DictConfig, payload: str, source_dir: Path) -> list[str]:
    """``include``, plus what this launch needs: the entry script, the requirements, the app's config dir."""
    extra = [settings.requirements] if settings.requirements else []
    if payload == "script":
        extra.append(sys.argv[0])
    for src in OmegaConf.select(config, "hydra.runtime.config_sources", default=None) or []:
        if src.get("provider") == "main" and src.get("schema") == "file":
            extra.append(src["path"])
    rel = []
    for entry in [*settings.include, *extra]:
        path = (source_dir / entry).resolve()
        if path.is_relative_to(source_dir):
            rel.append(path.relative_to(source_dir).as_posix())
    return sorted(set(rel))


class _Rules:
    """One selection's rules, and what they refused (each path named once)."""

    def __init__(self, base: Path, entries: list[str], ignore: Sequence[str], patterns: Sequence[str]):
        self.base, self.entries = base, entries
        self.explicit = {e for e in entries if (base / e).is_file()}  # resolved by code_entries: no links
        self.anywhere = [i for i in ignore if not i.startswith("/")]
        self.at_root = [i[1:] for i in ignore if i.startswith("/")]
        self.kinds = [k.lower() for k in (*UPLOAD_KINDS, *patterns)]
        self.refused: dict[str, str] = {}
        self.not_a_kind: set[str] = set()

    def ignored(self, rel: PurePosixPath) -> bool:
        """The user's ignore_patterns: left out without a word (caches, logs, outputs)."""
        return (any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in self.anywhere)
                or any(fnmatch.fnmatch(top, pat) for top in rel.parts[:1] for pat in self.at_root))

    def admits(self, rel: PurePosixPath, is_dir: bool = False) -> bool:
        """Guard 2 (never-upload), then guard 1 (the kind of file, unless ``include`` names the file)."""
        if self.ignored(rel):
            return False
        if pat := never_upload(rel):
            return self.refuse(rel.as_posix() + ("/" if is_dir else ""), f"matches the never-upload list ({pat!r})")
        if is_dir or rel.as_posix() in self.explicit:
            return True
        if any(fnmatch.fnmatchcase(rel.name.lower(), kind) for kind in self.kinds):
            return True
        self.not_a_kind.add(rel.as_posix())
        return False

    def refuse(self, rel: str, why: str) -> bool:
        self.refused.setdefault(rel, why)
        return False

    def follows(self, path: Path, is_dir: bool) -> bool:
        """A symbolic link is followed only to what the allowlist uploads anyway, never out of the project or
        up its own tree (``conf/experiment -> ../experiments`` is, so jobs can compose ``experiment=``)."""
        target = path.resolve()
        rel = PurePosixPath(path.relative_to(self.base))
        inside = target.is_relative_to(self.base) and any(target.is_relative_to((self.base / e).resolve())
                                                          for e in self.entries)
        if not inside or (is_dir and path.parent.resolve().is_relative_to(target)):
            return self.refuse(rel.as_posix(), f"links to {target}, outside what include uploads")
        real = PurePosixPath(target.relative_to(self.base))
        return real == rel or self.admits(real, is_dir) or self.refuse(rel.as_posix(), f"links to {real.as_posix()}, "
                                                                        "which is not uploaded")


def select_code(source_dir: Path, entries: list[str], ignore: Sequence[str], patterns: Sequence[str] = (),
                max_file_mb: float = MAX_FILE_MB, max_total_mb: float = MAX_TOTAL_MB) -> list[str]:
    """The files of the code channel (paths relative to ``source_dir``, sorted), warning about each refused one."""
    base = source_dir.resolve()
    rules = _Rules(base, entries, ignore, patterns)

    def walk(top: Path):
        """Files under ``top``, following directory links as ``follows`` allows (``os.walk`` alone would
        skip ``conf/experiment``), never into an ignored or never-upload directory."""
        for d, dirs, fs in os.walk(top, followlinks=True):
            dirs[:] = [x for x in dirs if rules.admits(PurePosixPath((Path(d) / x).relative_to(base)), is_dir=True)
                       and (not (Path(d) / x).is_symlink() or rules.follows(Path(d) / x, is_dir=True))]
            yield from (Path(d) / f for f in fs)

    found: list[tuple[str, Path]] = []  # (path in the channel, real path)
    for entry in entries:
        top = base / entry
        if top.is_dir() and not rules.admits(PurePosixPath(entry), is_dir=True):
            continue
        for path in [top] if top.is_file() else walk(top):
            rel = PurePosixPath(path.relative_to(base))
            if (rules.admits(rel) and path.is_file()
                    and (not path.is_symlink() or rules.follows(path, is_dir=False))):
                found.append((rel.as_posix(), path.resolve()))
    files = sorted(set(hard_links_inside(found, rules)))
    for rel, why in sorted(rules.refused.items()):
        log.warning("not uploaded: %s %s", rel, why)
    if rules.not_a_kind:
        more = len(rules.not_a_kind) - MAX_NAMED
        log.warning("not uploaded, not a kind of file a job needs (hydra.launcher.upload_patterns adds kinds, "
                    "e.g. '*.csv'): %s%s", ", ".join(sorted(rules.not_a_kind)[:MAX_NAMED]),
                    f" and {more} more" if more > 0 else "")
    check_sizes(base, files, max_file_mb, max_total_mb)
    return files


def hard_links_inside(found: list[tuple[str, Path]], rules: _Rules) -> list[str]:
    """The found files, less those with a hard link that is not itself a found file.

    A hard link is the file itself under another name, so a link in ``conf/`` to ``~/.aws/credentials`` or
    to the project's ``.env`` passes every name check. Its other names cannot be found without walking the
    whole disk, but they can be counted: ``st_nlink`` names exist, and all are inside only if that many
    distinct real paths among the found files share the inode.
    """
    names: dict[tuple[int, int], set[Path]] = {}
    stats = {}
    for rel, real in found:
        st = stats[rel] = real.stat()
        names.setdefault((st.st_dev, st.st_ino), set()).add(real)
    kept = []
    for rel, _ in found:
        st = stats[rel]
        inside = len(names[(st.st_dev, st.st_ino)])
        if st.st_nlink > inside:
            rules.refuse(rel, f"has {st.st_nlink} hard links and only {inside} of them {'is' if inside == 1 else 'are'}"
                              " uploaded: another may be a file outside the project (copy it instead of linking)")
        else:
            kept.append(rel)
    return kept


def check_sizes(base: Path, files: list[str], max_file_mb: float, max_total_mb: float) -> None:
    """Warn, naming each file, when a file or the whole channel is above its budget: a large file in the
    code is usually data or weights, which belong in a data channel (the file is still uploaded: it is of a
    kind a job reads, and a job missing it would fail far from here)."""
    sizes = {rel: (base / rel).stat().st_size / 2**20 for rel in files}
    for rel, mb in sizes.items():
        if mb > max_file_mb:
            log.warning("uploading %s: %.1f MB, above hydra.launcher.max_upload_file_mb=%s (data or weights belong "
                        "in a data channel; add it to hydra.launcher.ignore_patterns to leave it out)",
                        rel, mb, max_file_mb)
    total = sum(sizes.values())
    if total > max_total_mb:
        largest = sorted(sizes, key=lambda r: (-sizes[r], r))[:3]
        log.warning("the code channel is %.1f MB, above hydra.launcher.max_upload_mb=%s (largest: %s)", total,
                    max_total_mb, ", ".join(f"{r} {sizes[r]:.1f} MB" for r in largest))


def stage_code(source_dir: Path, dest: Path, files: list[str]) -> Path:
    """Copy the code channel (what SageMaker uploads to /opt/ml/input/data/code): exactly ``files``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_dir / rel, dest / rel)
    return dest


def code_summary(files: list[str]) -> str:
    """``12 files: conf/ (8), src/ (3), train.py``: what the code channel holds, for the log."""
    tops: dict[str, int] = {}
    for f in files:
        top = f.split("/", 1)[0] + ("/" if "/" in f else "")
        tops[top] = tops.get(top, 0) + 1
    return f"{len(files)} files: " + ", ".join(t if t[-1] != "/" else f"{t} ({n})" for t, n in sorted(tops.items()))
