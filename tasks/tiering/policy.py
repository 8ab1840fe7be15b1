"""The tiering policy: score intervals that cover [0, 1], each naming a tier.

**Edges.** Every interval is closed below and open above, ``lo <= score < hi``, except the
last, which also holds 1.0: ``lo <= score <= 1``. So a score on a boundary goes to the
*upper* interval (with the default policy 0.25 is C, 0.5 is B, 0.75 is A) and every score in
[0, 1] has exactly one tier, whatever the order the intervals were written in. (HASTE's
storage client once used ``lo <= x <= hi`` with the first match winning, later
``lo < x <= hi``; we chose one rule and test it.)

The intervals must tile [0, 1]: start at 0, end at 1, each starting where the previous
ended. Gaps, overlaps, empty or reversed intervals and bounds outside [0, 1] are rejected
with a :class:`~simpletasks.errors.ConfigError` that names them. A tier named ``trash``
means the image is recorded but stored nowhere.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simpletasks.errors import ConfigError

TRASH = "trash"

DEFAULT_POLICY: list[list[Any]] = [
    [0, 0.25, "D"],
    [0.25, 0.5, "C"],
    [0.5, 0.75, "B"],
    [0.75, 1, "A"],
]


@dataclass(frozen=True)
class Interval:
    """``lo <= score < hi`` (``<= hi`` for the top interval) is filed in ``tier``."""

    lo: float
    hi: float
    tier: str


class TierPolicy:
    """Maps a score in [0, 1] to a tier name.

    Args:
        intervals: ``[lo, hi, tier]`` triples (or :class:`Interval`), in any order.

    Raises:
        ConfigError: If they do not tile [0, 1] exactly (see the module docstring).
    """

    def __init__(self, intervals: Sequence[Sequence[Any] | Interval]) -> None:
        parsed = sorted((_parse(i, n) for n, i in enumerate(intervals)), key=lambda x: x.lo)
        if not parsed:
            raise ConfigError("policy: no intervals; need [lo, hi, tier] triples covering [0, 1]")
        if parsed[0].lo != 0:
            raise ConfigError(f"policy: scores below {parsed[0].lo:g} have no tier (gap from 0)")
        if parsed[-1].hi != 1:
            raise ConfigError(f"policy: scores above {parsed[-1].hi:g} have no tier (gap to 1)")
        for a, b in itertools.pairwise(parsed):
            if b.lo > a.hi:
                raise ConfigError(
                    f"policy: gap between {a.hi:g} and {b.lo:g} (after tier {a.tier!r})"
                )
            if b.lo < a.hi:
                raise ConfigError(
                    f"policy: intervals overlap: [{a.lo:g}, {a.hi:g}] {a.tier!r} and "
                    f"[{b.lo:g}, {b.hi:g}] {b.tier!r}"
                )
        self.intervals: tuple[Interval, ...] = tuple(parsed)
        self._starts = [i.lo for i in parsed]

    @property
    def tiers(self) -> list[str]:
        """The tier names, from the lowest interval up (each once)."""
        return list(dict.fromkeys(i.tier for i in self.intervals))

    @property
    def boundaries(self) -> list[float]:
        """The inner boundaries (for plots)."""
        return [i.lo for i in self.intervals[1:]]

    def tier_for(self, score: float) -> str:
        """Return the tier of ``score``.

        Raises:
            ValueError: If ``score`` is not a number in [0, 1].
        """
        if not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
            raise ValueError(f"score {score!r} is outside [0, 1]; the policy cannot place it")
        return self.intervals[bisect.bisect_right(self._starts, score) - 1].tier

    def to_list(self) -> list[list[Any]]:
        """The intervals as ``[lo, hi, tier]`` lists, lowest first."""
        return [[i.lo, i.hi, i.tier] for i in self.intervals]

    def __repr__(self) -> str:
        return f"TierPolicy({self.to_list()!r})"


def _parse(item: Sequence[Any] | Interval, n: int) -> Interval:
    if isinstance(item, Interval):
        lo, hi, tier = item.lo, item.hi, item.tier
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 3:
        lo, hi, tier = item
    else:
        raise ConfigError(f"policy[{n}]: expected [lo, hi, tier], got {item!r}")
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"policy[{n}]: {name} must be a number, got {v!r}")
        if not 0 <= v <= 1:
            raise ConfigError(f"policy[{n}]: {name}={v!r} is outside [0, 1]")
    if not lo < hi:
        raise ConfigError(f"policy[{n}]: empty or reversed interval [{lo!r}, {hi!r}]")
    if not isinstance(tier, str) or not tier.strip():
        raise ConfigError(f"policy[{n}]: tier must be a non-empty name, got {tier!r}")
    return Interval(float(lo), float(hi), tier)


__all__ = ["DEFAULT_POLICY", "TRASH", "Interval", "TierPolicy"]
