"""Our rules: ``splines`` (index interpolation, better search and timing) and ``content``.

Placeholder first version; see docs/edge-policy.md.
"""

from __future__ import annotations

import numpy as np

from .policy import FileState, Policy


class Splines(Policy):
    """Gap search + climb on the HASTE interpolation."""

    name = "splines"

    def __init__(self, *, max_gap: int = 12, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_gap = max_gap

    def _explored(self) -> np.ndarray:
        states = self._state[: self._n]
        return ~np.isnan(self._known[: self._n]) | (states == FileState.PREPROCESSING)

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        explored = np.flatnonzero(self._explored())
        if len(explored) < 4:
            # spread the first samples: farthest from anything explored
            return self._farthest(candidates, explored)
        far = self._farthest(candidates, explored, min_gap=self.max_gap)
        if far is not None:
            return far
        return int(candidates[np.argmax(self._est[candidates])])

    def _farthest(self, candidates, explored, min_gap: int = 0) -> int | None:
        if len(explored) == 0:
            return int(candidates[len(candidates) // 2])
        pos = np.searchsorted(explored, candidates)
        left = np.where(pos > 0, candidates - explored[np.maximum(pos - 1, 0)], 10**9)
        right = np.where(
            pos < len(explored), explored[np.minimum(pos, len(explored) - 1)] - candidates, 10**9
        )
        dist = np.minimum(left, right)
        best = int(np.argmax(dist))
        if dist[best] < min_gap:
            return None
        return int(candidates[best])


class ContentPolicy(Splines):
    """Content-aware: estimate from the per-image hint, calibrated on measured scores."""

    name = "content"

    def _refit(self) -> None:
        super()._refit()
        hint = self._hint[: self._n]
        has = ~np.isnan(hint)
        if not has.any():
            return
        known = self._known[: self._n]
        pairs = has & ~np.isnan(known)
        if pairs.sum() >= 3 and np.ptp(hint[pairs]) > 0:
            a, b = np.polyfit(hint[pairs], known[pairs], 1)
        else:
            a, b = 1.0, 0.0
        self._est = np.where(has, a * np.nan_to_num(hint) + b, self._est)

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        return int(candidates[np.argmax(self._est[candidates])])
