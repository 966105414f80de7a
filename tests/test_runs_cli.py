"""``bincount runs`` on real run directories: a real two-job sweep, plus copies with edited numbers and a broken one."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.train import ROOT, sweep_jobs, trained_sweep

from bincount.cli import main

pytestmark = pytest.mark.slow


def _copy_run(src: Path, dst: Path, **metric_updates) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    metrics = json.loads((dst / "metrics.json").read_text())
    for key, value in metric_updates.items():
        key = key.replace("__", "/")
        if value is None:
            metrics.pop(key, None)
        else:
            metrics[key] = value
    (dst / "metrics.json").write_text(json.dumps(metrics))
    return dst


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The real sweep plus single runs: ``good`` (test/acc 0.9), ``meh`` (0.5), ``untested`` (no test/acc), ``broken``."""
    logs = trained_sweep(tmp_path_factory)
    root = tmp_path_factory.mktemp("runs_root")
    shutil.copytree(logs / "train" / "multiruns", root / "train" / "multiruns", ignore=shutil.ignore_patterns("checkpoints"))
    job0 = sweep_jobs(logs)[0]
    _copy_run(job0, root / "train" / "runs" / "good", test__acc=0.9, test__mae=0.2)
    _copy_run(job0, root / "train" / "runs" / "meh", test__acc=0.5, test__mae=0.7)
    _copy_run(job0, root / "train" / "runs" / "untested", test__acc=None)
    broken = _copy_run(job0, root / "train" / "runs" / "broken")
    (broken / "metrics.json").write_text('{"test/acc": 0.99,')  # truncated: a run killed while writing? no, a damaged file
    return root


def runs(capsys, *args) -> tuple[int, str, str]:
    rc = main(["runs", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_sort_desc_by_test_acc_lists_best_first_and_missing_last(root, capsys):
    rc, out, err = runs(capsys, root, "--sort", "test/acc", "--desc", "--format", "json")
    assert rc == 0
    rows = json.loads(out)
    names = [Path(r["run"]).name for r in rows]
    assert names[:2] == ["good", "meh"] and names[-1] == "untested"
    accs = [r["test/acc"] for r in rows if r["test/acc"] is not None]
    assert accs == sorted(accs, reverse=True) and len(rows) == 5
    assert "broken" in err and str(root / "train" / "runs" / "broken" / "metrics.json") in err and "malformed JSON" in err


def test_sort_ascending_keeps_missing_last(root, capsys):
    rc, out, _ = runs(capsys, root, "--sort", "test/acc", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and [Path(r["run"]).name for r in rows][-3:] == ["meh", "good", "untested"]
    assert rows[-1]["test/acc"] == ""


def test_sort_by_any_metric_adds_its_column(root, capsys):
    rc, out, _ = runs(capsys, root, "--sort", "test/mae", "--format", "json")
    rows = json.loads(out)
    assert rc == 0 and [Path(r["run"]).name for r in rows][0] == "good" and "test/mae" in rows[0]


def test_sweep_filter_and_sweep_summary(root, capsys):
    sweep = next((root / "train" / "multiruns").iterdir()).name
    rc, out, _ = runs(capsys, root, "--sweep", sweep, "--format", "json")
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 2 and {r["sweep"] for r in rows} == {sweep}
    assert any("head=coral" in r["overrides"] for r in rows) and any("head=linear" in r["overrides"] for r in rows)
    rc, out, _ = runs(capsys, root, "--format", "markdown")
    assert "## Sweeps" in out and f"| train/multiruns/{sweep} | 2 | val/acc |" in out


def test_rich_table_shows_runs_and_sweeps(root, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    rc, out, err = runs(capsys, root, "--sort", "test/acc", "--desc")
    assert rc == 0 and "Runs under" in out and "Sweeps" in out
    assert out.index("train/runs/good") < out.index("train/runs/meh") < out.index("train/runs/untested")
    assert "0.9000" in out and "broken" not in out and "broken" in err


def test_default_root_comes_from_env(root, capsys, monkeypatch):
    monkeypatch.setenv("BINCOUNT_LOG_DIR", str(root))
    rc, out, _ = runs(capsys, "--format", "json")
    assert rc == 0 and len(json.loads(out)) == 5


def test_bad_sort_key_names_the_choices(root, capsys):
    rc, _, err = runs(capsys, root, "--sort", "test/accuracy")
    assert rc == 2 and "'test/accuracy'" in err and "test/acc" in err and "per-class keys" in err


def test_missing_root_is_an_error(tmp_path, capsys):
    rc, _, err = runs(capsys, tmp_path / "nowhere")
    assert rc == 1 and "nowhere" in err and "not a directory" in err


def test_empty_root_says_so(tmp_path, capsys):
    rc, out, _ = runs(capsys, tmp_path, "--format", "markdown")
    assert rc == 0 and "no runs found" in out


def test_entry_point_imports_neither_torch_nor_scipy(root):
    code = ("import sys; from bincount.cli import main; rc = main(['runs', sys.argv[1], '--format', 'json']); "
            "print('HEAVY', sorted(m for m in ('torch', 'scipy', 'lightning') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
