"""``bincount compare`` on two real runs of a tiny sweep (linear vs CORAL head) and on damaged copies of them."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers.train import ROOT, sweep_jobs, trained_sweep

from bincount.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> list[Path]:
    return sweep_jobs(trained_sweep(tmp_path_factory))


def compare(capsys, *args) -> tuple[int, str, str]:
    rc = main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _predictions(run: Path) -> list[dict]:
    with open(run / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def _copy(run: Path, dst: Path) -> Path:
    return Path(shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoints")))


def _write_predictions(run: Path, rows: list[dict]) -> None:
    with open(run / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_json_report_has_config_diff_metrics_and_mcnemar_table(jobs, capsys):
    rc, out, err = compare(capsys, *jobs, "--format", "json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["config_diff"]["head.name"] == ["linear", "coral"]
    assert "model.backbone" not in report["config_diff"] and "seed" not in report["config_diff"]
    assert "paths.output_dir" not in report["config_diff"] and "trainer.default_root_dir" not in report["config_diff"]
    (pair,) = report["pairs"]
    a = {r["id"]: r for r in _predictions(jobs[0])}
    b = {r["id"]: r for r in _predictions(jobs[1])}
    a_ok = {i: a[i]["pred_count"] == a[i]["true_count"] for i in a}
    b_ok = {i: b[i]["pred_count"] == b[i]["true_count"] for i in b}
    expected = [[sum(a_ok[i] and b_ok[i] for i in a), sum(a_ok[i] and not b_ok[i] for i in a)],
                [sum(b_ok[i] and not a_ok[i] for i in a), sum(not a_ok[i] and not b_ok[i] for i in a)]]
    assert pair["mcnemar"]["table"] == expected and pair["num_samples"] == len(a)
    assert pair["mcnemar"]["method"] in {"exact binomial", "no discordant pairs"}  # 6 test bins: few discordant pairs
    assert 0 <= pair["mcnemar"]["pvalue"] <= 1
    acc = pair["bootstrap"]["acc"]
    assert acc["low"] <= acc["estimate"] <= acc["high"]
    assert acc["estimate"] == pytest.approx(report["metrics"]["A"]["test/acc"] - report["metrics"]["B"]["test/acc"], abs=1e-5)


def test_rich_table_shows_only_differing_keys_and_the_mcnemar_line(jobs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    rc, out, _ = compare(capsys, *jobs)
    assert rc == 0
    assert "Config (only keys that differ)" in out and "head.name" in out and "coral" in out
    config = out[out.index("Config (only keys that differ)"):out.index("Metrics")]
    assert "head.name" in config and "linear" in config
    assert "model.backbone" not in config and "data.img_size" not in config and "optimizer.lr" not in config
    assert "McNemar (" in out and "B right" in out and "bootstrap CI" in out and "test/acc" in out


def test_markdown_and_html_files(jobs, capsys, tmp_path):
    rc, out, _ = compare(capsys, *jobs, "--output", tmp_path / "cmp.md", "--bootstrap", "500")
    md = (tmp_path / "cmp.md").read_text()
    assert rc == 0 and "| head.name | linear | coral |" in md and "McNemar (" in md and "| A right |" in md

    rc, _, _ = compare(capsys, *jobs, "--format", "html", "--output", tmp_path / "cmp.html")
    page = (tmp_path / "cmp.html").read_text()
    parser = HTMLParser()
    parser.feed(page)
    assert rc == 0 and page.count("<table>") == 4 and "head.name" in page and "McNemar (" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline


def test_refuses_different_test_sets_naming_count_and_example(jobs, capsys, tmp_path):
    other = _copy(jobs[1], tmp_path / "other")
    rows = _predictions(other)
    dropped = rows.pop(0)["id"]
    rows[0]["id"] = "zz_renamed"
    _write_predictions(other, rows)
    rc, out, err = compare(capsys, jobs[0], other)
    assert rc == 1 and out == ""
    assert "not evaluated on the same test set" in err and "3 ids differ" in err and repr(dropped) in err
    assert "--no-stats" in err
    rc, out, _ = compare(capsys, jobs[0], other, "--no-stats", "--format", "markdown")
    assert rc == 0 and "head.name" in out and "McNemar" not in out


def test_refuses_same_ids_with_different_true_counts(jobs, capsys, tmp_path):
    other = _copy(jobs[1], tmp_path / "relabelled")
    rows = _predictions(other)
    rows[2]["true_count"] = str(int(rows[2]["true_count"]) + 1)
    _write_predictions(other, rows)
    rc, _, err = compare(capsys, jobs[0], other)
    assert rc == 1 and f"1 of {len(rows)} have different true counts" in err and repr(rows[2]["id"]) in err


def test_three_runs_pairwise_against_baseline(jobs, capsys, tmp_path):
    twin = _copy(jobs[1], tmp_path / "twin")  # same predictions as jobs[1]: no discordant pairs
    rc, out, err = compare(capsys, jobs[0], twin, "--baseline", jobs[1], "--format", "json", "--bootstrap", "200")
    assert rc == 0, err
    report = json.loads(out)
    assert report["runs"]["A"] == str(jobs[1]) and len(report["runs"]) == 3
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("A", "B"), ("A", "C")]
    assert report["pairs"][1]["mcnemar"]["method"] == "no discordant pairs"
    assert report["pairs"][1]["mcnemar"]["pvalue"] == 1.0
    rc, out, _ = compare(capsys, jobs[0], twin, "--baseline", jobs[1], "--format", "markdown", "--bootstrap", "200")
    assert rc == 0 and out.count("McNemar (") == 2 and "not corrected for multiple comparisons" in out


@pytest.mark.parametrize("damage,expected", [
    ("metrics", "metrics.json: malformed JSON"),
    ("predictions", "predictions.csv: missing"),
])
def test_broken_run_is_named(jobs, capsys, tmp_path, damage, expected):
    other = _copy(jobs[1], tmp_path / "damaged")
    if damage == "metrics":
        (other / "metrics.json").write_text("{oops")
    else:
        (other / "predictions.csv").unlink()
    rc, _, err = compare(capsys, jobs[0], other)
    assert rc == 1 and expected in err and str(other) in err


def test_bad_arguments(jobs, capsys, tmp_path):
    rc, _, err = compare(capsys, jobs[0], jobs[0])
    assert rc == 2 and "at least two different runs" in err
    rc, _, err = compare(capsys, *jobs, "--output", tmp_path / "x.txt")
    assert rc == 2 and "'.txt'" in err and ".md" in err
    rc, _, err = compare(capsys, *jobs, "--confidence", "95")
    assert rc == 2 and "--confidence" in err


def test_no_stats_needs_neither_scipy_nor_torch(jobs):
    code = ("import sys; from bincount.cli import main; rc = main(['compare', *sys.argv[1:], '--no-stats', "
            "'--format', 'json']); print('HEAVY', sorted(m for m in ('torch', 'scipy') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, jobs)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_without_scipy_says_which_extra_to_install(jobs):
    """scipy blocked as if not installed: McNemar needs it, and the error names the extra and --no-stats."""
    code = ("import sys; sys.modules['scipy'] = None; from bincount.cli import main; "
            "sys.exit(main(['compare', *sys.argv[1:]]))")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, jobs)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1 and "pip install -c constraints.txt scipy" in proc.stderr and "--no-stats" in proc.stderr


def test_paths_inside_each_run_are_not_differences(jobs, capsys, monkeypatch, tmp_path):
    """The default config puts checkpoints and logs under the run's own directory: those keys differ between
    any two runs by construction (issue 17), also for copied runs, whose config names the original directory."""
    import shutil

    import yaml

    copies = []
    for i, job in enumerate(jobs):
        copy = shutil.copytree(job, tmp_path / f"copy{i}")
        config = yaml.safe_load((copy / "resolved_config.yaml").read_text())
        out = config["paths"]["output_dir"]
        config["callbacks"] = {"model_checkpoint": {"dirpath": f"{out}/checkpoints"}}
        config["logger"] = {"csv": {"save_dir": out}}
        (copy / "resolved_config.yaml").write_text(yaml.safe_dump(config))
        copies.append(copy)
    monkeypatch.setenv("COLUMNS", "250")
    rc, out, err = compare(capsys, *copies)
    assert rc == 0, err
    config = out[out.index("Config (only keys that differ)"):out.index("Metrics")]
    table, note = config.split("compared as") if "compared as" in config else (config, "")
    assert "head.name" in table and "dirpath" not in table and "save_dir" not in table
    assert re.search(r"2 keys naming each run's own directory\s+$", table), config
    assert "callbacks.model_checkpoint.dirpath" in note and "logger.csv.save_dir" in note
    rc, out, _ = compare(capsys, *copies, "--format", "json")
    assert rc == 0 and not [k for k in json.loads(out)["config_diff"] if "dirpath" in k or "save_dir" in k]
