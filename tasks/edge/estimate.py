"""The published HASTE estimate: linear interpolation of measured scores over the arrival index.

A score is bytes saved per CPU-second. Only positive scores enter the estimate; until more than
:data:`MIN_KNOWN` of them are known every estimate is :data:`PRIOR`. Beyond the first and last
known index the estimate is constant (the first or last known score).
"""

from __future__ import annotations

import numpy as np

PRIOR = 1.0
MIN_KNOWN = 3  # the estimate is fitted once MORE than this many positive scores are known


def interpolate(known: np.ndarray, n: int) -> np.ndarray:
    """Estimates for indices ``0..n-1`` from ``known`` (NaN = unknown), as HASTE computed them.

    Args:
        known: measured scores by index (NaN where unknown); may be shorter or longer than ``n``.
        n: how many estimates to return.

    Returns:
        A float array of length ``n``: :data:`PRIOR` everywhere while ``MIN_KNOWN`` or fewer
        positive scores are known, otherwise ``np.interp`` over the positive scores.
    """
    known = known[:n]
    xs = np.flatnonzero(known > 0)  # NaN compares False: unknown and non-positive drop out
    if len(xs) <= MIN_KNOWN:
        return np.full(n, PRIOR)
    return np.interp(np.arange(n, dtype=float), xs.astype(float), known[xs])


def score(size_before: int, size_after: int, cpu_seconds: float) -> float:
    """Bytes saved per CPU-second (negative when the processed file is bigger)."""
    return (size_before - size_after) / max(cpu_seconds, 1e-9)
