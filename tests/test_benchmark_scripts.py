"""The benchmark scripts still run, CPU-sized (``--quick``), and print their tables: a benchmark that rots
unnoticed gives no figure the day a GPU is lent. What they measure is not asserted (noisy machines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(*argv: str) -> str:
    proc = subprocess.run([sys.executable, *argv], cwd=BENCH, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu_and_writes_its_table(tmp_path):
    out = bench("gpu.py", "--quick", "--out", str(tmp_path / "gpu.md"))
    table = (tmp_path / "gpu.md").read_text()
    for setting in ("| fp32 |", "| bf16 |", "| bf16+channels_last |", "| +compile |"):
        assert setting in table, setting
    rates = [float(line.split("|")[6].replace(",", "")) for line in table.splitlines()
             if "| synthetic |" in line and "skipped" not in line]
    assert len(rates) == 3 and all(r > 0 for r in rates)
    assert "of the synthetic ceiling" in out


@pytest.mark.slow
def test_serve_benchmark_runs_quick():
    out = bench("serve.py", "--quick", "--servers", "bincount")
    assert "goal 1: bincount batching at 8 clients" in out and "goal 2: bincount at 1 client" in out
    # the overload rows (peak 2 clients in --quick, then 4x and 16x) and the hostile cases
    for row in ("2 clients, 3 s deadline", "8 clients, 3 s deadline", "32 clients, 3 s deadline"):
        assert row in out, row
    assert "goal: goodput at 4x the peak's clients" in out and "goal: goodput at 16x the peak's clients" in out
    bombs = next(line for line in out.splitlines() if "8 PNG bombs" in line)
    nested = next(line for line in out.splitlines() if "JSON nested 100,000 deep" in line)
    assert "413" in bombs and "400" in nested, (bombs, nested)
    assert "goal: tracebacks in the server's log: 0 (goal 0)" in out


def test_quickstart_says_whether_a_run_is_the_readmes_figures_for_this_cpu():
    """The README's figures hold per machine (CPU model and kernels); the benchmark names the row a run matches,
    or every figure that moved."""
    sys.path.insert(0, str(BENCH))
    import quickstart

    today = dict(quickstart.README_FIGURES["AuthenticAMD"][0][1])
    earlier = dict(quickstart.README_FIGURES["AuthenticAMD"][1][1])
    assert quickstart.verdict(today, "AuthenticAMD") == "within the README's figures for AMD EPYC (2026-12-07) (+-0.01)"
    assert quickstart.verdict(earlier, "AuthenticAMD") == "within the README's figures for AMD EPYC (earlier) (+-0.01)"
    assert quickstart.verdict(today, "GenuineIntel") == (
        "differs from the README's figures for Intel Xeon: val/acc 0.403 (README 0.418); test/acc 0.384 (README 0.394)"
        "; test/rmse 1.032 (README 1.085); test/within_one 0.859 (README 0.843)")
    assert quickstart.verdict({**today, "test/rmse": 1.045}, "AuthenticAMD").startswith("differs")
    assert quickstart.verdict({**today, "test/rmse": 1.041}, "AuthenticAMD").startswith("within")
    assert quickstart.verdict(today, "HygonGenuine").startswith("no README figures for CPU vendor 'HygonGenuine'")
    readme = (BENCH.parent / "README.md").read_text()
    for rows in quickstart.README_FIGURES.values():
        for _, figures in rows:
            assert all(f"{v}" in readme for v in figures.values()), f"README lacks {figures}"
