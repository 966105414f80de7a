"""Every ``bincount`` subcommand keeps the conventions of :mod:`bincount.cli`, so scripts can rely on them:
``--help`` on stdout with status 0; a usage mistake -> 2, a failure at run time -> 1, both with the
message on stderr naming the bad value and no traceback.

The subcommands come from the CLI's own registry, so a new one is covered automatically; it fails
``test_every_subcommand_has_cases`` until it adds its cases to ``USAGE`` and ``RUNTIME`` below.
Everything runs in process (``main(argv)`` returns the status), except what needs the real process exit.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from bincount import cli

COMMANDS = list(cli.SUBCOMMANDS)

# name -> (argv after the name, text the message must contain): a value argparse cannot reject by itself.
# None: the subcommand has no such checks (the unknown-option case below still covers it).
USAGE = {
    "render": (["{tmp}/out", "--num-images", "0"], "num_images"),
    "fetch": (["{tmp}/dest", "--counts", "5-1", "--no-progress"], "'5-1'"),
    "pack": (["{tmp}", "--bad-input", "maybe"], "'maybe'"),
    "report": (["{tmp}/a", "{tmp}/b", "--output", "{tmp}/x.html"], "--output takes one RUN_DIR"),
    "runs": (["{tmp}", "--sort", "nope"], "'nope'"),
    "compare": (["{tmp}/a", "{tmp}/b", "--alpha", "2"], "--alpha"),
    "sweep-report": None,
    "export": None,
    "predict": (["{tmp}/model", "{tmp}", "--batch-size", "0"], "--batch-size"),
    "serve": (["{tmp}/model", "--allow-s3", "s3://bucket/../x"], "'..' parts"),
    "deploy": (["{tmp}/model", "--endpoint-name", "e", "--instance-count", "0"], "--instance-count"),
    "invoke": None,
    "undeploy": None,
}


# name -> [(case id, argv after the name, text the message must contain, marks)]: the arguments are
# valid, the world is not (a path that is missing or is a file).
RUNTIME = {
    "render": [
        ("out-dir-under-a-file", ["{tmp}/a_file/out", "--num-images", "2", "--workers", "1", "--no-progress"],
         "a_file", ()),
        ("out-dir-not-a-render", ["{tmp}/foreign", "--num-images", "2", "--workers", "1", "--no-progress"],
         "not a synthetic render", ()),
    ],
    "fetch": [
        ("missing-file-list", ["{tmp}/dest", "--file-list", "{tmp}/missing.json", "--no-progress"], "missing.json", ()),
        ("missing-source-dir", ["{tmp}/dest", "--all", "--source", "{tmp}/missing", "--no-progress"], "missing", ()),
        ("missing-source-dir-counts", ["{tmp}/dest", "--counts", "1-2", "--source", "{tmp}/missing", "--no-progress"],
         "no such directory", ()),
    ],
    "pack": [
        ("missing-src", ["{tmp}/missing", "--no-progress"], "missing", ()),
    ],
    "report": [("missing-run-dir", ["{tmp}/missing"], "missing", ())],
    "runs": [("missing-root", ["{tmp}/missing"], "missing", ())],
    "compare": [("missing-runs", ["{tmp}/missing_a", "{tmp}/missing_b"], "missing_a", ())],
    "sweep-report": [("missing-sweep-dir", ["{tmp}/missing"], "missing", ())],
    "export": [
        ("missing-run", ["{tmp}/missing_run"], "missing_run", ()),
        ("not-a-run", ["{tmp}/foreign"], "resolved_config.yaml", ()),
    ],
    "predict": [
        ("missing-model", ["{tmp}/missing_model", "{tmp}", "-o", "{tmp}/p.csv", "--no-progress"], "missing_model", ()),
        ("not-a-bundle", ["{tmp}/foreign", "{tmp}", "-o", "{tmp}/p.csv", "--no-progress"], "bincount-model.json", ()),
    ],
    "serve": [
        ("missing-model", ["{tmp}/missing_model", "--port", "0"], "missing_model", ()),
        ("not-a-bundle", ["{tmp}/foreign", "--port", "0"], "bincount-model.json", ()),
    ],
    # Refused before any AWS request (these machines have no AWS): tests/test_deploy.py covers the requests.
    "deploy": [
        ("bad-role", ["{tmp}/model", "--endpoint-name", "e", "--role", "admin", "--image", "i"], "'admin'", ()),
        ("bad-name", ["{tmp}/model", "--endpoint-name", "no_underscores"], "'no_underscores'", ()),
    ],
    "invoke": [("missing-image", ["e", "{tmp}/missing.jpg"], "missing.jpg", ())],
    "undeploy": [("bad-name", ["bad name"], "'bad name'", ())],
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "foreign" / "bin-images").mkdir(parents=True)
    (tmp_path / "foreign" / "bin-images" / "00001.jpg").write_bytes(b"\xff\xd8")  # ABID files no render wrote
    return tmp_path


def run_cli(argv: list[str], tmp: Path, capsys, caplog) -> tuple[int, str, str]:
    """``bincount ARGV`` in process; an exception escaping ``main`` (a traceback) fails the test by itself."""
    status = cli.main([a.replace("{tmp}", str(tmp)) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + caplog.text
    return status, out, err


def test_every_subcommand_has_cases():
    assert set(USAGE) == set(COMMANDS), "add the new subcommand's usage-mistake case to USAGE"
    assert set(RUNTIME) == set(COMMANDS) and all(RUNTIME.values()), "add a run-time failure case to RUNTIME"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_goes_to_stdout(name, workdir, capsys, caplog):
    status, out, err = run_cli([name, "--help"], workdir, capsys, caplog)
    assert (status, err) == (0, "") and out.startswith(f"usage: bincount {name}")


@pytest.mark.parametrize("name", COMMANDS)
def test_unknown_option_is_a_usage_mistake(name, workdir, capsys, caplog):
    """argparse's own checks: the unknown option, or first a required argument that is missing."""
    status, out, err = run_cli([name, "--no-such-option"], workdir, capsys, caplog)
    assert (status, out) == (2, "") and err.startswith("usage: bincount")
    assert re.search(r"^bincount( \S+)?: error: (unrecognized arguments: --no-such-option|.*required)", err, re.M), err


@pytest.mark.parametrize("name", [n for n in COMMANDS if USAGE.get(n)])
def test_bad_value_is_a_usage_mistake(name, workdir, capsys, caplog):
    argv, needle = USAGE[name]
    status, out, err = run_cli([name, *argv], workdir, capsys, caplog)
    assert (status, out) == (2, ""), err
    assert f"bincount {name}: error:" in err and needle in err


@pytest.mark.parametrize("name,argv,needle", [
    pytest.param(name, argv, needle, id=f"{name}-{case}", marks=marks)
    for name in COMMANDS for case, argv, needle, marks in RUNTIME.get(name, [])
])
def test_failure_at_run_time(name, argv, needle, workdir, capsys, caplog):
    status, out, err = run_cli([name, *argv], workdir, capsys, caplog)
    assert status == 1, err
    assert f"bincount {name}: error:" in err and needle in err


# -- the top-level command --------------------------------------------------------------------------------
def _bincount(*argv: str) -> subprocess.CompletedProcess:
    """The real process: the exit status as a shell sees it."""
    return subprocess.run([sys.executable, "-m", "bincount.cli", *argv], capture_output=True, text=True, timeout=60)


def test_version_is_the_installed_package_version():
    proc = _bincount("--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"bincount {version('bincount')}\n", "")


def test_help_lists_every_subcommand():
    proc = _bincount("--help")
    assert proc.returncode == 0 and all(name in proc.stdout for name in COMMANDS) and "--version" in proc.stdout


def test_process_exit_status_of_a_failure(tmp_path):
    proc = _bincount("runs", str(tmp_path / "missing"))
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"bincount runs: error: {tmp_path / 'missing'} is not a directory (pass DIR or set BINCOUNT_LOG_DIR)"


@pytest.mark.parametrize("argv,needle", [([], "required: COMMAND"), (["nosuch"], "invalid choice: 'nosuch' (choose from")])
def test_missing_or_unknown_subcommand(argv, needle, tmp_path, capsys, caplog):
    status, out, err = run_cli(argv, tmp_path, capsys, caplog)
    assert (status, out) == (2, "") and needle in err


def test_ctrl_c_is_one_line_and_130(tmp_path, capsys, caplog, monkeypatch):
    import bincount.compare.runs as runs

    def interrupted(root):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "find_runs", interrupted)
    status, _, err = run_cli(["runs", str(tmp_path)], tmp_path, capsys, caplog)
    assert (status, err) == (130, "bincount runs: interrupted\n")


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only the documented failures become one line: anything else is a bug and must not be hidden."""
    import bincount.compare.runs as runs

    def broken(root):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(runs, "find_runs", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        cli.main(["runs", str(tmp_path)])


@pytest.mark.parametrize("package,hint", [
    ("optuna", 'needs the package \'optuna\', which is not installed: pip install -c constraints.txt -e .\n'),
    ("boto3", 'needs the package \'boto3\', which is not installed: pip install -c constraints.txt -e ".[s3]"\n'),
])
def test_a_missing_package_is_one_line_naming_what_to_install(package, hint, tmp_path, capsys, caplog, monkeypatch):
    """A sweep dir whose report needs Optuna (or an S3 location needing boto3), with that package absent."""
    (tmp_path / "sweep.json").write_text('{"study_name": "s", "storage": "sqlite:///x.db", "optimized_metric": "m", '
                                         '"direction": "maximize"}')
    monkeypatch.setitem(sys.modules, package, None)  # `import optuna` now raises ModuleNotFoundError

    def needs_it(*args, **kwargs):
        import boto3  # noqa: F401
        import optuna  # noqa: F401

    import bincount.sweep.report as report

    monkeypatch.setattr(report, "from_study", needs_it)
    status, out, err = run_cli(["sweep-report", str(tmp_path)], tmp_path, capsys, caplog)
    assert (status, out, err) == (1, "", f"bincount sweep-report: error: {hint}")


def test_a_missing_module_of_bincount_itself_is_a_bug(tmp_path, monkeypatch):
    import bincount.compare.runs as runs

    def broken(root):
        import bincount.no_such_module  # noqa: F401

    monkeypatch.setattr(runs, "find_runs", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["runs", str(tmp_path)])
