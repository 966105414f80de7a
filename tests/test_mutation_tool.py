"""tools/mutation.py asks mutmut for what still needs a verdict, so a budgeted run goes on where the last
stopped and a new test gets its survivors re-checked (mutmut itself re-runs everything a glob matches)."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tool(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("mutation_tool", ROOT / "tools" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "MUTANTS", tmp_path / "mutants")
    return module


def _module(root: Path, dotted: str, codes: dict | None, meta_newer: bool = True) -> None:
    source = root / "src" / (dotted.replace(".", "/") + ".py")
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("x = 1\n")
    if codes is None:
        return
    meta = root / "mutants" / "src" / (dotted.replace(".", "/") + ".py.meta")
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": {f"{dotted}.f__mutmut_{i}": c for i, c in enumerate(codes)}}))
    t = source.stat().st_mtime + (10 if meta_newer else -10)
    os.utime(meta, (t, t))


def test_only_mutants_without_a_lasting_verdict_are_asked_for_by_name(tool, tmp_path):
    # killed, survived, no tests, not checked, timeout, interrupted
    _module(tmp_path, "pkg.a", [1, 0, 33, None, 36, 2])
    assert tool.to_check(["pkg"], fresh=False) == ["pkg.a.f__mutmut_1", "pkg.a.f__mutmut_2",
                                                  "pkg.a.f__mutmut_3", "pkg.a.f__mutmut_5"]


def test_a_changed_or_new_module_is_asked_for_whole_and_other_packages_are_left_out(tool, tmp_path):
    _module(tmp_path, "pkg.changed", [1, 0], meta_newer=False)
    _module(tmp_path, "pkg.new", None)
    _module(tmp_path, "other.b", [0])
    assert tool.to_check(["pkg"], fresh=False) == ["pkg.changed.*", "pkg.new.*"]


def test_a_new_or_changed_module_makes_mutmut_trace_the_tests_again(tool, tmp_path, capsys):
    """mutmut's incremental map traces only new test names: a moved function would be reached by none."""
    stats = tmp_path / "mutants" / "mutmut-stats.json"
    _module(tmp_path, "pkg.same", [1, 0])
    stats.write_text("{}")
    assert tool.forget_test_map(["pkg"]) is False and stats.exists()
    _module(tmp_path, "pkg.moved", None)
    _module(tmp_path, "pkg.changed", [1], meta_newer=False)
    assert tool.forget_test_map(["other"]) is False and stats.exists(), "only the named packages count"
    assert tool.forget_test_map(["pkg"]) is True and not stats.exists()
    assert "new or changed modules (pkg.changed, pkg.moved): mutmut traces again" in capsys.readouterr().out
    assert tool.forget_test_map(["pkg"]) is False, "no map, nothing to forget"
    stats.write_text("{}")
    _module(tmp_path, "pkg.moved", [1])
    _module(tmp_path, "pkg.changed", [1])
    assert tool.forget_test_map(["pkg"]) is False and tool.forget_test_map(["pkg"], fresh=True) is True
    assert "--fresh: mutmut traces again" in capsys.readouterr().out


def test_fresh_asks_for_every_mutant_of_each_package(tool, tmp_path):
    _module(tmp_path, "pkg.a", [1, 1])
    assert tool.to_check(["pkg", "hydra_plugins"], fresh=True) == ["pkg.*", "hydra_plugins.*"]


def test_a_package_with_every_verdict_final_runs_nothing(tool, tmp_path, capsys):
    _module(tmp_path, "pkg.a", [1, 36])
    assert tool.run_mutmut(["pkg"], budget_s=1, max_children=1) == 0
    assert "every mutant of these packages has a verdict" in capsys.readouterr().out


def test_scores_count_a_mutant_no_test_reaches_as_a_survivor(tool):
    results = {"pkg.a.f__mutmut_1": "killed", "pkg.a.f__mutmut_2": "timeout", "pkg.a.f__mutmut_3": "no tests",
               "pkg.a.f__mutmut_4": "survived", "pkg.a.f__mutmut_5": "not checked", "pkgx.b.f__mutmut_1": "killed"}
    assert tool.package_scores(results, ["pkg"]) == {"pkg": (2, 4, 0.5)}


def test_the_table_shows_how_many_kills_were_timeouts(tool):
    results = {"pkg.a.f__mutmut_1": "killed", "pkg.a.f__mutmut_2": "timeout", "pkg.a.f__mutmut_3": "survived"}
    assert tool.table(results) == [("pkg.a", 3, 2, 1, 1, 0, 0, 2 / 3)]


def test_timeouts_are_asked_for_again_only_when_wanted(tool, tmp_path):
    _module(tmp_path, "pkg.a", [1, 36, 0])
    assert tool.to_check(["pkg"], fresh=False, timeouts=True) == ["pkg.a.f__mutmut_1", "pkg.a.f__mutmut_2"]
