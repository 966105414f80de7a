"""Hydra override syntax -> Optuna distributions, and sampled values -> Hydra overrides.

Hydra's own parser reads the syntax (``interval``, ``tag(log, ...)``, ``int(...)``, ``range``,
``choice``, ``a,b``), so the search space is written the way the basic sweeper's grids are; only the
mapping to Optuna's distributions is ours (neither library has it outside hydra-optuna-sweeper).
``range`` keeps Hydra's meaning (stop excluded, as in the basic sweeper and Python).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, QuotedString, RangeSweep

SYNTAX = "interval(a,b), tag(log, interval(a,b)), int(interval(a,b)), range(start,stop,step), choice(a,b,...) or a,b"


class SearchSpaceError(ValueError):
    """A search-space entry that cannot become an Optuna distribution; names the key and the syntax."""


@dataclass
class SearchSpace:
    """``distributions``: Optuna name -> distribution; ``fixed``: overrides passed to every trial."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The Hydra overrides for one trial: the fixed ones, then one per sampled parameter."""
        return [*self.fixed, *(f"{k}={format_value(params[k])}" for k in self.distributions)]


def format_value(value: Any) -> str:
    """A value as Hydra override text (quoted when Hydra's grammar needs it)."""
    return Override._get_value_element_as_str(value)


def _distribution(override: Override):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep):
        # ``a,'b c'`` keeps Hydra's QuotedString objects (``choice(...)`` unquotes them): the text is the value.
        choices = [c.text if isinstance(c, QuotedString) else c for c in value.list]
        bad = [c for c in choices if not isinstance(c, (bool, int, float, str, type(None)))]
        if bad:
            raise SearchSpaceError(f"{key}: choice values must be numbers, strings, booleans or null, got {bad[0]!r}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if not all(float(x).is_integer() for x in (start, stop, step)) or step <= 0:
            return CategoricalDistribution(list(_float_range(key, start, stop, step)))
        last = start + ((int(stop) - int(start) - 1) // int(step)) * int(step)  # stop excluded, as in Hydra
        if last < start:
            raise SearchSpaceError(f"{key}=range({start},{stop},{step}) is empty")
        return IntDistribution(int(start), int(last), step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if log and value.start <= 0:
            raise SearchSpaceError(f"{key}: tag(log, interval({value.start},{value.end})) needs a start > 0")
        if value.start >= value.end:
            raise SearchSpaceError(f"{key}: interval({value.start},{value.end}) needs start < end")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise SearchSpaceError(f"{override.input_line}: unsupported sweep; use {SYNTAX}")


def _float_range(key: str, start: float, stop: float, step: float):
    if step == 0 or (stop - start) / step <= 0:
        raise SearchSpaceError(f"{key}=range({start},{stop},{step}) is empty")
    for i in range(math.ceil((stop - start) / step)):
        yield start + i * step


def parse_space(params: dict[str, str] | None, arguments: list[str], parser: OverridesParser) -> SearchSpace:
    """Combine the config's ``params`` with the command line (the command line wins per key)."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    by_key: dict[str, Override] = {}
    for line in lines:
        try:
            override = parser.parse_overrides([line])[0]
        except Exception as err:  # Hydra's parse errors carry the position; keep them, add the syntax
            raise SearchSpaceError(f"cannot parse search-space entry {line!r}: {err}. Valid: {SYNTAX}") from None
        by_key[override.get_key_element()] = override
    space = SearchSpace()
    for key, override in by_key.items():
        if override.is_sweep_override():
            space.distributions[key] = _distribution(override)
        else:
            space.fixed.append(override.input_line)
    if not space.distributions:
        raise SearchSpaceError(f"nothing to search: give hydra.sweeper.params or sweep overrides ({SYNTAX})")
    return space
