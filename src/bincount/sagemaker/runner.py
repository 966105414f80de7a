"""The launch loop: at most N jobs in flight, a status line per job, results back as Hydra JobReturns.

Backends (``local``, ``remote``) only submit, poll, stop and fetch; everything a sweeper relies on
lives here once: every job gets a COMPLETED or FAILED JobReturn (never None or UNKNOWN, which would
crash Hydra's sweepers), Ctrl-C / SIGTERM stops every job this launcher started, and a relaunched
sweep skips the jobs whose results it already has.

A job's output is untrusted on this machine (anyone who can write the output prefix, or any code in the
job, controls it): results are read as JSON; a pickled result (pickle payload, local backend only) is
unpickled only with a valid HMAC made with this sweep's key, which never leaves this machine.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, _save_config, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bincount.aws.prices import billing_state, cost
from bincount.sagemaker.backends import make_backend
from bincount.sagemaker.hints import with_fix
from bincount.sagemaker.job.result_file import jsonable
from bincount.sagemaker.offline import DryRunBackend
from bincount.sagemaker.pruning import prune_if_asked, pruned_state
from bincount.sagemaker.results import read_result, result_key
from bincount.sagemaker.spec import JobSpec, OutputRefused, build_spec, check_overrides, resolve_payload
from bincount.sagemaker.upload import code_entries, code_summary, select_code
from bincount.sagemaker.settings import LauncherSettings
from bincount.sagemaker.state import previous_completion, reattach, save_state
from bincount.sweep.compose import COMPOSE_LOCK
from bincount.text import plain

log = logging.getLogger(__name__)
TERMINAL = ("Completed", "Failed", "Stopped")
STATUS_EVERY_S = 300  # a status line per job when it (or its progress) changes, and every 5 minutes anyway


def status_line(name: str, status: str, elapsed: float, settings: LauncherSettings) -> str:
    m, s = divmod(int(elapsed), 60)
    return f"{name:<48} {status:<11} {m:>3}m{s:02d}s  ~{cost(settings.instance_type, settings.instance_count, elapsed)}"


def make_return(spec: JobSpec, status: str, value: Any = None, reason: str | None = None) -> JobReturn:
    """The JobReturn Hydra would have built in-process, from the launcher's own composed config."""
    config = spec.config
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(spec.local_dir)
    task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    ret = JobReturn(overrides=spec.overrides, cfg=task_cfg, hydra_cfg=OmegaConf.create({"hydra": config.hydra}),
                    working_dir=str(spec.local_dir), task_name=str(config.hydra.job.name))
    if status == "Completed":
        ret.status, ret.return_value = JobStatus.COMPLETED, value
    elif status == "Pruned":  # the sweeper records it as a pruned trial (its last value kept)
        from bincount.sweep.pruning import JobPruned

        ret.status, ret.return_value = JobStatus.FAILED, JobPruned(reason)
    else:
        ret.status = JobStatus.FAILED
        ret.return_value = RuntimeError(f"SageMaker job {spec.extra.get('name', spec.base_name)} {status.lower()}: "
                                        f"{reason or 'no FailureReason'}")
    return ret


def write_local_stubs(spec: JobSpec) -> None:
    """``.hydra/`` in the local job dir before launch, so even a job that dies early leaves its config."""
    hydra_dir = spec.local_dir / ".hydra"
    task_cfg = OmegaConf.masked_copy(spec.config, [k for k in spec.config if k != "hydra"])
    _save_config(task_cfg, "config.yaml", hydra_dir)
    _save_config(OmegaConf.create({"hydra": spec.config.hydra}), "hydra.yaml", hydra_dir)
    _save_config(spec.config.hydra.overrides.task, "overrides.yaml", hydra_dir)


class _Stop(Exception):
    pass


def _raise_stop(signum, _frame):
    raise _Stop(f"signal {signum}")


def run_jobs(backend, specs: list[JobSpec], settings: LauncherSettings, key: bytes,
             cancelled: threading.Event | None = None) -> dict[int, JobReturn]:
    results: dict[int, JobReturn] = {}
    pending, running = deque(), {}
    for spec in specs:
        done = previous_completion(spec) if settings.skip_completed else None
        if done is not None:
            log.info("%s already completed in an earlier launch: skipped", done.get("name"))
            status, value, error = read_result(spec, key)
            results[spec.idx] = make_return(spec, status, value, error)
        else:
            pending.append(spec)
    last_shown: dict[int, tuple[str, float]] = {}
    stop = cancelled or threading.Event()
    old = signal.signal(signal.SIGTERM, _raise_stop) if threading.current_thread() is threading.main_thread() else None
    try:
        while pending or running:
            while pending and len(running) < settings.max_parallel_jobs:
                spec = pending.popleft()
                handle = reattach(backend, spec)
                if handle is not None:
                    running[spec.idx] = (spec, handle)
                    continue
                write_local_stubs(spec)
                try:
                    handle = backend.submit(spec)
                except Exception as e:  # noqa: BLE001 - e.g. a quota error: this job fails, the sweep goes on
                    reason = with_fix(f"could not start: {type(e).__name__}: {str(e)[:700]}")
                    log.error("job %d %s", spec.idx, reason)
                    save_state(spec, name=spec.base_name, status="Failed", reason=reason)
                    results[spec.idx] = make_return(spec, "Failed", None, reason)
                    continue
                spec.extra["name"], spec.extra["started"] = handle.name, time.time()
                log.info("%s: log %s", handle.name, backend.log_location(handle))
                save_state(spec, name=handle.name, status="InProgress", started=spec.extra["started"],
                           **backend.handle_state(handle))
                running[spec.idx] = (spec, handle)
            if stop.wait(settings.poll_interval_s):  # the poll interval, or at once on cancel()
                raise _Stop("the sweep was cancelled")
            for idx, (spec, handle) in list(running.items()):
                try:
                    status, reason = backend.poll(handle)
                except Exception as e:  # noqa: BLE001 - throttling or a network blip: ask again next time
                    log.warning("could not poll %s: %s", handle.name, e)
                    continue
                elapsed = time.time() - spec.extra["started"]
                now = time.time()
                detail = backend.progress(handle) if status == "InProgress" else None  # "Training", "epoch 2/6"
                shown = f"{status} ({detail})" if detail else status
                if last_shown.get(idx, ("", 0))[0] != shown or now - last_shown[idx][1] > STATUS_EVERY_S:
                    log.info(status_line(handle.name, shown, elapsed, settings))
                    last_shown[idx] = (shown, now)
                if status == "InProgress" and spec.extra.get("trial"):
                    prune_if_asked(backend, spec, handle)
                if status not in TERMINAL:
                    continue
                del running[idx]
                value = None
                try:
                    backend.fetch(handle, spec.local_dir)
                    if status == "Completed":
                        status, value, error = read_result(spec, key)
                        reason = reason or error
                except Exception as e:  # noqa: BLE001 - a refused or unreadable output fails this job only
                    reason = (str(e) if isinstance(e, OutputRefused)
                              else f"could not collect its output ({type(e).__name__}: {e})")
                    log.error("%s: %s", handle.name, plain(reason))
                    status = "Failed"
                if status in ("Failed", "Stopped") and reason and not spec.extra.get("pruned"):
                    reason = with_fix(plain(reason))  # AWS's FailureReason (or the job's), and what to change here
                extra = billing_state(*backend.billing(handle, elapsed), settings.instance_type,
                                      settings.instance_count)
                if spec.extra.get("pruned"):  # stopped by prune_if_asked: the trial is pruned, not failed
                    status, reason = "Pruned", spec.extra["pruned"]
                    extra.update(pruned_state(spec, elapsed, settings))
                save_state(spec, name=handle.name, status=status, reason=reason, elapsed_s=round(elapsed, 1),
                           return_value=jsonable(value), **extra)  # a pickle payload's object: its repr
                results[idx] = make_return(spec, status, value, reason)
    except BaseException as e:  # Ctrl-C, SIGTERM, or a bug here: never leave paid jobs running
        log.warning("%s: stopping %d running job(s): %s", "Interrupted" if isinstance(e, (KeyboardInterrupt, _Stop))
                    else f"Launcher error ({type(e).__name__})", len(running),
                    ", ".join(h.name for _, h in running.values()))
        for spec, handle in running.values():
            backend.stop(handle)
            save_state(spec, name=handle.name, status="Stopped", reason="stopped by the launcher")
        if isinstance(e, _Stop):
            raise KeyboardInterrupt from None
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        backend.close()
    return results


def launch_sweep(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Compose, stage and submit under the compose lock (an asynchronous sweep launches from several threads),
    then run the jobs outside it."""
    with COMPOSE_LOCK:
        prepared = prepare(launcher, job_overrides, initial_job_idx)
    if isinstance(prepared, list):  # a dry run: nothing to wait for
        return prepared
    backend, specs, settings, key = prepared
    results = run_jobs(backend, specs, settings, key, getattr(launcher, "cancelled", None))
    return [results[s.idx] for s in specs]


def prepare(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
    settings: LauncherSettings = launcher.settings  # built and checked once, in the plugin's setup()
    config: DictConfig = launcher.config
    check_overrides(config, job_overrides, settings)  # before anything is written, staged or launched
    setup_globals()
    HydraConfig.instance().set_config(config)
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    source_dir = Path(settings.source_dir or os.getcwd()).resolve()
    payload = resolve_payload(settings, launcher.task_function)
    files = select_code(source_dir, code_entries(settings, config, payload, source_dir), settings.ignore_patterns,
                        settings.upload_patterns, settings.max_upload_file_mb, settings.max_upload_mb)
    log.info("Code channel from %s: %s", source_dir, code_summary(files))
    log.info("SageMaker launcher (%s backend, %s payload): %d job(s) in %s", settings.backend, payload,
             len(job_overrides), sweep_dir)
    saved_state = Singleton.get_state()
    specs = [build_spec(launcher, settings, list(o), initial_job_idx + i, payload, source_dir)
             for i, o in enumerate(job_overrides)]
    Singleton.set_state(saved_state)  # composing job configs must not leak into the driver's state
    key = result_key(sweep_dir)
    backend = make_backend(settings, sweep_dir, source_dir, files, key)
    if isinstance(backend, DryRunBackend):  # nothing starts, so the launch loop has nothing to wait for
        backend.run(specs)
        return [make_return(s, "Completed", None) for s in specs]
    return backend, specs, settings, key
