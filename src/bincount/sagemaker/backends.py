"""Which backend runs the jobs: local subprocesses, SageMaker (after the preflight checks), or the dry run."""

from __future__ import annotations

from pathlib import Path

from bincount.sagemaker import preflight
from bincount.sagemaker.settings import LauncherSettings


def make_backend(settings: LauncherSettings, sweep_dir: Path, source_dir: Path, files: list[str], key: bytes):
    """The local backend gets the sweep's key (its jobs run on this machine); the real one never does."""
    if settings.dry_run:
        from bincount.sagemaker.offline import DryRunBackend

        return DryRunBackend(settings, sweep_dir, source_dir, files, key)
    if settings.backend == "local":
        from bincount.sagemaker.local import LocalBackend

        return LocalBackend(settings, sweep_dir, source_dir, files, key)
    from bincount.sagemaker.remote import SageMakerBackend

    boto = preflight.make_boto_session(settings.region)
    keep_alive_s = preflight.preflight(settings, boto)  # refused here, before the code is staged or uploaded
    return SageMakerBackend(settings, sweep_dir, source_dir, files, boto, keep_alive_s)
