"""Local backend: each job is a subprocess in a scratch ``/opt/ml`` tree, with SageMaker's variables.

No Docker and no AWS: the same command line (``python -m bincount.sagemaker.job.entry ...``), the code
channel copied as SageMaker copies it, the ``SM_*`` variables, ``/opt/ml/output/failure`` and
``/opt/ml/output/data``. A job's tree is keyed by its sweep and job number and its ``checkpoints/``
survives a relaunch, as the checkpoint S3 URI does for a restarted spot job.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bincount.sagemaker.job.contract import ENV_RESULT_KEY, RESULT_FILE, Layout
from bincount.sagemaker.spec import JobSpec, sweep_key
from bincount.sagemaker.upload import stage_code
from bincount.text import plain
from bincount.sagemaker.settings import LauncherSettings

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrphanProcess:
    """A job process started by an earlier, dead launcher (its parent is gone, so no exit code): it ended well
    if it left a result and no failure, as the container contract says."""

    def __init__(self, pid: int, layout: Layout) -> None:
        self.pid, self.layout = pid, layout

    def alive(self) -> bool:
        """Running, and still the job's entry process (a reused PID is some other program)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        # the entry's module path, and its path before it moved into job/ (a job started by an older launcher)
        return any(entry in cmdline for entry in (b"bincount.sagemaker.job.entry", b"bincount.sagemaker.entry")) \
            and state not in ("Z", "X")

    def poll(self) -> int | None:
        if self.alive():
            return None
        return 1 if self.layout.failure.is_file() else 0 if (self.layout.output_data / RESULT_FILE).is_file() else 1

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.time() + (timeout or 0)
        while self.poll() is None:
            if timeout is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired("job", timeout)
            time.sleep(0.1)
        return self.poll()


@dataclass
class LocalJob:
    name: str
    spec: JobSpec
    proc: subprocess.Popen | OrphanProcess
    layout: Layout
    started: float
    log_file: object
    stopped: str | None = None


class LocalBackend:
    def __init__(self, settings: LauncherSettings, sweep_dir: Path, source_dir: Path, files: list[str],
                 key: bytes) -> None:
        self.settings, self.local, self.source_dir, self.files, self.key = (settings, settings.local, source_dir,
                                                                            files, key)
        self.root = Path(self.local.root or sweep_dir / ".sagemaker_local") / sweep_key(sweep_dir)

    def _layout(self, spec: JobSpec) -> Layout:
        layout = Layout(self.root / f"job{spec.idx}")
        shutil.rmtree(layout.output, ignore_errors=True)  # a fresh attempt: only checkpoints/ carry over
        return layout.make()

    def describe(self, spec: JobSpec) -> str:
        return (f"job {spec.idx}: {' '.join(spec.argv)} (cwd /opt/ml/input/data/code, env {sorted(spec.env)}; "
                f"extras [{','.join(spec.extras)}], installs nothing: it runs {self.local.python or sys.executable})")

    def submit(self, spec: JobSpec) -> LocalJob:
        layout = self._layout(spec)
        name = f"{spec.base_name}-{datetime.now():%Y%m%d%H%M%S}"
        argv = list(spec.argv)
        if self.local.copy_code:
            cwd = stage_code(self.source_dir, layout.code, self.files)
        else:  # in place: the job runs in the launch directory (Hydra's integration tests expect that)
            cwd = self.source_dir
        if spec.pickle is not None:
            target = (cwd if self.local.copy_code else layout.config) / spec.pickle_path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(spec.pickle)
            argv[argv.index("--pickle") + 1] = str(target)
        python = self.local.python or sys.executable
        src = [str(cwd / "src")] if (cwd / "src").is_dir() else []
        env = {**os.environ, **spec.env, **layout.env(name, num_gpus=self.local.num_gpus),
               # no algo-1 host here: torchrun's rendezvous on loopback, on a free port
               "SM_MASTER_ADDR": "127.0.0.1", "SM_MASTER_PORT": str(free_port()),
               # this machine's job, and the user asked for pickled results: it may sign one
               **({ENV_RESULT_KEY: self.key.hex()} if spec.pickled_result else {}),
               "PYTHONPATH": os.pathsep.join([*src, os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)}
        # The scratch code channel has no data/: share the launch directory's dataset and caches.
        env.setdefault("BINCOUNT_DATA_DIR", str(Path.cwd() / "data"))
        log_file = open(layout.ml / "job.log", "w")
        proc = subprocess.Popen([python, *argv[1:]], cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        return LocalJob(name, spec, proc, layout, time.time(), log_file)

    def handle_state(self, job: LocalJob) -> dict:
        """What a later launch needs to re-attach to this job: its process."""
        return {"pid": job.proc.pid}

    def attach(self, spec: JobSpec, saved: dict) -> LocalJob | None:
        """The job process an earlier launch started (still running, or finished with its outputs in place)."""
        layout = Layout(self.root / f"job{spec.idx}")
        proc = OrphanProcess(int(saved.get("pid") or 0), layout)
        if not proc.alive() and not (layout.output_data / RESULT_FILE).is_file() and not layout.failure.is_file():
            return None
        return LocalJob(saved["name"], spec, proc, layout, float(saved.get("started") or time.time()), None)

    def log_location(self, job: LocalJob) -> str:
        return str(job.layout.ml / "job.log")

    def progress(self, job: LocalJob) -> str | None:
        """The last epoch the job's log names (``epoch 2/6``), if any: Rich's bar writes ``Epoch 1/5`` (from 0),
        :class:`bincount.callbacks.EpochLines` (stdout not a terminal, as here) ``epoch 2/6:`` (from 1)."""
        try:
            with open(job.layout.ml / "job.log", "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        found = re.findall(r"Epoch (\d+)/(\d+)|\bepoch (\d+)/(\d+):", tail)
        if not found:
            return None
        bar_k, bar_n, line_k, line_n = found[-1]
        return f"epoch {int(bar_k) + 1}/{int(bar_n) + 1}" if bar_k else f"epoch {line_k}/{line_n}"

    def read_checkpoint_file(self, job: LocalJob, name: str, max_bytes: int) -> bytes | None:
        """A file the job wrote into its checkpoint dir (which SageMaker syncs to S3), at most ``max_bytes`` + 1
        bytes of it (so that the reader sees it is too long); None if it is not there (yet)."""
        try:
            with open(job.layout.checkpoints / name, "rb") as f:
                return f.read(max_bytes + 1)
        except OSError:
            return None

    def billing(self, job: LocalJob, elapsed_s: float) -> tuple[float, float]:
        """(training seconds, billable seconds): the process's run time, billed at the local price ($0)."""
        return elapsed_s, elapsed_s

    def poll(self, job: LocalJob) -> tuple[str, str | None]:
        if job.proc.poll() is None and time.time() - job.started > self.settings.max_runtime_s:
            self.stop(job, reason="MaxRuntimeExceeded: the job ran past max_runtime_s")
        rc = job.proc.poll()
        if rc is None:
            return "InProgress", None
        if job.stopped:
            return "Stopped", job.stopped
        if rc == 0:
            return "Completed", None
        failure = job.layout.failure
        return "Failed", failure.read_text().strip() if failure.is_file() else f"AlgorithmError: exit code {rc}"

    def stop(self, job: LocalJob, reason: str = "stopped by the launcher") -> None:
        """SIGTERM (what StopTrainingJob sends), then SIGKILL after a grace period."""
        job.stopped = reason
        if job.proc.poll() is not None:
            return
        try:
            os.killpg(job.proc.pid, signal.SIGTERM)
            job.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(job.proc.pid, signal.SIGKILL)
            job.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def fetch(self, job: LocalJob, local_dir: Path) -> None:
        """``/opt/ml/output/data`` -> the local job dir (what the real backend does with output.tar.gz)."""
        if job.log_file is not None:  # None: re-attached, the log is the earlier launch's file
            job.log_file.close()
        local_dir.mkdir(parents=True, exist_ok=True)
        skipped: list[str] = []
        if job.layout.output_data.is_dir() and job.layout.output_data.resolve() != local_dir.resolve():
            skipped += copy_tree_no_links(job.layout.output_data, local_dir)
        skipped += copy_tree_no_links(job.layout.ml, local_dir, only={"job.log": "sagemaker_job.log"})
        if skipped:
            log.warning("Job %s: not copied from its output (links are never followed, only regular files and "
                        "directories are copied): %s", job.name, ", ".join(plain(s) for s in skipped))
        code = job.layout.code if self.local.copy_code else self.source_dir
        name_local_paths(local_dir, code / job.spec.rel_dir)

    def close(self) -> None:
        pass


def name_local_paths(local_dir: Path, run_dir: Path) -> None:
    """In the logs just copied into ``local_dir``, the job's run directory becomes ``local_dir``.

    Why (issue 27): the job ran in a scratch code channel, so its log says ``report: <scratch>/report.html``
    and ``run directory: <scratch>``, a folder the next job's staging deletes; its files are in ``local_dir``
    now, and the copies of the logs should say so. Bytes are replaced as bytes: nothing else in a log changes.
    """
    olds = {str(run_dir.absolute()).encode(), str(run_dir.resolve()).encode()} - {str(local_dir.absolute()).encode()}
    if not olds:
        return
    for path in sorted(local_dir.glob("*.log")):
        if path.is_symlink() or not path.is_file():
            continue
        data = new = path.read_bytes()
        for old in sorted(olds, key=len, reverse=True):  # the longer form first, if one holds the other
            new = new.replace(old, str(local_dir.absolute()).encode())
        if new != data:
            path.write_bytes(new)


def copy_tree_no_links(src: Path, dst: Path, only: dict[str, str] | None = None) -> list[str]:
    """Copy ``src``'s regular files and directories into ``dst``; return what was skipped (links, FIFOs,
    devices, sockets), as paths relative to ``src``. ``only``: just these entries of ``src``, renamed.

    The job wrote ``src``: a link there (to ``/``, to ``~/.ssh``) must not make the launcher copy, or read,
    anything outside it. By hand because ``shutil.copytree`` either follows links or recreates them
    (``symlinks=True``, which leaves a link for the next reader to follow), and an ``ignore`` callback
    checks a name before it is opened: here every entry is opened with ``O_NOFOLLOW`` relative to its
    already-opened directory, and checked with ``fstat`` on what was opened, so a link swapped in after
    the listing is refused too.
    """
    try:
        fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # ``src`` itself replaced by a link (or gone)
        return [str(src)]
    skipped: list[str] = []
    try:
        _copy_dir(fd, dst, "", skipped, only)
    finally:
        os.close(fd)
    return skipped


def _copy_dir(dir_fd: int, dst: Path, rel: str, skipped: list[str], only: dict[str, str] | None = None) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(dir_fd)):
        if only is not None and name not in only:
            continue
        target = dst / (only[name] if only else name)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)  # a FIFO must not block
        except OSError:  # ELOOP: a symbolic link; or gone, or unreadable
            skipped.append(rel + name)
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                _copy_dir(fd, target, f"{rel}{name}/", skipped)
            elif stat.S_ISREG(st.st_mode):
                if target.is_symlink():  # never write through a link at the destination either
                    target.unlink()
                with os.fdopen(os.dup(fd), "rb") as f_in, open(target, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
                os.chmod(target, stat.S_IMODE(st.st_mode))
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
            else:
                skipped.append(rel + name)
        finally:
            os.close(fd)
