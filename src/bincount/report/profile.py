"""The top time sinks of a profiled run (``profiler=simple|advanced|pytorch``), for report.html.

Lightning writes one summary per stage into ``<run>/profile/`` (``fit-profile.txt``...). The
SimpleProfiler's is a table, read into rows and sorted by total time; the others (cProfile text,
torch's operator table) are shown as their first lines, which is where both put the largest entries.
"""

from __future__ import annotations

from pathlib import Path

PROFILE_DIR = "profile"
TOP = 10
PREVIEW_LINES = 40


def simple_rows(text: str) -> list[list]:
    """``[action, mean s, calls, total s, percent]`` of a SimpleProfiler summary, largest total first."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) != 5 or cells[0] in ("Action", "Total"):
            continue
        try:
            rows.append([cells[0], float(cells[1]), int(cells[2]), float(cells[3]), float(cells[4].rstrip(" %"))])
        except ValueError:
            continue
    return sorted(rows, key=lambda r: -r[3])


def summaries(run_dir: Path) -> list[tuple[str, list[list] | None, str]]:
    """(file name, the SimpleProfiler's top rows or None, preview text) for each profile summary."""
    out = []
    for path in sorted((run_dir / PROFILE_DIR).glob("*.txt")):
        text = path.read_text(errors="replace")
        rows = simple_rows(text)
        out.append((path.name, rows[:TOP] or None, "\n".join(text.splitlines()[:PREVIEW_LINES])))
    return out
