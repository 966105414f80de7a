"""Issue 27 item 4, console noise: what a training, ``bincount predict`` and a local SageMaker job print when
their output goes to a file rather than a terminal (one plain line per epoch, no deprecation warning from
Lightning's internals, no progress bar for a handful of images, log paths that exist)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
from conftest import write_tiny_bundle
from helpers.train import ROOT, TINY, single_run_dir

from bincount import cli
from bincount.callbacks import EpochLines, epoch_line, progress_bar


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_epoch_line_names_the_epoch_from_one_and_each_epoch_metric_once():
    metrics = {"v_num": 3, "train/loss_step": 1.9, "val/loss": 1.65, "val/acc": 0.41, "train/loss_epoch": 1.6734}
    assert epoch_line(2, 6, metrics, 12.4) == "epoch 3/6: val/loss=1.65 val/acc=0.41 train/loss=1.673 (12 s)"
    assert epoch_line(0, -1, {}, 0.2) == "epoch 1: (0 s)"  # max_epochs=-1: no total


def test_progress_bar_is_rich_on_a_terminal_and_plain_lines_otherwise(monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar

    monkeypatch.setattr(sys, "stdout", _Stream(tty=True))
    assert isinstance(progress_bar(leave=True, refresh_rate=5), RichProgressBar)
    monkeypatch.setattr(sys, "stdout", _Stream(tty=False))
    assert isinstance(progress_bar(leave=True, refresh_rate=5), EpochLines)


@pytest.mark.slow
def test_training_into_a_file_writes_one_plain_line_per_epoch(tmp_path):
    """The default callbacks' progress bar (TINY drops it; kept here) with stdout a pipe: Rich's bar wrapped
    its metrics into 7 lines an epoch; now each epoch is one line, in the console and in train.log."""
    out = tmp_path / "stdout.txt"
    args = [a for a in TINY if not a.startswith("callbacks.progress_bar")]
    env = {**os.environ, "BINCOUNT_DATA_DIR": str(tmp_path / "data"), "BINCOUNT_LOG_DIR": str(tmp_path / "logs")}
    with open(out, "w") as f:
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], env=env, cwd=ROOT, stdout=f,
                              stderr=subprocess.PIPE, text=True, timeout=600)
    text = out.read_text()
    assert proc.returncode == 0, text[-3000:] + proc.stderr[-3000:]
    epoch_lines = [line for line in text.splitlines() if " - epoch " in line]
    assert [line.split(" - ", 1)[1].split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"], text
    assert all("val/acc=" in line and "train/loss=" in line for line in epoch_lines), epoch_lines
    bars = re.compile(r"\s*(Epoch \d|Validation|Testing|Sanity)|.*it/s|\s{20}")  # a bar, or its wrapped metrics
    noise = [line for line in (text + proc.stderr).splitlines() if bars.match(line)]
    assert not noise, noise  # neither the fit's bar nor the evaluation's "Validation ... 0.00it/s"
    assert "LeafSpec" not in proc.stderr
    train_log = (single_run_dir(tmp_path / "logs") / "train.log").read_text()
    assert train_log.count(" - epoch ") == 2


def test_predict_into_a_pipe_prints_no_deprecation_and_no_bar(tmp_path, make_abid, capsys):
    """``bincount predict`` with stderr not a terminal: no torch ``LeafSpec`` deprecation (raised inside
    Lightning's loop) and no "0.00it/s" bar, even without --no-progress."""
    bundle = write_tiny_bundle(tmp_path / "model")
    root = make_abid([1, 2, 3, 4, 5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what a user's process shows; predict's own filters go in front
        status = cli.main(["predict", str(bundle), str(root), "-o", str(tmp_path / "p.csv"), "--num-workers", "0"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "LeafSpec" not in captured.err and not [w for w in caught if "LeafSpec" in str(w.message)]
    assert "it/s" not in captured.err and "Predicting" not in captured.err, captured.err
    assert "5 of 5 images predicted" in captured.out


def test_local_job_progress_reads_the_plain_epoch_lines(tmp_path):
    """A local SageMaker job's stdout is a file, so its log has EpochLines' ``epoch k/n:`` (counted from 1)."""
    from bincount.sagemaker.local import LocalBackend

    job = SimpleNamespace(layout=SimpleNamespace(ml=tmp_path))
    backend = LocalBackend.__new__(LocalBackend)
    (tmp_path / "job.log").write_text("[t][bincount.callbacks][INFO] - epoch 1/6: val/acc=0.2 (3 s)\n"
                                      "[t][bincount.callbacks][INFO] - epoch 2/6: val/acc=0.3 (3 s)\nnoise\n")
    assert backend.progress(job) == "epoch 2/6"
    (tmp_path / "job.log").write_text("Epoch 3/5 ━━ 6/6\n")  # Rich's bar, counted from 0, still read
    assert backend.progress(job) == "epoch 4/6"


def test_local_job_logs_name_where_the_report_really_is(tmp_path):
    """The job's log names its run directory inside the scratch code channel (deleted when the next job
    is staged); the copies brought back into the job dir name the job dir instead."""
    from bincount.sagemaker.job.contract import Layout
    from bincount.sagemaker.local import LocalBackend
    from bincount.sagemaker.settings import LocalSettings

    layout = Layout(tmp_path / "scratch").make()
    rel_dir = "multirun/sweep/0"
    run_dir = layout.code / rel_dir
    (layout.output_data / "report.html").write_text("<html></html>")
    lines = f"report:        {run_dir}/report.html\nrun directory: {run_dir}\n"
    (layout.output_data / "train.log").write_text(lines)
    (layout.ml / "job.log").write_text("Epoch 0/0\n" + lines)
    backend = LocalBackend.__new__(LocalBackend)
    backend.local, backend.source_dir = LocalSettings(copy_code=True), tmp_path / "src"
    job = SimpleNamespace(log_file=None, layout=layout, name="job-0", spec=SimpleNamespace(rel_dir=rel_dir))
    local_dir = tmp_path / "sweep" / "0"
    backend.fetch(job, local_dir)
    for name in ("sagemaker_job.log", "train.log"):
        text = (local_dir / name).read_text()
        assert f"report:        {local_dir}/report.html" in text and str(run_dir) not in text, text
    assert (local_dir / "report.html").is_file()
    assert (local_dir / "sagemaker_job.log").read_text().startswith("Epoch 0/0\n")
