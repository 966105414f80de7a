"""``bincount compare RUN_A RUN_B [...]``: what differs between runs, and is the better one really better?

Prints the config keys that differ (flattened, dotted), the key metrics side by side and, for every run
against the baseline (the first run, or ``--baseline``), McNemar's test on the paired test predictions
with its 2x2 table and bootstrap intervals for the accuracy and RMSE differences: the comparison the
first report did by hand. Paired tests need the same test samples with the same labels, so runs whose
``predictions.csv`` disagree on ids or true counts are refused rather than compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bincount.compare.render import Section, console, fmt, to_html, to_markdown, to_rich
from bincount.compare.rundir import RUN_DIR, Run, RunError, load_run, read_predictions, split_overrides

FORMATS = ("table", "markdown", "html", "json")
SUFFIX_FORMATS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".json": "json"}
KEY_METRICS = ("objective", "val/acc", "val/rmse", "val/mae", "val/within_one", "val/f1_macro", "test/acc",
               "test/rmse", "test/mae", "test/within_one", "test/f1_macro", "test/f1_weighted", "test/num_samples",
               "epochs_trained", "duration_s")
ABSENT = "(absent)"


class CompareError(ValueError):
    """The runs cannot be compared as asked (the message says why and what to do)."""


# Failures at run time (exit status 1, see bincount.cli): runs that are broken or do not pair up, or
# scipy missing for the statistics. Mistakes in the arguments raise argparse.ArgumentTypeError (status 2).
ERRORS = (CompareError, RunError, ImportError)


def cfg_text(value: Any) -> str:
    """Config values as YAML spells them (``null``, ``true``, ``0.0``), not rounded like metrics."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def config_diff(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """The flattened config keys whose values are not the same in every run (absent counts as a value)."""
    keys = sorted({k for r in runs for k in r.config})
    rows = []
    for key in keys:
        values = [r.config.get(key, ABSENT) for r in runs]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


def _ids(n: int) -> str:
    return f"{n} id differs" if n == 1 else f"{n} ids differ"


def paired_arrays(a: Run, b: Run, name_a: str, name_b: str):
    """Align two runs' predictions by id; refuse different test sets (ids or true counts)."""
    import numpy as np

    pa, pb = read_predictions(a.path / "predictions.csv"), read_predictions(b.path / "predictions.csv")
    only_a, only_b = sorted(set(pa) - set(pb)), sorted(set(pb) - set(pa))
    if only_a or only_b:
        example = f"{only_a[0]!r} is only in {name_a}" if only_a else f"{only_b[0]!r} is only in {name_b}"
        raise CompareError(
            f"{name_a} ({a.path}) and {name_b} ({b.path}) were not evaluated on the same test set: "
            f"{_ids(len(only_a) + len(only_b))} "
            f"({len(only_a)} only in {name_a}, {len(only_b)} only in {name_b}; e.g. {example}). McNemar's test and the "
            f"bootstrap need paired predictions on the same samples; pass --no-stats to compare configs and metrics only.")
    ids = sorted(pa)
    relabelled = [i for i in ids if pa[i][0] != pb[i][0]]
    if relabelled:
        i = relabelled[0]
        raise CompareError(
            f"{name_a} ({a.path}) and {name_b} ({b.path}) have the same test ids but {len(relabelled)} of {len(ids)} "
            f"have different true counts "
            f"(e.g. {i!r}: {pa[i][0]} in {name_a}, {pb[i][0]} in {name_b}); different labels are a different test set. "
            f"Pass --no-stats to compare configs and metrics only.")
    if not ids:
        raise CompareError(f"{name_a} and {name_b}: predictions.csv has no rows; nothing to test")
    true = np.array([pa[i][0] for i in ids])
    return true, np.array([pa[i][1] for i in ids]), np.array([pb[i][1] for i in ids])


def _bootstrap(true, pred_a, pred_b, n_boot: int, seed: int, confidence: float):
    """The bootstrap, with a progress bar on stderr when it will take more than a moment."""
    from bincount.compare.stats import paired_bootstrap

    if len(true) * n_boot < 20_000_000:
        return paired_bootstrap(true, pred_a, pred_b, n_boot=n_boot, seed=seed, confidence=confidence)
    from rich.progress import Progress

    with Progress(console=console(stderr=True), transient=True) as bar:
        task = bar.add_task("bootstrap", total=n_boot)
        return paired_bootstrap(true, pred_a, pred_b, n_boot=n_boot, seed=seed, confidence=confidence,
                                progress=lambda k: bar.advance(task, k))


def pair_stats(a: Run, b: Run, name_a: str, name_b: str, args: argparse.Namespace) -> dict[str, Any]:
    from bincount.compare.stats import mcnemar

    true, pred_a, pred_b = paired_arrays(a, b, name_a, name_b)
    test = mcnemar(true, pred_a, pred_b)
    intervals = _bootstrap(true, pred_a, pred_b, args.bootstrap, args.seed, args.confidence)
    return {"a": name_a, "b": name_b, "num_samples": len(true), "mcnemar": {**asdict(test), "table": test.table},
            "bootstrap": {k: asdict(v) for k, v in intervals.items()}, "n_boot": args.bootstrap, "seed": args.seed}


def _p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def pair_section(s: dict[str, Any], alpha: float) -> Section:
    a, b, m = s["a"], s["b"], s["mcnemar"]
    rows = [[f"{a} right", str(m["both_right"]), str(m["b"])], [f"{a} wrong", str(m["c"]), str(m["both_wrong"])]]
    stat = "" if m["statistic"] is None else f"chi-square = {m['statistic']:.2f}, "
    verdict = "significant" if m["pvalue"] < alpha else "not significant"
    notes = [f"McNemar ({m['method']}): {stat}{_p(m['pvalue'])} (b = {m['b']}, c = {m['c']}); "
             f"difference in error rates {verdict} at alpha = {alpha}"]
    for name, ci in s["bootstrap"].items():
        notes.append(f"{name}({a}) - {name}({b}) = {ci['estimate']:+.4f}, {ci['confidence']:.0%} bootstrap CI "
                     f"[{ci['low']:+.4f}, {ci['high']:+.4f}] ({s['n_boot']} resamples, seed {s['seed']})")
    return Section(f"{a} vs {b}: paired test on {s['num_samples']} test samples", ["", f"{b} right", f"{b} wrong"],
                   rows, notes)


def build_report(runs: list[Run], args: argparse.Namespace) -> tuple[list[Section], dict[str, Any]]:
    names = [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(len(runs))]
    common, own = split_overrides(runs)
    sections = [Section("Runs", ["run", "directory", "own overrides"],
                        [[n, str(r.path), " ".join(o) or "—"] for n, r, o in zip(names, runs, own)], wrap=(1, 2),
                        notes=["overrides of every run: " + " ".join(common)] if common else [])]
    diff = config_diff(runs)
    sections.append(Section("Config (only keys that differ)", ["key", *names],
                            [[k, *(cfg_text(v) for v in values)] for k, values in diff], wrap=tuple(range(1, len(runs) + 1))))
    if not diff:
        sections[-1].notes.append("the configs are identical")
    own_dir = sorted({k for r in runs for k, v in r.config.items() if isinstance(v, str) and v.startswith(RUN_DIR)})
    if own_dir:
        sections[-1].notes.append(f"{len(own_dir)} key{'s' if len(own_dir) > 1 else ''} naming each run's own directory "
                                  f"compared as {RUN_DIR}/... (they differ by construction): {', '.join(own_dir[:3])}"
                                  + (", ..." if len(own_dir) > 3 else ""))
    metrics = [k for k in KEY_METRICS if any(k in r.metrics for r in runs)]
    sections.append(Section("Metrics", ["metric", *names], [[k, *(fmt(r.metrics.get(k), 1 if k == "duration_s" else 4) for r in runs)] for k in metrics]))
    pairs = [] if args.no_stats else [pair_stats(runs[0], r, names[0], n, args) for r, n in zip(runs[1:], names[1:])]
    sections += [pair_section(p, args.alpha) for p in pairs]
    if len(pairs) > 1:  # said, not silently corrected: the reader decides (e.g. Bonferroni: alpha / len(pairs))
        sections[-1].notes.append(f"{len(pairs)} tests against {names[0]}: p-values are not corrected for multiple "
                                  f"comparisons (Bonferroni: compare each with {args.alpha / len(pairs):.4g})")
    data = {"runs": {n: str(r.path) for n, r in zip(names, runs)},
            "overrides": {n: r.overrides for n, r in zip(names, runs)}, "config_diff": {k: v for k, v in diff},
            "metrics": {n: {k: r.metrics.get(k) for k in metrics} for n, r in zip(names, runs)}, "pairs": pairs}
    return sections, data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN", nargs="+", type=Path, help="run directories (with metrics.json)")
    parser.add_argument("--baseline", type=Path, default=None, help="run the others are tested against (default: the first)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default: table, or from the --output suffix .md/.html/.json)")
    parser.add_argument("--output", "-o", type=Path, default=None, help="write the report to this file")
    parser.add_argument("--no-stats", action="store_true", help="configs and metrics only (no predictions.csv needed)")
    parser.add_argument("--bootstrap", type=int, default=10_000, metavar="N", help="bootstrap resamples (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval level (default: 0.95)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level for McNemar's verdict (default: 0.05)")


def _format(args: argparse.Namespace) -> str:
    if args.format == "table" and args.output is not None:
        raise argparse.ArgumentTypeError("--format table prints to the terminal; for --output use markdown, html or json")
    if args.format:
        return args.format
    if args.output is None:
        return "table"
    fmt_ = SUFFIX_FORMATS.get(args.output.suffix.lower())
    if fmt_ is None:
        raise argparse.ArgumentTypeError(f"--output {args.output}: cannot tell the format from {args.output.suffix!r}; "
                                         f"use a suffix in {sorted(SUFFIX_FORMATS)} or pass --format {{markdown,html,json}}")
    return fmt_


def run(args: argparse.Namespace) -> int:
    if not 0 < args.confidence < 1 or not 0 < args.alpha < 1 or args.bootstrap < 1:
        raise argparse.ArgumentTypeError(f"need 0 < --confidence < 1 (got {args.confidence}), 0 < --alpha < 1 "
                                         f"(got {args.alpha}) and --bootstrap >= 1 (got {args.bootstrap})")
    out_format = _format(args)
    paths = list(args.runs)
    if args.baseline is not None:
        paths.insert(0, args.baseline)
    unique: dict[Path, Path] = {}
    for p in paths:  # the same run twice (or given again as --baseline) is one run
        unique.setdefault(p.resolve(), p)
    paths = list(unique.values())
    if len(paths) < 2:
        raise argparse.ArgumentTypeError(f"need at least two different runs to compare, got {[str(p) for p in paths]}")
    runs = [load_run(p) for p in paths]
    sections, data = build_report(runs, args)
    title = "bincount compare: " + " vs ".join(data["runs"])
    text = {"markdown": lambda: to_markdown(sections, title), "html": lambda: to_html(sections, title),
            "json": lambda: json.dumps(data, indent=2)}
    if out_format == "table":
        to_rich(sections, console())
    elif args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text[out_format]() + "\n", encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text[out_format]() + "\n")
    return 0
