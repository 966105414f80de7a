"""argparse value types shared by the ``bincount`` subcommands: one wording for every bad option value.

Why here, below everything: ``predict``, ``serve`` and ``deploy`` each had their own copies, and an option
refused by one subcommand read differently from the same option refused by another.
"""

from __future__ import annotations

import argparse


def positive(value: str) -> int:
    """A whole number >= 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def count(value: str) -> int:
    """A whole number >= 0."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return int(value)


def bounded(low: float, high: float, unit: str, low_open: bool = False):
    """A number between ``low`` and ``high`` (above ``low`` with ``low_open``), named by ``unit`` in errors."""
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        above_low = number > low if low_open else number >= low
        if not (above_low and number <= high):
            lower = f"above {low:g}" if low_open else f"between {low:g}"
            raise argparse.ArgumentTypeError(f"expected {unit} {lower} {'and at most' if low_open else 'and'} {high:g}, "
                                             f"got {value!r}")
        return number
    return parse


def port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {value!r}")
    return int(value)
