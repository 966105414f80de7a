"""Class policy: which counts become classes, and what happens to counts above the range."""

from __future__ import annotations

from dataclasses import dataclass

from bincount.layout import DataError

OVERFLOW_CHOICES = ("clip", "drop", "fail")


@dataclass(frozen=True)
class ClassRange:
    """Which counts become classes: ``min_count..max_count``, label = ``count - min_count``.

    Counts below ``min_count`` are always excluded (and counted in the report); counts above
    ``max_count`` follow ``overflow``: ``clip`` maps them to the last class, ``drop`` excludes them,
    ``fail`` raises :class:`DataError`.
    """

    min_count: int = 1
    max_count: int = 5
    overflow: str = "clip"

    def __post_init__(self) -> None:
        for name in ("min_count", "max_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if not 0 <= self.min_count < self.max_count:
            raise ValueError(
                f"class range needs 0 <= min_count < max_count, got min_count={self.min_count}, "
                f"max_count={self.max_count}"
            )
        if self.overflow not in OVERFLOW_CHOICES:
            raise ValueError(f"overflow={self.overflow!r} is not one of {', '.join(OVERFLOW_CHOICES)}")

    @property
    def num_classes(self) -> int:
        return self.max_count - self.min_count + 1

    def label(self, count: int) -> int | None:
        """The class index of ``count``, or None when the count is excluded."""
        if count < self.min_count:
            return None
        if count > self.max_count:
            if self.overflow == "fail":
                raise DataError(
                    f"count {count} is above max_count={self.max_count} and overflow='fail' "
                    f"(choices: {', '.join(OVERFLOW_CHOICES)})"
                )
            return self.num_classes - 1 if self.overflow == "clip" else None
        return count - self.min_count

    def count(self, label: int) -> int:
        """The count that class ``label`` stands for (the last class means ``>= max_count`` under clip)."""
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} is outside 0..{self.num_classes - 1}")
        return self.min_count + label
