"""What a SageMaker job runs on and installs: the staged code channel, its constraints file, the image.

The image's own torch/CUDA stack stays (``job_constraints`` drops it from the pins); this project is
installed by name with the extras the job's config needs, under the rest of the pins, which the job checks
before it trains (``bincount.sagemaker.job.pins``).
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from bincount.sagemaker.job.pins import job_constraints, parse_pins
from bincount.sagemaker.settings import LauncherSettings
from bincount.sagemaker.spec import PICKLE_DIR, JobSpec
from bincount.sagemaker.upload import stage_code

log = logging.getLogger(__name__)
JOB_CONSTRAINTS = f"{PICKLE_DIR}/constraints.txt"  # the code channel's constraints.txt minus the image's stack
IMAGE_TORCH_NOTE = ("# The image's torch (framework_version): pip fails rather than replace it if a package "
                    "wanted another")


def extras_suffix(extras: list[str]) -> str:
    return f"[{','.join(extras)}]" if extras else ""


def project_name(pyproject: Path) -> str | None:
    """``[project] name`` of a pyproject.toml (a regex: the launcher may run on Python 3.10, before tomllib)."""
    m = re.search(r"^\[project\]\s*$(.*?)^name\s*=\s*[\"']([^\"']+)[\"']", pyproject.read_text(), re.M | re.S)
    return m.group(2) if m and "\n[" not in m.group(1) else None


def newest_pytorch() -> str:
    """The newest ``major.minor`` of the SDK's PyTorch training images (its image config, offline): a new SDK
    release brings a new default image without a change here."""
    from sagemaker.core import image_uris

    aliases = image_uris.config_for_framework("pytorch")["training"]["version_aliases"]
    return max(aliases, key=lambda v: tuple(int(x) for x in v.split(".")))


class StagedCode:
    """The code channel copied under ``<sweep>/.sagemaker/code``, with the job's constraints written into it,
    and the image the jobs run on."""

    def __init__(self, settings: LauncherSettings, source_dir: Path, sweep_dir: Path, files: list[str],
                 region: str) -> None:
        self.settings = settings
        self.code = stage_code(source_dir, sweep_dir / ".sagemaker" / "code", files)
        self.project = project_name(self.code / "pyproject.toml") if (self.code / "pyproject.toml").is_file() else None
        self.framework_version = settings.framework_version or newest_pytorch()
        self.constraints = self._constraints()
        self.image = settings.image or self._default_image(region)

    def _default_image(self, region: str) -> str:
        from sagemaker.core import image_uris

        image = image_uris.retrieve(framework="pytorch", region=region, version=self.framework_version,
                                    instance_type=self.settings.instance_type, image_scope="training")
        if not self.settings.framework_version:
            log.info("Training image %s: the newest PyTorch training image the installed SDK knows (pin one with "
                     "hydra.launcher.framework_version=2.9)", image)
        return image

    def _constraints(self) -> str | None:
        """The job's constraints file in the code channel: ``constraints.txt`` without the image's torch stack."""
        src = self.code / "constraints.txt"
        if not src.is_file():
            if self.project:
                log.warning("no constraints.txt in the code channel: the job installs %s unpinned", self.project)
            return None
        text, dropped = job_constraints(src.read_text())
        if not self.settings.image:  # the SDK's image for framework_version: a torch that needs replacing is an error
            text += f"{IMAGE_TORCH_NOTE}\ntorch=={self.framework_version}.*\n"
        (self.code / JOB_CONSTRAINTS).parent.mkdir(parents=True, exist_ok=True)
        (self.code / JOB_CONSTRAINTS).write_text(text)
        log.info("Job constraints %s: %d pins; the image's own torch/CUDA stack (%d packages) is left to it%s",
                 JOB_CONSTRAINTS, len(parse_pins(text)), len(dropped),
                 "" if self.settings.image else f", torch stays the image's {self.framework_version}")
        return JOB_CONSTRAINTS

    def requirement(self, spec: JobSpec) -> str | None:
        """What the job installs of this project, by name: ``bincount[s3,wandb]`` (None: no named project)."""
        return f"{self.project}{extras_suffix(spec.extras)}" if self.project else None

    def install_args(self, spec: JobSpec) -> list[str]:
        """``pip install`` arguments of the job, relative to the code channel ([]: nothing to install)."""
        target = [f".{extras_suffix(spec.extras)}"] if (self.code / "pyproject.toml").is_file() else []
        user = ["-r", self.settings.requirements] if self.settings.requirements else []
        if not target and not user:
            return []
        return [*(["-c", self.constraints] if self.constraints else []), *target, *user]

    def install_command(self, spec: JobSpec) -> str:
        """The job's pip command, for the log (the SDK runs it as ``pip install -r <requirements file>``)."""
        args = self.install_args(spec)
        return shlex.join(["pip", "install", *args]) if args else "(nothing)"

    def requirements_file(self, spec: JobSpec) -> str | None:
        """``_sagemaker_jobs/job<k>.requirements.txt``, ``install_args`` as a requirements file: nested
        ``-c``/``-r`` paths are relative to the file, ``.`` to the working directory (the code channel)."""
        args = self.install_args(spec)
        if not args:
            return None
        path = self.code / PICKLE_DIR / f"job{spec.idx}.requirements.txt"
        lines, rest = [f"# job {spec.idx}: {self.install_command(spec)}"], list(args)
        while rest:
            arg = rest.pop(0)
            lines.append(f"{arg} ../{rest.pop(0)}" if arg in ("-c", "-r") else arg)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path.relative_to(self.code).as_posix()
