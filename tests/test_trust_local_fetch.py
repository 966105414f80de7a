"""The local backend never follows a link in a job's output (issue 24, item 11).

A job writes its ``/opt/ml/output/data``; collecting it used ``shutil.copytree``, which follows links, so a
link to ``/`` made the launcher copy the filesystem into the sweep dir, and a link to ``~/.ssh/id_rsa`` a
key. Each test plants the links in a real job tree (``Layout``) and calls the real ``LocalBackend.fetch``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.launcher_settings import settings

from bincount.sagemaker.job.contract import Layout
from bincount.sagemaker.local import LocalBackend, LocalJob, copy_tree_no_links


def job_tree(tmp_path: Path) -> tuple[LocalBackend, LocalJob]:
    backend = LocalBackend(settings(local={"root": str(tmp_path / "scratch")}), tmp_path / "sweep", tmp_path, [], b"k")
    layout = Layout(backend.root / "job0").make()
    (layout.ml / "job.log").write_text("epoch 1/1\n")
    spec = SimpleNamespace(rel_dir="multirun/s/0")  # the one field fetch reads: where the job ran in its channel
    return backend, LocalJob("job-0", spec, None, layout, 0.0, None)


def test_links_in_a_jobs_output_are_not_followed_not_copied_and_named(tmp_path, caplog):
    backend, job = job_tree(tmp_path)
    out = job.layout.output_data
    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    (out / "result.json").write_text('{"return_value": 1.0}')
    (out / "run" / ".hydra").mkdir(parents=True)
    (out / "run" / ".hydra" / "config.yaml").write_text("x: 1\n")
    (out / "root").symlink_to("/")
    (out / "run" / "key").symlink_to(secret)
    (out / "run" / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(out / "run" / "pipe")  # copying a FIFO would block the launcher forever
    local_dir = tmp_path / "sweep" / "0"
    with caplog.at_level(logging.WARNING, logger="bincount.sagemaker.local"):
        backend.fetch(job, local_dir)
    copied = sorted(str(p.relative_to(local_dir)) for p in local_dir.rglob("*"))
    assert copied == ["result.json", "run", "run/.hydra", "run/.hydra/config.yaml", "sagemaker_job.log"]
    assert (local_dir / "run" / ".hydra" / "config.yaml").read_text() == "x: 1\n"
    assert (local_dir / "sagemaker_job.log").read_text() == "epoch 1/1\n"
    assert not any(p.is_symlink() for p in local_dir.rglob("*"))
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("Job job-0: not copied from its output (links are never followed")
    assert warning.endswith(": root, run/dangling, run/key, run/pipe")


def test_a_job_log_or_output_dir_replaced_by_a_link_is_not_followed(tmp_path, caplog):
    backend, job = job_tree(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("PRIVATE")
    (job.layout.ml / "job.log").unlink()
    (job.layout.ml / "job.log").symlink_to(secret)
    job.layout.output_data.rmdir()
    job.layout.output_data.symlink_to("/")
    local_dir = tmp_path / "sweep" / "0"
    with caplog.at_level(logging.WARNING, logger="bincount.sagemaker.local"):
        backend.fetch(job, local_dir)
    assert list(local_dir.iterdir()) == []
    assert f"{job.layout.output_data}, job.log" in caplog.text


def test_the_copy_keeps_modes_and_times_and_refuses_a_link_at_the_destination(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a.txt").write_text("new")
    os.chmod(src / "a.txt", 0o640)
    os.utime(src / "a.txt", ns=(1_000_000_000, 2_000_000_000))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (dst / "a.txt").symlink_to(victim)  # writing a.txt must replace the link, not write through it
    assert copy_tree_no_links(src, dst) == []
    assert victim.read_text() == "keep" and not (dst / "a.txt").is_symlink()
    st = (dst / "a.txt").stat()
    assert (dst / "a.txt").read_text() == "new" and st.st_mode & 0o777 == 0o640 and st.st_mtime_ns == 2_000_000_000


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_skipped_and_named(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "locked").write_text("x")
    os.chmod(src / "locked", 0)
    assert copy_tree_no_links(src, tmp_path / "dst") == ["locked"]
