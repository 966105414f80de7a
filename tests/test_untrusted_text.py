"""Text written by whoever could write a run directory, a sweep or a bucket is shown inert (issue 14, item 10).

A run's override carries rich markup (a hyperlink), a terminal escape (retitles the window) and HTML (loads
a page when the Markdown is rendered); an S3 key carries the same. Each output must show the text as typed
or drop the control characters, never act on them.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import yaml
from helpers.train import sweep_jobs, trained_sweep

from bincount.cli import main

MARKUP = "[link=http://evil.example]click[/link]"
ESCAPE = "\x1b]0;pwned\x07"
HTML = "<img src=http://evil.example/x.png>"
PLANTED = f"+note={MARKUP}{ESCAPE}{HTML}"


@pytest.fixture(scope="module")
def planted_root(tmp_path_factory) -> Path:
    """Two real runs; one was started with an override that holds markup, an escape and HTML."""
    logs = trained_sweep(tmp_path_factory)
    root = tmp_path_factory.mktemp("untrusted")
    for name, job in zip(("plain", "planted"), sweep_jobs(logs)):
        shutil.copytree(job, root / "train" / "runs" / name, ignore=shutil.ignore_patterns("checkpoints"))
    overrides = root / "train" / "runs" / "planted" / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump([*yaml.safe_load(overrides.read_text()), PLANTED]))
    return root


def cli(capsys, monkeypatch, *argv) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", "400")  # a wide table: the planted text stays on one line
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_runs_table_shows_markup_as_typed_and_drops_escapes(planted_root, capsys, monkeypatch):
    rc, out, err = cli(capsys, monkeypatch, "runs", planted_root)
    assert rc == 0, err
    assert MARKUP in out, "the markup is shown as typed, not read as a link"
    assert "\x1b" not in out + err and "\x07" not in out


@pytest.mark.slow
def test_runs_markdown_and_csv_keep_html_and_escapes_out(planted_root, capsys, monkeypatch):
    rc, out, _ = cli(capsys, monkeypatch, "runs", planted_root, "--format", "markdown")
    assert rc == 0 and "<img" not in out and "&lt;img src=http://evil.example/x.png&gt;" in out
    assert "\\[link=http://evil.example\\]click\\[/link\\]" in out and "\x1b" not in out
    rc, out, _ = cli(capsys, monkeypatch, "runs", planted_root, "--format", "csv")
    assert rc == 0 and "\x1b" not in out and MARKUP in out


@pytest.mark.slow
def test_compare_shows_the_planted_override_inert(planted_root, capsys, monkeypatch):
    runs = planted_root / "train" / "runs"
    rc, out, err = cli(capsys, monkeypatch, "compare", runs / "plain", runs / "planted")
    assert rc == 0, err
    assert MARKUP in out and "\x1b" not in out + err
    rc, out, _ = cli(capsys, monkeypatch, "compare", runs / "plain", runs / "planted", "--format", "markdown")
    assert rc == 0 and "<img" not in out and "\x1b" not in out


def test_an_error_naming_a_planted_path_prints_no_escape(tmp_path, capsys, monkeypatch):
    rc, _, err = cli(capsys, monkeypatch, "runs", tmp_path / f"gone{ESCAPE}")
    assert rc == 1 and "gone]0;pwned" in err and "\x1b" not in err and "\x07" not in err


def test_fetch_report_prints_refused_keys_inert(capsys):
    from bincount.s3.fetch import print_report

    key = f"metadata/{MARKUP}{ESCAPE}.json"
    print_report({"source": "s3://src", "dest": "/d", "fetched": 0, "missing_upstream": [], "failures": [],
                   "refused_keys": [key], "bad_metadata": [], "report_file": "/d/r.json"})
    err = capsys.readouterr().err
    assert MARKUP in err and "\x1b" not in err and "\x07" not in err


def test_sweep_table_shows_a_planted_parameter_inert(tmp_path):
    from types import SimpleNamespace

    from rich.console import Console

    from bincount.sweep.table import print_table

    trial = SimpleNamespace(number=0, status="FAIL", objective=None, params={"note": MARKUP + ESCAPE}, metrics={},
                            duration_s=1.0, reason=f"boom {MARKUP}{ESCAPE}")
    console = Console(record=True, width=400, force_terminal=False, file=io.StringIO())
    print_table([trial], "val/acc", None, tmp_path, "", console=console)
    text = console.export_text()
    assert text.count(MARKUP) == 2, "in the table and in the failure line, as typed"
    assert "\x1b" not in text and "\x07" not in text
