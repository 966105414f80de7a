"""Text from run directories, sweeps and bucket listings, made safe to show.

Why: a run directory's name, an override, a metric name, a failure reason or an S3 key is written by
whoever could write that directory or bucket, and the tables that show them are read in a terminal or
as Markdown. Unescaped, ``[link=http://x]y[/link]`` becomes a rich hyperlink, ``\\x1b]0;title\\x07``
retitles the terminal (other escapes can rewrite what is on screen), and ``<img src=...>`` or
``![](...)`` in a Markdown cell loads a page from elsewhere, and a CSV cell starting with ``=`` runs as
a formula when the file is opened in a spreadsheet. Every table, message and CSV cell that shows such
text goes through one of these functions. Standard library only (rich is imported when used).
"""

from __future__ import annotations

import html
import re

# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and the bidirectional
# overrides that make a name read differently from what it is ("Trojan source").
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MARKDOWN = re.compile(r"([\\|\[\]`])")


def plain(text: object) -> str:
    """``text`` without control characters: what may reach a terminal through ``print``."""
    return _CONTROL.sub("", str(text))


def terminal(text: object) -> str:
    """``text`` for rich (a table cell, a title, a message with markup of our own): no control
    characters, and its ``[...]`` shown as typed instead of read as markup."""
    from rich.markup import escape

    return escape(plain(text))


def markdown(text: object) -> str:
    """``text`` for a Markdown table cell, heading or note: no control characters, HTML shown as text,
    and the characters that end a cell, start a link or a code span escaped; one line."""
    return _MARKDOWN.sub(r"\\\1", html.escape(plain(text), quote=False)).replace("\n", " ")


# OWASP's "CSV injection": a spreadsheet runs a cell that starts with one of these as a formula
# (=HYPERLINK(...) sends data elsewhere, @SUM(...) and +/- start one too; a leading TAB is trimmed first;
# CR is dropped before the check).
_FORMULA_START = ("=", "+", "-", "@", "\t")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(text: object) -> str:
    """``text`` for a CSV cell that holds a name (a file name, an id, an S3 key, a metric name): one
    that a spreadsheet would run as a formula gets a leading ``'`` (OWASP's advice), so it shows as typed.
    A number stays as it is (``-0.25`` is a value, not a formula). A carriage return is dropped: the csv
    module does not quote it under ``lineterminator="\\n"``, so it would split the row."""
    value = str(text).replace("\r", "")
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value
