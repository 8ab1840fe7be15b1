"""Our rules: ``splines`` (index interpolation, better search and timing) and ``content``.

Experimental version; see docs/edge-policy.md.
"""

from __future__ import annotations

import numpy as np

from .policy import FileState, Policy


def _window_fits(xs: np.ndarray, ys: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Least-squares line over the known points ``lo[k]..hi[k]`` (inclusive) for every k.

    Returns (slope, count); slope is 0 where fewer than 3 points.
    """
    cx = np.concatenate([[0.0], np.cumsum(xs)])
    cy = np.concatenate([[0.0], np.cumsum(ys)])
    cxx = np.concatenate([[0.0], np.cumsum(xs * xs)])
    cxy = np.concatenate([[0.0], np.cumsum(xs * ys)])
    m = (hi - lo + 1).astype(float)
    sx, sy = cx[hi + 1] - cx[lo], cy[hi + 1] - cy[lo]
    sxx, sxy = cxx[hi + 1] - cxx[lo], cxy[hi + 1] - cxy[lo]
    den = m * sxx - sx * sx
    ok = (m >= 3) & (den > 0)
    slope = np.zeros(len(xs))
    slope[ok] = (m[ok] * sxy[ok] - sx[ok] * sy[ok]) / den[ok]
    mean_y = np.where(m > 0, sy / np.maximum(m, 1), 0.0)
    mean_x = np.where(m > 0, sx / np.maximum(m, 1), 0.0)
    return slope, mean_x, mean_y


def trend_estimate(known: np.ndarray, n: int, window: int = 20) -> np.ndarray:
    """Interpolation, raised in a gap where the trend fitted on either side points higher.

    A sawtooth ramp that rises towards an unmeasured gap (and drops somewhere inside it) is
    underestimated by straight interpolation; the fitted trend of the last ``window`` indices
    before the gap (or the first after it, read backwards) says how high the gap may go.
    """
    known = known[:n]
    xs = np.flatnonzero(~np.isnan(known))
    if len(xs) == 0:
        return np.ones(n)
    ys = np.maximum(known[xs], 0.0)
    idx = np.arange(n, dtype=float)
    est = np.interp(idx, xs.astype(float), ys)
    if len(xs) < 3:
        return est
    xf = xs.astype(float)
    k = np.arange(len(xs))
    lo = np.searchsorted(xs, xs - window, side="left")
    s_left, mx_l, my_l = _window_fits(xf, ys, lo, k)
    hi = np.searchsorted(xs, xs + window, side="right") - 1
    s_right, mx_r, my_r = _window_fits(xf, ys, k, hi)
    pos = np.searchsorted(xs, idx)  # xs[pos-1] < i <= xs[pos]
    a = np.clip(pos - 1, 0, len(xs) - 1)
    b = np.clip(pos, 0, len(xs) - 1)
    cap = ys.max()
    rise = (pos > 0) & (s_left[a] > 0)
    up_l = np.where(rise, my_l[a] + s_left[a] * (idx - mx_l[a]), 0.0)
    fall = (pos < len(xs)) & (s_right[b] < 0)
    up_r = np.where(fall, my_r[b] + s_right[b] * (idx - mx_r[b]), 0.0)
    return np.maximum(est, np.minimum(np.maximum(up_l, up_r), cap))


class Splines(Policy):
    """Trend-aware interpolation; gap search; climb; upload the lowest first."""

    name = "splines"

    def __init__(self, *, max_gap: int = 24, window: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_gap = max_gap
        self.window = window

    def _refit(self) -> None:
        self._est = trend_estimate(self._known, self._n, self.window)

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        n = self._n
        marks = np.flatnonzero(
            ~np.isnan(self._known[:n]) | (self._state[:n] == FileState.PREPROCESSING)
        )
        far = _farthest(candidates, marks, self.max_gap if len(marks) >= 2 else 0)
        if far is not None:
            return far
        return int(candidates[np.argmax(self._est[candidates])])


def _farthest(candidates: np.ndarray, marks: np.ndarray, min_gap: int) -> int | None:
    if len(marks) == 0:
        return int(candidates[0])
    pos = np.searchsorted(marks, candidates)
    left = np.where(pos > 0, candidates - marks[np.maximum(pos - 1, 0)], 10**9)
    right = np.where(pos < len(marks), marks[np.minimum(pos, len(marks) - 1)] - candidates, 10**9)
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
