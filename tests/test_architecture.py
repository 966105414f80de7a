"""The floor plan, checked from the source with ``ast`` (nothing is imported):

- every package sits in one layer of ``LAYERS`` (the table in docs/architecture.md), and imports point
  only down or sideways, never up;
- no two packages import each other, directly or round a longer circle;
- no module is over ``MAX_LINES``;
- every third-party module the code imports is declared in pyproject.toml: in the core dependencies,
  or in the extra that the importing package belongs to (``EXTRAS``).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
MAX_LINES = 400

# Lowest first; a package may import from its own layer and the ones below it.
LAYERS = [
    {"bincount.layout", "bincount.samples", "bincount.text", "bincount.secrets", "bincount.untrusted_tar",
     "bincount.safe_checkpoint", "bincount.cli_values", "bincount.aws"},  # contracts
    {"bincount.s3"},  # storage
    {"bincount.manifest"},  # the index of a dataset
    {"bincount.shards"},  # packing and streaming
    {"bincount.data"},  # datasets, transforms, synthetic bins, the DataModule
    {"bincount.models", "bincount.metrics", "bincount.callbacks",
     "bincount.answers"},  # the LightningModule, what it reports, and its answers' one format
    {"bincount.config", "bincount.resolvers", "bincount.resume", "bincount.loggers", "bincount.wandb_logger",
     "bincount.report", "bincount.compare", "bincount.sweep", "bincount.sagemaker", "bincount.serve",
     "bincount.deploy", "bincount.bundle", "bincount.predict", "bincount.train", "bincount.quiet", "bincount.cli",
     "bincount.commands",
     "bincount.secrets_config", "hydra_plugins.bincount_optuna_sweeper", "hydra_plugins.bincount_sagemaker_launcher",
     "bincount"},  # runs and tools; ``bincount`` itself is the facade (a lazy ``bincount.load_model``)
]
# Which extras a package's imports may come from, beyond the core dependencies.
EXTRAS = {
    "bincount.s3": {"s3"}, "bincount.shards": {"s3"}, "bincount.data": {"s3"},
    "bincount.sagemaker": {"sagemaker"}, "hydra_plugins.bincount_sagemaker_launcher": {"sagemaker"},
    "bincount.aws": {"sagemaker"},
    "bincount.sweep": {"sweep"}, "hydra_plugins.bincount_optuna_sweeper": {"sweep"},
    "bincount.wandb_logger": {"wandb"}, "bincount.compare": {"analysis"}, "bincount.report": {"report"},
    "bincount.serve": {"serve", "s3", "sagemaker"}, "bincount.deploy": {"sagemaker", "s3"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every absolute import in the file, lazy ones included."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, ast.If) for n in s.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in top))
    return found


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in _modules().items():
        for name, _ in _imports(path):
            if name.split(".")[0] in ("bincount", "hydra_plugins") and name != "bincount":
                if _package(name) != _package(module):
                    graph[_package(module)].add(_package(name))
    return graph


def _layer(package: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if package in layer:
            return rank
    raise AssertionError(f"package {package} is in no layer: add it to LAYERS here and to docs/architecture.md")


def test_imports_point_down():
    upward = [f"{src} (layer {_layer(src)}) imports {dst} (layer {_layer(dst)})"
              for src, dsts in sorted(_package_graph().items()) for dst in sorted(dsts) if _layer(dst) > _layer(src)]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


JOB_SIDE = "bincount.sagemaker.job"


def test_the_job_side_imports_only_the_standard_library_and_itself():
    """Inside the training container: nothing of the launcher's side, nothing third-party at module level
    (lazy imports of what the job installs, such as boto3 or packaging, are allowed); the launcher side may
    import the job side. ``tests/test_sagemaker_job_side.py`` checks the same by importing in a fresh Python."""
    job = {m: p for m, p in _modules().items() if m == JOB_SIDE or m.startswith(JOB_SIDE + ".")}
    assert {f"{JOB_SIDE}.entry", f"{JOB_SIDE}.callback", f"{JOB_SIDE}.contract"} <= set(job)
    wrong = []
    for module, path in job.items():
        for name, top in _imports(path):
            ours = name.split(".")[0] in ("bincount", "hydra_plugins")
            if ours and not (name == JOB_SIDE or name.startswith(JOB_SIDE + ".")):
                wrong.append(f"{module} imports {name} (the launcher's side, or another package)")
            elif top and not ours and name.split(".")[0] not in sys.stdlib_module_names | {"__future__"}:
                wrong.append(f"{module} imports {name} at module level")
    assert not wrong, "\n".join(wrong)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_circles_between_packages():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the finder works
    assert not find_cycles(_package_graph()), f"import circles between packages: {find_cycles(_package_graph())}"


def test_no_module_is_oversized():
    big = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them along their seams): {big}"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {_normal(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in reqs}

    extras = {k: names(v) for k, v in project["optional-dependencies"].items()}
    return names(project["dependencies"]), extras


@pytest.mark.slow  # reads every installed distribution's metadata: seconds
def test_every_third_party_import_is_declared():
    core, extras = _declared()
    dists = packages_distributions()
    missing = []
    for module, path in _modules().items():
        allowed = set(core)
        for extra in EXTRAS.get(_package(module), ()):
            allowed |= extras.get(extra, set())
        for name, at_top in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("bincount", "hydra_plugins", "__future__"):
                continue
            if top == "hydra":
                candidates = {"hydra-core"}
            else:
                candidates = {_normal(d) for d in dists.get(top, [top])}
            if not candidates & allowed:
                where = "core" if not EXTRAS.get(_package(module)) else f"core or extras {sorted(EXTRAS[_package(module)])}"
                missing.append(f"{module} imports {name} ({'/'.join(sorted(candidates))}), not declared in {where}")
    assert not missing, "undeclared imports:\n" + "\n".join(sorted(set(missing)))


def test_dev_extra_names_the_other_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    self_ref = [r for r in extras["dev"] if r.startswith("bincount[")]
    assert self_ref, "dev should install bincount[<every other extra>] instead of repeating their lists"
    named = set(self_ref[0][len("bincount["):-1].split(","))
    assert named == set(extras) - {"dev"}, f"dev names {sorted(named)}, extras are {sorted(set(extras) - {'dev'})}"


def test_litdata_floor_is_checked_with_both_versions_named():
    import pytest

    from bincount.shards.litdata_check import LITDATA_MIN, check_litdata_version, require_litdata

    require_litdata()  # the installed one (constraints.txt) passes
    with pytest.raises(ImportError, match=rf"litdata 0\.2\.50 is installed; .* needs litdata>={LITDATA_MIN}"):
        check_litdata_version("0.2.50")
    with pytest.raises(ImportError, match="not installed"):
        check_litdata_version(None)
    check_litdata_version(LITDATA_MIN)
    floor = next(r for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["s3"]
                 if r.startswith("litdata"))
    assert floor == f"litdata>={LITDATA_MIN}", f"pyproject's {floor!r} and the import check disagree"


def test_a_deprecation_from_bincount_fails_the_suite():
    """pyproject's filterwarnings turns DeprecationWarnings raised from bincount's modules into errors."""
    import pytest

    with pytest.raises(DeprecationWarning, match="old API"):
        exec("import warnings\nwarnings.warn('old API', DeprecationWarning)", {"__name__": "bincount.somewhere"})
