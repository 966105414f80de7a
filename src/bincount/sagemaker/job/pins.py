"""The versions a job installs: the project's ``constraints.txt`` minus the image's PyTorch/CUDA stack.

Launcher side, :func:`job_constraints` writes the job's copy of the constraints: every ``name==version``
pin except the packages the SageMaker PyTorch image provides (torch, torchvision, torchaudio, triton, every
``nvidia-*`` and ``cuda-*`` package). A constraint only restricts what pip installs; with no pin for them,
and installed versions that satisfy the project's ``torch>=2.4``, pip leaves the image's stack alone.
Job side, :func:`check_installed` compares what is installed with those pins before training starts.
Standard library only (``packaging`` lazily: the project depends on it, so it is there once pip ran).
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

# The image's own stack: never pinned for a job, never compared (the image's build of torch is the one to use).
IMAGE_STACK = re.compile(r"^(torch|torchvision|torchaudio|torchtext|torchdata|triton|pytorch-triton(-.+)?"
                         r"|nvidia-.+|cuda-.+|cupy-cuda.+)$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*$")


class PinMismatch(RuntimeError):
    """The job's installed packages are not the versions the launcher pinned for it."""


def canonical(name: str) -> str:
    """PEP 503 name: ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_image_stack(name: str) -> bool:
    return bool(IMAGE_STACK.match(canonical(name)))


def parse_pins(text: str) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line (comments and options skipped)."""
    pins = {}
    for line in text.splitlines():
        m = PIN.match(line.strip())
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def job_constraints(text: str) -> tuple[str, list[str]]:
    """(the job's constraints, the image-stack pins left out): comments kept, those pins dropped."""
    kept, dropped = [], []
    for line in text.splitlines():
        m = PIN.match(line.strip())
        if m and is_image_stack(m.group(1)):
            dropped.append(canonical(m.group(1)))
        else:
            kept.append(line)
    note = ("# The job's copy (bincount.sagemaker.job.pins): the image's torch/CUDA stack is not pinned here, so pip "
            "keeps the image's build: " + ", ".join(dropped))
    return "\n".join([note, *kept]) + "\n", dropped


def requirement_closure(requirement: str) -> set[str]:
    """Canonical names of ``requirement`` (e.g. ``bincount[s3,wandb]``) and everything it pulls in, as
    installed (markers evaluated for this interpreter); a name not installed is in the set all the same."""
    from packaging.requirements import Requirement

    seen: dict[str, set[str]] = {}
    todo = [Requirement(requirement)]
    while todo:
        req = todo.pop()
        name, extras = canonical(req.name), set(req.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in seen[name] | {""}):
                todo.append(dep)
    return set(seen)


def differences(pins: dict[str, str], requirement: str) -> list[tuple[str, str, str]]:
    """(package, expected, found) for each pinned package of ``requirement``'s closure installed otherwise."""
    from packaging.version import InvalidVersion, Version

    out = []
    for name in sorted(requirement_closure(requirement)):
        expected = pins.get(name)
        if expected is None or is_image_stack(name):
            continue
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append((name, expected, "not installed"))
            continue
        try:
            same = Version(found) == Version(expected)
        except InvalidVersion:
            same = found == expected
        if not same:
            out.append((name, expected, found))
    return out


def check_installed(constraints: Path, requirement: str) -> int:
    """Raise :class:`PinMismatch` naming every difference; the number of pinned packages checked otherwise."""
    from packaging.requirements import Requirement

    pins = parse_pins(constraints.read_text())
    root = Requirement(requirement).name
    try:
        metadata.distribution(root)
    except metadata.PackageNotFoundError:
        raise PinMismatch(f"{root} is not installed: the job's pip install did not run or failed") from None
    diff = differences(pins, requirement)
    if diff:
        listed = "; ".join(f"{name}: expected {expected}, found {found}" for name, expected, found in diff)
        raise PinMismatch(f"installed packages differ from the versions pinned for this job in {constraints} "
                          f"({requirement}): {listed}")
    return len({name for name in requirement_closure(requirement) & set(pins) if not is_image_stack(name)})
