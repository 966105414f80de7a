"""Sweep dispatch on the SageMaker launcher: ``async`` against ``batch``, the same trials in one run.

    python benchmarks/sweep_dispatch.py                 # 48 trials, median 6 s, n_jobs=3: about 7 minutes
    python benchmarks/sweep_dispatch.py --quick         # 9 trials, median 2 s (tests/test_sagemaker_async.py)

A real Optuna study drives ``benchmarks/sweep_app/sleep_app.py``, whose job sleeps for its trial's
``seconds``: random log-normal lengths, seeded and enqueued as the study's trials so that both modes run
the same jobs in the same order. Jobs go through the launcher's
``local`` backend: each job is a subprocess running the container's command, as a SageMaker job would.
Columns:
* job s: the jobs' own run time (the launcher's ``elapsed_s``: submit to finished, process start included);
* ideal: job s / n_jobs, the wall time if every slot were busy from the first second to the last;
* greedy: the wall time of a perfect asynchronous scheduler for these job lengths in this order (each job
  starts the moment a slot frees), so ``greedy / wall`` is the dispatch efficiency, and the rest of
  ``ideal / wall`` is the last jobs' tail, which no scheduler avoids in a finite sweep;
* utilisation: job s / (n_jobs x wall), issue 16's slot utilisation.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

APP = Path(__file__).resolve().parent / "sweep_app"


def greedy_makespan(durations: list[float], slots: int) -> float:
    """List scheduling: each job, in order, starts on the slot that frees first."""
    free = [0.0] * slots
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def trial_lengths(n: int, median_s: float, most_s: float, seed: int = 0) -> list[float]:
    """``n`` random job lengths, log-normal (a few long trials among many short ones, as in real sweeps),
    seeded so that both modes, and every run, get the same ones."""
    import random

    rng = random.Random(seed)
    return [round(min(most_s, max(0.2, rng.lognormvariate(math.log(median_s), 0.8))), 2) for _ in range(n)]


def run(mode: str, sweep_dir: Path, lengths: list[float], n_jobs: int) -> dict:
    import optuna

    enqueued = ",".join(f"{{seconds:{s}}}" for s in lengths)  # Optuna runs these first, in this order
    cmd = [sys.executable, str(APP / "sleep_app.py"), "-m", f"hydra.sweeper.dispatch={mode}",
           f"hydra.sweeper.n_jobs={n_jobs}", f"hydra.sweeper.n_trials={len(lengths)}",
           f"hydra.launcher.max_parallel_jobs={n_jobs}", f"seconds=interval(0.2,{max(lengths) + 1})",
           f"hydra.sweeper.enqueue_trials=[{enqueued}]", f"hydra.sweep.dir={sweep_dir}",
           f"hydra.launcher.source_dir={APP}"]
    proc = subprocess.run(cmd, cwd=APP, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"the {mode} sweep failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="sleep", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    done = sorted(study.trials, key=lambda t: t.number)
    jobs = {t.number: json.loads((sweep_dir / str(t.number) / "sagemaker_job.json").read_text()) for t in done}
    start = min(t.datetime_start for t in done)
    spans = [((t.datetime_start - start).total_seconds(), (t.datetime_complete - start).total_seconds()) for t in done]
    wall = max(b for _, b in spans)
    durations = [jobs[t.number]["elapsed_s"] for t in done]
    busy = sum(durations)
    return {"mode": mode, "wall": wall, "busy": busy, "ideal": busy / n_jobs,
            "greedy": greedy_makespan(durations, n_jobs), "utilisation": busy / (n_jobs * wall),
            "most_at_once": max(sum(1 for a, b in spans if a <= s < b) for s, _ in spans),
            "log_says": f"({mode} dispatch)" in proc.stdout + proc.stderr,
            "trials": [{"number": t.number, "state": t.state.name, "seconds": t.params.get("seconds"), "value": t.value,
                        "job_return": jobs[t.number].get("return_value")} for t in done]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--n-jobs", type=int, default=3)
    parser.add_argument("--median-s", type=float, default=6.0, help="median job length (log-normal)")
    parser.add_argument("--quick", action="store_true", help="9 trials, median 2 s")
    parser.add_argument("--json", type=Path, help="also write the figures and every trial here")
    args = parser.parse_args()
    trials, median_s = (9, 2.0) if args.quick else (args.trials, args.median_s)
    lengths = trial_lengths(trials, median_s, 5 * median_s)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine, print_table

    with tempfile.TemporaryDirectory(prefix="bincount-bench-dispatch-") as tmp:
        results = [run(mode, Path(tmp) / mode, lengths, args.n_jobs) for mode in ("async", "batch")]
    rows = [[r["mode"], len(r["trials"]), r["busy"], r["ideal"], r["greedy"], r["wall"], f"{r['utilisation']:.0%}",
             f"{r['greedy'] / r['wall']:.0%}", r["most_at_once"]] for r in results]
    print_table(f"{trials} trials of {min(lengths):g}-{max(lengths):g} s (median {median_s:g}), n_jobs={args.n_jobs}, "
                f"local backend: "
                f"{machine()}", ["dispatch", "trials", "job s", "ideal s", "greedy s", "wall s", "utilisation",
                                 "greedy / wall", "most at once"], rows)
    a, b = results
    print(f"async wall = {a['wall'] / b['wall']:.2f}x batch's; async utilisation {a['utilisation']:.0%} "
          f"(goal >= 90%), dispatch efficiency {a['greedy'] / a['wall']:.0%}")
    if args.json:
        args.json.write_text(json.dumps({"n_jobs": args.n_jobs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
