"""The inference image's Dockerfile, checked without Docker (these machines have none).

What SageMaker depends on is checked from the file itself: an exec-form ENTRYPOINT (a shell-form one
would swallow the ``serve`` argument SageMaker passes), the module it runs, port 8080, a non-root
user; and what the build depends on is checked against the repository: every COPY source exists
and is let through ``.dockerignore``, the torch pins the RUN line greps for are in constraints.txt,
and the extras it installs exist. The entry itself runs in tests/test_serve.py's container rehearsal.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def only(name: str) -> str:
    found = [arg for op, arg in instructions() if op == name]
    assert found, f"Dockerfile has no {name}"
    return found[-1]  # Docker uses the last one


def test_entrypoint_is_exec_form_and_runs_the_container_module():
    entry = json.loads(only("ENTRYPOINT"))  # shell form is not JSON: this fails on it
    assert entry == ["python", "-m", "bincount.serve.container"]
    assert importlib.util.find_spec(entry[2]) is not None
    assert json.loads(only("CMD")) == ["serve"]


def test_serves_on_8080_as_a_user_that_is_not_root():
    assert only("EXPOSE").split() == ["8080"]
    assert only("USER") not in ("root", "0")


def test_one_file_builds_both_variants():
    args = dict(re.match(r"(\w+)(?:=(.*))?", a).groups() for op, a in instructions() if op == "ARG")
    assert args.get("BASE") and "TORCH_INDEX" in args
    assert args["TORCH_INDEX"].endswith("/whl/cpu")  # the default build is the CPU one
    assert only("FROM") == "${BASE}"


def dockerignored(path: str) -> bool:
    ignored = False
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_every_copied_path_exists_and_reaches_the_build():
    sources = [s for op, arg in instructions() if op == "COPY" for s in arg.split()[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), f"{source} is copied but .dockerignore drops it"
    for private in (".venv", "outputs", "data", ".git", "tests"):
        assert dockerignored(private), f"{private} would be sent to the Docker daemon"


def test_pins_and_extras_it_installs_exist():
    run = " ".join(arg for op, arg in instructions() if op == "RUN")
    constraints = (ROOT / "constraints.txt").read_text()
    for regex in re.findall(r"grep -E '([^']+)' constraints\.txt", run):
        assert re.search(regex, constraints, re.M), f"constraints.txt has no line matching {regex}"
    assert len(re.findall(r"grep -E", run)) == 2  # torch and torchvision
    extras = re.search(r'"\.\[([\w,]+)\]"', run).group(1).split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(declared) and "serve" in extras
    assert "-c constraints.txt" in run
