"""Values of the sweep report's terminal table (``bincount.sweep.table``) and of its plots
(``bincount.sweep.plots``).

The table is rendered into a recording rich Console and compared as text (and, for styles, as the ANSI
codes of each row). The plots are checked through the figure each one saves: the data of every artist,
its colours, labels and title, and the PNG's pixel size. The plots run under a matplotlib style that is
not the default one (another dpi, colour cycle and legend position), as a user's matplotlibrc could set:
what the report draws must not depend on it.
"""

from __future__ import annotations

import io
import re
import struct
import sys
import warnings
from pathlib import Path

import matplotlib
import optuna
import pytest
from cycler import cycler
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from optuna.distributions import FloatDistribution
from rich.console import Console

from bincount.sweep import plots
from bincount.sweep.report import Trial
from bincount.sweep.table import print_table

SGR = re.compile(r"\x1b\[[0-9;]*m")
RESET = "\x1b[0m"


# ---------------------------------------------------------------------------------------------- table


def _table_trials() -> list[Trial]:
    """A fresh list each call: a best trial, every status, missing params and metrics, a long failure."""
    return [
        Trial(number=0, status="COMPLETE", objective=0.123456, params={"lr": 0.00012345, "batch": 32, "opt": "adam"},
              metrics={"val/loss": 0.123456, "val/rmse": 1.5, "test/acc": None}, duration_s=12.6),
        Trial(number=1, status="PRUNED", params={"lr": 0.1, "batch": 8}, metrics={"val/rmse": 2.25},
              reason="pruned at epoch 3"),
        Trial(number=10, status="FAIL", params={"lr": 1.0, "opt": "sgd"}, duration_s=3.4,
              reason="y" * 190 + "0123456789" + "z" * 50 + "\nsecond line of the traceback"),
        Trial(number=11, status="RUNNING", duration_s=0.4),
        Trial(number=12, status="INCOMPLETE"),
        Trial(number=13, status="WAITING"),
        Trial(number=14, status="COMPLETE", objective=0.5, params={"lr": 0.01, "batch": 16, "opt": "adam"},
              metrics={"val/rmse": 3.0}, duration_s=99.5),
        Trial(number=15, status="FAIL", duration_s=1.0, reason=""),
    ]


def _report_dir(tmp_path: Path) -> Path:
    report = tmp_path / "report"
    report.mkdir()
    (report / "objective.png").write_bytes(b"png")
    (report / "best_config.yaml").write_text("x: 1\n")
    (report / "trials.csv").write_text("number\n")
    (report / "jobs").mkdir()  # a dir: not listed among the report's files
    return report


def _plain_console(width: int = 300) -> Console:
    return Console(record=True, width=width, file=io.StringIO())


def _styled_console(width: int = 300) -> Console:
    return Console(record=True, width=width, force_terminal=True, color_system="standard", no_color=False,
                   file=io.StringIO())


FAIL_REASON_SHOWN = "y" * 190 + "0123456789"  # the first line, cut at 200 characters


def test_table_text_columns_formatting_failures_best_and_files(tmp_path):
    report = _report_dir(tmp_path)
    trials = _table_trials()
    console = _plain_console()
    print_table(trials, "val/loss", trials[0], report, "parameter importances from 2 completed trials: importances.png",
                console=console, footer="SageMaker: 2 jobs, 0.25 USD")
    expected = f"""\
                           Sweep: 8 trials, objective val/loss                            
┏━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━┳━━━━━━━━━━━┳━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┓
┃  # ┃ status     ┃ val/loss ┃ batch ┃ lr        ┃ opt  ┃ val/rmse ┃ test/acc ┃ time (s) ┃
┡━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━╇━━━━━━━━━━━╇━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━┩
│  0 │ COMPLETE   │   0.1235 │ 32    │ 0.0001234 │ adam │      1.5 │        - │       13 │
│  1 │ PRUNED     │        - │ 8     │ 0.1       │ -    │     2.25 │        - │        - │
│ 10 │ FAIL       │        - │ -     │ 1         │ sgd  │        - │        - │        3 │
│ 11 │ RUNNING    │        - │ -     │ -         │ -    │        - │        - │        0 │
│ 12 │ INCOMPLETE │        - │ -     │ -         │ -    │        - │        - │        - │
│ 13 │ WAITING    │        - │ -     │ -         │ -    │        - │        - │        - │
│ 14 │ COMPLETE   │      0.5 │ 16    │ 0.01      │ adam │        3 │        - │      100 │
│ 15 │ FAIL       │        - │ -     │ -         │ -    │        - │        - │        1 │
└────┴────────────┴──────────┴───────┴───────────┴──────┴──────────┴──────────┴──────────┘
trial 10 failed: {FAIL_REASON_SHOWN}
Best: trial 0, val/loss = 0.1235; re-run: python train.py --config-dir {report} --config-name best_config
SageMaker: 2 jobs, 0.25 USD
parameter importances from 2 completed trials: importances.png
Report: {report} (best_config.yaml, objective.png, trials.csv)
"""
    assert console.export_text() == expected


def test_table_without_best_or_footer_and_metric_columns(tmp_path):
    """Only the shown metrics some trial has, the objective's not twice; no best line, no footer line."""
    report = tmp_path / "r"
    report.mkdir()
    trials = [
        Trial(number=2, status="COMPLETE", objective=0.75, metrics={"val/acc": 0.75, "val/loss": 0.5, "val/rmse": 1.25},
              duration_s=None),
        Trial(number=3, status="COMPLETE", objective=0.8125, metrics={"val/acc": 0.8125, "val/loss": 0.25,
                                                                     "val/rmse": 1.0, "val/mae": 0.5}, duration_s=7.0),
    ]
    console = _plain_console(120)
    print_table(trials, "val/acc", None, report, "no parameter importances: 2 completed trial(s)", console=console,
                footer="")
    expected = """\
            Sweep: 2 trials, objective val/acc             
┏━━━┳━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┓
┃ # ┃ status   ┃ val/acc ┃ val/loss ┃ val/rmse ┃ time (s) ┃
┡━━━╇━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━┩
│ 2 │ COMPLETE │    0.75 │      0.5 │     1.25 │        - │
│ 3 │ COMPLETE │  0.8125 │     0.25 │        1 │        7 │
└───┴──────────┴─────────┴──────────┴──────────┴──────────┘
no parameter importances: 2 completed trial(s)
Report: {report} ()
""".replace("{report}", str(report))
    assert console.export_text() == expected


def test_table_objective_is_a_shown_metric_only_once(tmp_path):
    trials = [Trial(number=0, status="COMPLETE", objective=0.5, metrics={"val/loss": 0.5, "test/acc": 0.9})]
    console = _plain_console(120)
    print_table(trials, "val/loss", None, tmp_path, "n", console=console)
    header = console.export_text().splitlines()[2]
    assert header == "┃ # ┃ status   ┃ val/loss ┃ test/acc ┃ time (s) ┃"


def _rows(text: str) -> dict[str, str]:
    """The data rows of a styled table, by trial number."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("│"):
            rows[SGR.sub("", line).split("│")[1].strip()] = line
    return rows


def test_table_styles_rows_header_and_leaves_messages_unhighlighted(tmp_path):
    report = _report_dir(tmp_path)
    trials = _table_trials()
    console = _styled_console()
    print_table(trials, "val/loss", trials[0], report, "parameter importances from 2 completed trials: importances.png",
                console=console, footer="SageMaker: 2 jobs, 0.25 USD")
    text = console.export_text(styles=True)
    rows = _rows(text)
    codes = {number: set(SGR.findall(line)) for number, line in rows.items()}
    assert codes == {
        "0": {"\x1b[1;32m", RESET},  # the best trial: bold green
        "1": {"\x1b[33m", RESET},  # pruned: yellow
        "10": {"\x1b[31m", RESET},  # failed: red
        "11": {"\x1b[36m", RESET},  # running: cyan
        "12": {"\x1b[2m", RESET},  # incomplete: dim
        "13": set(),  # a status without a style
        "14": set(),  # complete, not the best
        "15": {"\x1b[31m", RESET},
    }
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    assert "\x1b[1mstatus    \x1b[0m" in header and "\x1b[1mtime (s)\x1b[0m" in header
    assert set(SGR.findall(header)) == {"\x1b[1m", RESET}
    after = text.split("┘\n", 1)[1].splitlines()
    # Only the "trial N failed:" prefix is coloured; numbers and paths in the messages are not highlighted.
    assert after[0] == f"\x1b[31mtrial 10 failed:\x1b[0m {FAIL_REASON_SHOWN}"
    assert after[1:] == [
        f"Best: trial 0, val/loss = 0.1235; re-run: python train.py --config-dir {report} --config-name best_config",
        "SageMaker: 2 jobs, 0.25 USD",
        "parameter importances from 2 completed trials: importances.png",
        f"Report: {report} (best_config.yaml, objective.png, trials.csv)",
    ]


@pytest.mark.parametrize("length", [199, 200, 201, 260])
def test_table_failure_reason_first_line_cut_at_200(tmp_path, length):
    reason = "".join(chr(ord("a") + i % 26) for i in range(length))
    trials = [Trial(number=4, status="FAIL", reason=reason + "\nTraceback line 2")]
    console = _plain_console(400)
    print_table(trials, "val/loss", None, tmp_path, "n", console=console)
    lines = console.export_text().splitlines()
    failed = [line for line in lines if line.startswith("trial ")]
    assert failed == [f"trial 4 failed: {reason[:200]}"]
    assert "Traceback line 2" not in console.export_text()


class _Stdout(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _print_to_stdout(monkeypatch, tmp_path, tty: bool, footer: str) -> list[str]:
    out = _Stdout(tty)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("COLUMNS", "120")
    trials = [Trial(number=0, status="COMPLETE", objective=0.5, duration_s=2.0)]
    print_table(trials, "val/loss", None, tmp_path, "n", footer=footer)
    return [SGR.sub("", line).rstrip() for line in out.getvalue().splitlines()]


def test_table_default_console_is_200_wide_when_stdout_is_not_a_terminal(monkeypatch, tmp_path):
    """Logs and CI: 200 columns, whatever $COLUMNS says."""
    lines = _print_to_stdout(monkeypatch, tmp_path, tty=False, footer="x" * 199 + " y")
    assert "x" * 199 in lines and "y" in lines
    lines = _print_to_stdout(monkeypatch, tmp_path, tty=False, footer="x" * 200 + " y")
    assert "x" * 200 in lines and "y" in lines
    lines = _print_to_stdout(monkeypatch, tmp_path, tty=False, footer="x" * 150 + " " + "w" * 48)
    assert "x" * 150 + " " + "w" * 48 in lines  # 199 columns: one line


def test_table_default_console_takes_the_terminal_width(monkeypatch, tmp_path):
    lines = _print_to_stdout(monkeypatch, tmp_path, tty=True, footer="x" * 100 + " " + "w" * 30)
    assert "x" * 100 in lines and "w" * 30 in lines  # 131 columns: wrapped at the terminal's 120


# ---------------------------------------------------------------------------------------------- plots


@pytest.fixture
def saved(monkeypatch) -> list[Figure]:
    """Every figure saved during the test (the real savefig runs), under a non-default matplotlib style."""
    figures: list[Figure] = []
    real = Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    style = {"figure.dpi": 72, "savefig.dpi": 72, "axes.prop_cycle": cycler(color=["#123456", "#654321"]),
             "legend.loc": "upper left", "lines.linewidth": 2.5}
    with matplotlib.rc_context(style):
        yield figures


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _rgba(artist_colors) -> list[tuple]:
    return [tuple(float(v) for v in c) for c in artist_colors]


def _vlines(ax) -> list[tuple]:
    return sorted((int(line.get_xdata()[0]), to_rgba(line.get_color()), line.get_alpha(), line.get_linewidth())
                  for line in ax.lines if line.get_label().startswith("_"))


def test_objective_plot_minimize_data_colors_lines_and_title(saved, tmp_path):
    path = tmp_path / "objective.png"
    trials = [Trial(0, "COMPLETE", 3.0), Trial(1, "FAIL"), Trial(2, "COMPLETE", 5.0), Trial(3, "PRUNED"),
              Trial(4, "COMPLETE", 1.0), Trial(5, "COMPLETE", None), Trial(6, "RUNNING", 0.5), Trial(7, "INCOMPLETE"),
              Trial(8, "PRUNED", 0.1), Trial(9, "COMPLETE", 2.0)]
    plots.objective_plot(path, trials, "val/loss", "minimize")
    assert _png_size(path) == (700, 400)
    (fig,) = saved
    assert tuple(fig.get_size_inches()) == (7.0, 4.0)
    (ax,) = fig.axes
    assert ax.get_title() == "val/loss per trial (2 pruned, 1 fail, 1 incomplete, 1 running: vertical lines)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("trial", "val/loss")
    (points,) = ax.collections
    assert points.get_offsets().tolist() == [[0.0, 3.0], [2.0, 5.0], [4.0, 1.0], [9.0, 2.0]]
    assert points.get_label() == "complete"
    assert _rgba(points.get_facecolor()) == [to_rgba("tab:blue")]
    (step,) = [line for line in ax.lines if not line.get_label().startswith("_")]
    assert list(step.get_xdata()) == [0, 2, 4, 9]
    assert list(step.get_ydata()) == [3.0, 3.0, 1.0, 1.0]
    assert step.get_drawstyle() == "steps-post"
    assert to_rgba(step.get_color()) == to_rgba("tab:orange")
    assert step.get_label() == "best so far (minimize)"
    red, gray = to_rgba("tab:red"), to_rgba("tab:gray")
    assert _vlines(ax) == [(1, red, 0.3, 1.0), (3, gray, 0.3, 1.0), (6, gray, 0.3, 1.0), (7, gray, 0.3, 1.0),
                           (8, gray, 0.3, 1.0)]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["complete", "best so far (minimize)"]
    assert legend._loc == 0  # "best", whatever legend.loc the style sets


def test_objective_plot_maximize_without_other_trials(saved, tmp_path):
    path = tmp_path / "objective.png"
    trials = [Trial(n, "COMPLETE", value) for n, value in enumerate([3.0, 5.0, 1.0, 7.0])]
    plots.objective_plot(path, trials, "val/acc", "maximize")
    assert _png_size(path) == (700, 400)
    (ax,) = saved[0].axes
    assert ax.get_title() == "val/acc per trial"
    (step,) = ax.lines
    assert list(step.get_ydata()) == [3.0, 5.0, 5.0, 7.0]
    assert step.get_label() == "best so far (maximize)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["complete", "best so far (maximize)"]


def test_objective_plot_without_completed_trials(saved, tmp_path):
    path = tmp_path / "objective.png"
    plots.objective_plot(path, [Trial(0, "FAIL"), Trial(1, "PRUNED", 0.5), Trial(2, "FAIL")], "val/loss", "minimize")
    assert _png_size(path) == (700, 400)
    (ax,) = saved[0].axes
    assert len(ax.collections) == 0
    assert ax.get_legend() is None
    assert ax.get_title() == "val/loss per trial (1 pruned, 2 fail: vertical lines)"
    red, gray = to_rgba("tab:red"), to_rgba("tab:gray")
    assert _vlines(ax) == [(0, red, 0.3, 1.0), (1, gray, 0.3, 1.0), (2, red, 0.3, 1.0)]


def _float_study(n_complete: int, with_params: bool = True) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    dist = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}
    for i in range(n_complete):
        params = {"x": i / 10, "y": 0.5} if with_params else {}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dist if with_params else {},
                                                  value=float(i)))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING))
    return study


def _bars(ax) -> dict[str, float]:
    labels = [t.get_text() for t in ax.get_yticklabels()]
    return dict(zip(labels, (float(p.get_width()) for p in ax.patches), strict=True))


def test_importance_plot_from_a_study(saved, tmp_path):
    path = tmp_path / "importances.png"
    study = _float_study(6)
    dist = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.9, "y": 0.1}, distributions=dist, value=0.5))
    note = plots.importance_plot(path, study, [], "minimize")
    assert note == "parameter importances from 7 completed trials: importances.png"
    assert _png_size(path) == (700, 250)  # 0.5 inch a parameter + 1.5, at 100 dpi
    (fig,) = saved
    assert tuple(fig.get_size_inches()) == (7.0, 2.5)
    (ax,) = fig.axes
    assert ax.get_title() == "parameter importances (7 trials)"
    assert ax.get_xlabel() == "importance (Optuna's default evaluator, normalised)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(study)
    assert list(importances) == ["x", "y"] and importances["x"] > importances["y"]
    bars = _bars(ax)
    assert list(bars) == ["y", "x"]  # the most important on top
    assert bars == pytest.approx(importances)
    assert {to_rgba(p.get_facecolor()) for p in ax.patches} == {to_rgba("tab:green")}


def _grid_trials() -> list[Trial]:
    """A 5 x 5 grid: the lowest objectives are set by ``a``, the highest by ``b``."""
    trials = [Trial(n, "COMPLETE", float(10 * b if b == 4 else a), params={"a": a, "b": b})
              for n, (a, b) in enumerate((a, b) for a in range(5) for b in range(5))]
    trials += [Trial(25, "FAIL", None, params={"a": 9, "b": 9}), Trial(26, "COMPLETE", None, params={"a": 8, "b": 8}),
               Trial(27, "PRUNED", 100.0, params={"a": 7, "b": 7}), Trial(28, "COMPLETE", -5.0, params={})]
    return trials


@pytest.mark.parametrize(("direction", "order"), [("minimize", ["b", "a"]), ("maximize", ["a", "b"])])
def test_importance_plot_from_a_grid_follows_the_direction(saved, tmp_path, direction, order):
    path = tmp_path / "importances.png"
    note = plots.importance_plot(path, None, _grid_trials(), direction)
    assert note == "parameter importances from 25 completed trials: importances.png"
    assert _png_size(path) == (700, 250)
    (ax,) = saved[0].axes
    assert ax.get_title() == "parameter importances (25 trials)"
    bars = _bars(ax)
    assert list(bars) == order
    assert sum(bars.values()) == pytest.approx(1.0)
    assert bars[order[1]] > 0.5 > bars[order[0]]


def test_importance_plot_with_exactly_two_completed_trials(saved, tmp_path):
    path = tmp_path / "importances.png"
    trials = [Trial(0, "COMPLETE", 1.0, params={"a": 1, "b": "x"}),
              Trial(1, "COMPLETE", 2.0, params={"a": 2, "b": "x"})]
    note = plots.importance_plot(path, None, trials, "minimize")
    assert note == "parameter importances from 2 completed trials: importances.png"
    assert list(_bars(saved[0].axes[0]).items()) == [("b", 0.0), ("a", 1.0)]  # "b" has one value


def test_grid_study_holds_the_completed_trials_as_categorical_strings():
    study = plots._grid_study(_grid_trials()[:2] + _grid_trials()[25:], "maximize")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [(t.params, t.value, t.state) for t in study.trials] == [
        ({"a": "0", "b": "0"}, 0.0, optuna.trial.TrialState.COMPLETE),
        ({"a": "0", "b": "1"}, 0.0, optuna.trial.TrialState.COMPLETE),
    ]
    assert [t.distributions for t in study.trials] == [
        {"a": optuna.distributions.CategoricalDistribution(["0"]),
         "b": optuna.distributions.CategoricalDistribution(["0", "1"])}] * 2


@pytest.mark.parametrize("stale", [True, False])
def test_importance_plot_with_one_completed_trial_is_a_note(saved, tmp_path, stale):
    path = tmp_path / "importances.png"
    if stale:
        path.write_bytes(b"an earlier report's plot")
    note = plots.importance_plot(path, _float_study(1), [], "minimize")
    assert note == "no parameter importances: 1 completed trial(s), need at least 2"
    assert not path.exists() and saved == []
    note = plots.importance_plot(path, None, [Trial(0, "COMPLETE", 1.0, params={"a": 1})], "minimize")
    assert note == "no parameter importances: 1 completed trial(s), need at least 2"


@pytest.mark.parametrize("stale", [True, False])
def test_importance_plot_without_parameters_is_a_note(saved, tmp_path, stale):
    path = tmp_path / "importances.png"
    if stale:
        path.write_bytes(b"an earlier report's plot")
    note = plots.importance_plot(path, _float_study(3, with_params=False), [], "minimize")
    assert note == "no parameter importances: no parameter varies among the completed trials"
    assert not path.exists() and saved == []


@pytest.mark.parametrize("stale", [True, False])
def test_importance_plot_when_optuna_raises_is_a_note(saved, tmp_path, monkeypatch, stale):
    """An evaluator error (Optuna's checks on the study) names its type and message; the plot is removed."""
    path = tmp_path / "importances.png"
    if stale:
        path.write_bytes(b"an earlier report's plot")

    def refuse(study, **kwargs):
        raise ValueError("Parameters importances cannot be assessed")

    monkeypatch.setattr(optuna.importance, "get_param_importances", refuse)
    note = plots.importance_plot(path, _float_study(3), [], "minimize")
    assert note == "no parameter importances: ValueError: Parameters importances cannot be assessed"
    assert not path.exists() and saved == []
