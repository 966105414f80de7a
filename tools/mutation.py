"""Mutation testing of named packages with mutmut 3, against the fast tier, within a time budget.

    python tools/mutation.py bincount.secrets bincount.bundle          # mutate, test, print the table
    python tools/mutation.py bincount.serve --budget 900 --diffs 20     # stop after 15 min, show 20 survivors
    python tools/mutation.py --report bincount.secrets                  # the table from the last run only
    python tools/mutation.py bincount.secrets --fresh                   # re-check killed mutants too

mutmut does the work (``[tool.mutmut]`` in pyproject.toml: what may be mutated, the fast tier as the test
selection; it runs only the tests that cover each mutated function, in forked workers). This script adds
what mutmut leaves out: one command per package list, a wall-clock budget (mutmut keeps each verdict as it
goes, so a stopped run reports what it checked and the next run goes on from there), and a per-module table
with the score, where a mutant no test reaches counts as a survivor. Exit status 0 when every named package
reaches ``--min-score`` (default 85%), 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
RECHECK = {"not checked", "survived", "no tests", "suspicious", "skipped", "check was interrupted by user"}


def status_of(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code  # mutmut's own table: one meaning for each exit code

    return status_by_exit_code[exit_code]


def module_of(mutant: str) -> str:
    """``bincount.text.x_plain__mutmut_3`` -> ``bincount.text`` (methods: ``...xǁClassǁname__mutmut_1``)."""
    return mutant.rsplit(".", 1)[0]


def verdicts() -> dict[str, str]:
    """mutant name -> status, from the ``.meta`` files mutmut writes beside each mutated module."""
    out = {}
    for meta in (MUTANTS / "src").rglob("*.py.meta"):  # src/ only: a stray nested copy must not override
        try:
            codes = json.loads(meta.read_text())["exit_code_by_key"]
        except (OSError, ValueError, KeyError) as e:
            print(f"mutation.py: skipping unreadable {meta} ({type(e).__name__})", file=sys.stderr)
            continue
        out.update({name: status_of(code) for name, code in codes.items()})
    return out


def selected(names: dict[str, str], packages: list[str]) -> dict[str, str]:
    return {n: s for n, s in names.items() if any(module_of(n) == p or module_of(n).startswith(p + ".")
                                                   for p in packages)}


def table(results: dict[str, str]) -> list[tuple]:
    by_module: dict[str, Counter] = {}
    for name, status in results.items():
        by_module.setdefault(module_of(name), Counter())[status] += 1
    rows = []
    for module in sorted(by_module):
        c = by_module[module]
        killed = sum(c[s] for s in KILLED)
        checked = killed + c["survived"] + c["no tests"] + c["suspicious"]
        rows.append((module, sum(c.values()), killed, c["timeout"], c["survived"], c["no tests"],
                     c["not checked"] + c["skipped"], killed / checked if checked else None))
    return rows


def package_scores(results: dict[str, str], packages: list[str]) -> dict[str, tuple[int, int, float | None]]:
    out = {}
    for p in packages:
        mine = selected(results, [p]).values()
        killed = sum(s in KILLED for s in mine)
        checked = sum(s in KILLED or s in ("survived", "no tests", "suspicious") for s in mine)
        out[p] = (killed, checked, killed / checked if checked else None)
    return out


def stale_modules(packages: list[str]) -> set[str]:
    """Modules of these packages whose source is newer than mutmut's record of it (or has none): all of
    their mutants must be (re)generated and checked, under names the old record does not know."""
    out = set()
    for source in (ROOT / "src").rglob("*.py"):
        module = ".".join(source.relative_to(ROOT / "src").with_suffix("").parts).removesuffix(".__init__")
        if not any(module == p or module.startswith(p + ".") for p in packages):
            continue
        meta = MUTANTS / source.relative_to(ROOT).with_name(source.name + ".meta")
        if not meta.exists() or meta.stat().st_mtime < source.stat().st_mtime:
            out.add(module)
    return out


def to_check(packages: list[str], fresh: bool, timeouts: bool = False) -> list[str]:
    """What ``mutmut run`` is asked for. mutmut re-runs every mutant a name or glob given to it matches, so a
    glob per package would start each budgeted run from the beginning. Instead: a glob for modules that are
    new or changed, and by name the mutants with no verdict yet (a run that the budget stopped) or whose
    verdict a new test may change (survivors, no tests). Killed mutants keep their verdict: tests are added,
    not weakened. ``fresh`` re-checks everything; ``timeouts`` also the kills that were timeouts."""
    stale = stale_modules(packages)
    if fresh or not MUTANTS.exists():
        return [f"{p}.*" for p in packages]
    names = [n for n, s in selected(verdicts(), packages).items()
             if (s in RECHECK or (timeouts and s == "timeout")) and module_of(n) not in stale]
    return sorted(f"{m}.*" for m in stale) + sorted(names)


def forget_test_map(packages: list[str], fresh: bool = False) -> bool:
    """Delete mutmut's map of which tests reach which function when a module of these packages is new or changed.

    Why: mutmut 3 keeps that map between runs and, on a later run, traces only tests whose names are new. A
    function moved into a new module (or one an old test now calls) is then reached by no test it knows of,
    and its mutants are scored "no tests" without running anything: measured when issue 26 split the
    launcher (warm_pool, preflight, staging and backends: 429 mutants, all "no tests"). Without the map,
    mutmut traces the whole fast tier again (a few minutes) before it mutates; ``--fresh`` does the same."""
    stats = MUTANTS / "mutmut-stats.json"
    stale = stale_modules(packages)
    if not (stale or fresh) or not stats.exists():
        return False
    why = f"new or changed modules ({', '.join(sorted(stale))})" if stale else "--fresh"
    print(f"mutation.py: {why}: mutmut traces again which tests reach which functions (a few minutes)", flush=True)
    stats.unlink()
    return True


def run_mutmut(packages: list[str], budget_s: float, max_children: int, fresh: bool = False,
               timeouts: bool = False) -> int:
    wanted = to_check(packages, fresh, timeouts)
    if not wanted:
        print("mutation.py: every mutant of these packages has a verdict that a new test cannot change "
              "(--fresh re-checks all)", flush=True)
        return 0
    forget_test_map(packages, fresh)
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *wanted]
    shown = " ".join(cmd[:6]) + (f" ... ({len(wanted)} names and globs)" if len(wanted) > 3 else " " + " ".join(wanted))
    print(f"$ {shown}   (budget {budget_s:.0f} s)", flush=True)
    env = dict(os.environ)
    sample = ROOT.parent / "shared" / "data" / "abid" / "sample"  # where the README puts it; mutants/ is one level down
    if "BINCOUNT_ABID_SAMPLE" not in env and sample.is_dir():
        env["BINCOUNT_ABID_SAMPLE"] = str(sample)
    # mutmut forks each mutant's test run from a process that has already run torch: a forked child whose
    # parent had an OpenMP thread pool hangs in its first parallel op, and mutmut scores the hang as a
    # "timeout", i.e. a kill. Measured: two predict mutants, 2 timeouts in 52 s without this, 2 real kills
    # in 25 s with it. One thread per worker also keeps the two workers off each other's cores.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        print(f"mutation.py: the budget of {budget_s:.0f} s ran out; the table shows what was checked", flush=True)
        return 124


def show_diffs(survivors: list[str], limit: int) -> None:
    for name in survivors[:limit]:
        out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=ROOT, capture_output=True, text=True)
        print(out.stdout.rstrip() or out.stderr.rstrip())
    if len(survivors) > limit:
        print(f"... {len(survivors) - limit} more survivors (--diffs N shows more; `mutmut show NAME` one)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/mutation.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", nargs="+", help="dotted packages or modules, e.g. bincount.secrets hydra_plugins")
    parser.add_argument("--budget", type=float, default=1800, help="wall-clock seconds for mutmut (default 1800)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="parallel workers")
    parser.add_argument("--diffs", type=int, default=10, help="surviving diffs to print (default 10)")
    parser.add_argument("--min-score", type=float, default=0.85, help="score every package must reach (0.85)")
    parser.add_argument("--report", action="store_true", help="print the last run's table without running")
    parser.add_argument("--fresh", action="store_true", help="re-check every mutant, killed ones too")
    parser.add_argument("--timeouts", action="store_true", help="re-check the kills that were timeouts")
    args = parser.parse_args(argv)
    bad = [p for p in args.packages if not (ROOT / "src" / p.replace(".", "/")).exists()
           and not (ROOT / "src" / (p.replace(".", "/") + ".py")).exists()]
    if bad:
        parser.error(f"no such package or module under src/: {', '.join(bad)}")
    started = time.monotonic()
    if not args.report:
        run_mutmut(args.packages, args.budget, args.max_children, args.fresh, args.timeouts)
    results = selected(verdicts(), args.packages)
    if not results:
        print("mutation.py: no mutants recorded for these packages (run without --report first)", file=sys.stderr)
        return 1
    rows = table(results)
    # "of which timeout": kills by mutmut's clock, not by an assertion; a high share means a slow test or
    # fixture, worth a look before trusting the score.
    print(f"\n{'module':<44} {'mutants':>8} {'killed':>7} {'(timeout)':>9} {'survived':>9} {'no tests':>9} "
          f"{'unchecked':>10} {'score':>7}")
    for module, total, killed, timeouts, survived, no_tests, unchecked, score in rows:
        shown = f"{score:.0%}" if score is not None else "-"
        print(f"{module:<44} {total:>8} {killed:>7} {timeouts:>9} {survived:>9} {no_tests:>9} {unchecked:>10} {shown:>7}")
    print()
    failing = []
    for package, (killed, checked, score) in package_scores(results, args.packages).items():
        print(f"{package}: {killed}/{checked} killed ({score:.1%})" if score is not None else f"{package}: nothing checked")
        if score is None or score < args.min_score:
            failing.append(package)
    survivors = sorted(n for n, s in results.items() if s in ("survived", "no tests"))
    if survivors and args.diffs:
        print(f"\nSurviving mutants ({len(survivors)}):")
        show_diffs(survivors, args.diffs)
    print(f"\n{time.monotonic() - started:.0f} s; below {args.min_score:.0%}: {', '.join(failing) or 'none'}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
