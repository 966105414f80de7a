"""One table model, four outputs: the terminal (rich), Markdown, self-contained HTML and CSV.

``runs`` and ``compare`` build their results as :class:`Section` lists, so that every output format shows
the same rows. Markdown and HTML tables are written here because rich renders only to terminals (its
HTML export is a ``<pre>`` screenshot of the terminal, not a table a reader can copy from).
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field
from typing import Any

from bincount.text import csv_cell, markdown, plain, terminal

MISSING = "—"


@dataclass
class Section:
    """A titled table with optional notes below it (notes: one line each)."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    wrap: tuple[int, ...] | None = None  # columns that may wrap in a terminal (None: the last one)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers to fixed decimals (ints stay ints), missing/NaN to a dash, everything else to ``str``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):  # 0.8123 for rates, 123.4 for seconds and other large numbers
        return f"{value:.{digits if abs(value) < 10 else 1}f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == MISSING
    return True


def console(stderr: bool = False):
    """A rich console; 160 columns when writing to a file or pipe (rich's default 80 folds every path)."""
    import os

    from rich.console import Console

    # Messages on stderr are never folded: they name files, and a folded path cannot be copied or grepped.
    out = Console(stderr=stderr, highlight=False, soft_wrap=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, highlight=False, width=160, soft_wrap=stderr)
    return out


def to_rich(sections: list[Section], console) -> None:
    """Every title, header, cell and note goes through ``terminal``: they come from run directories."""
    from rich.table import Table

    for section in sections:
        table = Table(title=terminal(section.title), title_justify="left", title_style="bold",
                      min_width=len(section.title))
        for i, header in enumerate(section.headers):
            numeric = i > 0 and all(_is_number(row[i]) for row in section.rows)
            # columns fold when the terminal is narrow; the first (the row label) keeps up to 40 characters
            longest = max([len(header)] + [len(row[i]) for row in section.rows])
            table.add_column(terminal(header), overflow="fold", justify="right" if numeric else "left",
                             min_width=min(longest, 40) if i == 0 else None)  # the row label stays whole
        for row in section.rows:
            table.add_row(*map(terminal, row))
        console.print(table)
        for note in section.notes:
            console.print(plain(note), markup=False, highlight=False)
        console.print()


def to_markdown(sections: list[Section], title: str) -> str:
    """Every title, header, cell and note goes through ``markdown``: they come from run directories."""
    lines = [f"# {markdown(title)}", ""]
    for section in sections:
        lines += [f"## {markdown(section.title)}", ""]
        lines.append("| " + " | ".join(markdown(h) for h in section.headers) + " |")
        numeric = [i > 0 and all(_is_number(row[i]) for row in section.rows) for i in range(len(section.headers))]
        lines.append("|" + "|".join("---:" if n else ":---" for n in numeric) + "|")
        lines += ["| " + " | ".join(markdown(c) for c in row) + " |" for row in section.rows]
        lines.append("")
        lines += [f"{markdown(note)}  " for note in section.notes]
        if section.notes:
            lines.append("")
    return "\n".join(lines)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:.5em}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}"
        "th{background:#f3f3f3}p.note{margin:.2em 0;font-family:monospace}")


def to_html(sections: list[Section], title: str) -> str:
    """A standalone page: inline CSS, no scripts, no network requests."""
    def esc(text: str) -> str:
        return html.escape(plain(text))

    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2><table><thead><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in section.headers) + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in section.rows]
        parts.append("</tbody></table>")
        parts += [f"<p class=\"note\">{esc(note)}</p>" for note in section.notes]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def to_csv(section: Section) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # plain(): ``bincount runs --format csv`` prints to the terminal; a control character is never data here.
    # csv_cell(): run names and overrides come from run directories; numbers pass unchanged.
    writer.writerow([csv_cell(plain(h)) for h in section.headers])
    writer.writerows([["" if c == MISSING else csv_cell(plain(c)) for c in row] for row in section.rows])
    return buffer.getvalue()
