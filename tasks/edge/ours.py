"""Our rules: ``splines`` (index interpolation with cutoff-aware search) and ``content``.

``splines`` keeps HASTE's idea (linear interpolation of measured scores over the index) and
changes what the CPU looks at and what the uplink gives up on:

1. **Search only where it can pay.** A file is worth searching (pre-processing to learn, not to
   exploit) only if it is far (``max_gap`` indices or more) from every measured or in-progress
   file *and* its optimistic estimate (estimate + slope x distance) reaches the cutoff: the
   score above which files will end up pre-processed. The cutoff is read from the lanes'
   progress: so far the CPU took ``P`` files and the uplink sent ``R`` raw, so about
   ``P / (P + R)`` of what waits will be pre-processed; the cutoff is that quantile of the
   estimates of the waiting files. Deep valleys are therefore not sampled again and again,
   which is where the published rules (every 5th pick, every block of 15) spend CPU for nothing.
2. **Climb**: otherwise, the waiting file with the highest estimate (HASTE's climb).
3. **Follow a rising trend at the frontier.** New arrivals beyond the last measured index get
   the trend of the last ``window`` indices if it rises (capped at the highest score seen),
   not the last value: the upload lane then keeps them for the CPU instead of sending them raw.
4. **Upload** processed files first, then the unprocessed file with the lowest estimate.
5. **End game** (:mod:`.endgame`): do not start a job the link would have to wait for unless
   the bytes it saves are worth the wait (the link's throughput is inferred from the lanes'
   reports, or given as ``bandwidth_mbps``/``cores``).

``content`` adds a cheap look at each image (:func:`.hint.quick_hint`): the estimate is a
linear fit of measured score on hint, blended with the ``splines`` estimate by how well the
hint explains the scores so far (R^2), so a useless hint falls back to ``splines``.
"""

from __future__ import annotations

import numpy as np

from .endgame import LaneRates, worth_starting
from .estimate import PRIOR
from .policy import FileState, Policy


class Splines(Policy):
    """Cutoff-aware search, climb on the estimate, lowest estimate uploaded raw first.

    Args:
        max_gap: a file this many indices or more from every measured/in-progress file may
            be searched.
        window: indices before the last measured one whose trend is followed at the frontier.
        kappa: weight of slope x distance in the optimistic estimate.
        gate: search only where the optimistic estimate reaches the cutoff (off = always
            search far files).
        end_game: skip a job the link would wait for when its saving is not worth the wait.
        bandwidth_mbps: the link's bandwidth (10^6 bytes/s) if the caller knows it; None =
            inferred from confirmed uploads (see :class:`.endgame.LaneRates`).
        cores: CPU workers if the caller knows it; None = the most jobs seen at once.
    """

    name = "splines"

    def __init__(
        self,
        *,
        max_gap: int = 12,
        window: int = 40,
        kappa: float = 1.0,
        gate: bool = True,
        end_game: bool = True,
        bandwidth_mbps: float | None = None,
        cores: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if bandwidth_mbps is not None and bandwidth_mbps <= 0:
            raise ValueError(f"bandwidth_mbps must be > 0, got {bandwidth_mbps}")
        if cores is not None and cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores}")
        self.max_gap = max_gap
        self.window = window
        self.kappa = kappa
        self.gate = gate
        self.end_game = end_game
        self._raw_uploads = 0
        self._rates = LaneRates(
            bandwidth=None if bandwidth_mbps is None else bandwidth_mbps * 1e6, cores=cores
        )

    def _index_estimate(self) -> np.ndarray:
        n = self._n
        known = self._known[:n]
        xs = np.flatnonzero(~np.isnan(known))
        if len(xs) == 0:
            return np.full(n, PRIOR)
        ys = np.maximum(known[xs], 0.0)  # a non-positive saving is a measured zero, not noise
        est = np.interp(np.arange(n), xs, ys)
        return follow_trend(est, xs, ys, self.window)

    def _refit(self) -> None:
        self._est = self._index_estimate()

    def _distance(self) -> np.ndarray:
        """Distance of every index to the nearest measured or in-progress index."""
        n = self._n
        idx = np.arange(n)
        marks = np.flatnonzero(
            ~np.isnan(self._known[:n]) | (self._state[:n] == FileState.PREPROCESSING)
        )
        if len(marks) == 0:
            return np.full(n, float(n))
        pos = np.searchsorted(marks, idx)
        left = np.where(pos > 0, idx - marks[np.maximum(pos - 1, 0)], n)
        right = np.where(pos < len(marks), marks[np.minimum(pos, len(marks) - 1)] - idx, n)
        return np.minimum(left, right).astype(float)

    def _slope(self) -> float:
        """Typical |score change| per index between measured files at least 2 apart."""
        known = self._known[: self._n]
        xs = np.flatnonzero(~np.isnan(known))
        if len(xs) < 3:
            return 0.0
        ys = np.maximum(known[xs], 0.0)
        dx = np.diff(xs)
        far = dx >= 2
        if far.sum() < 2:
            return float(np.std(ys)) / 10
        return float(np.median(np.abs(np.diff(ys))[far] / dx[far]))

    def _cutoff(self) -> float:
        """Score above which a waiting file will end up pre-processed (from P / (P + R))."""
        n = self._n
        states = self._state[:n]
        taken = int(np.count_nonzero(self._processed[:n])) + int(
            np.count_nonzero(states == FileState.PREPROCESSING)
        )
        frac = (taken + 1) / (taken + self._raw_uploads + 2)
        waiting = self._est[states == FileState.WAITING_UNPROCESSED]
        if len(waiting) == 0:
            return 0.0
        return float(np.quantile(waiting, 1 - frac))

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        index = self._choose_preprocess(candidates)
        if self.end_game and not self._worth_starting(index):
            return None
        running = int(np.count_nonzero(self._state[: self._n] == FileState.PREPROCESSING))
        self._rates.started(running + 1)
        return index

    def _worth_starting(self, index: int) -> bool:
        """The end-game check for ``index`` against what the link still has to send."""
        n = self._n
        states = self._state[:n]
        smaller = self._processed[:n] & (self._size_after[:n] < self._size[:n])
        sizes = np.where(smaller, self._size_after[:n], self._size[:n])
        waiting = (states == FileState.WAITING_PROCESSED) | (
            states == FileState.WAITING_UNPROCESSED
        )
        # an upload in flight is half done on average
        backlog = (
            sizes[waiting].sum() - sizes[index] + 0.5 * sizes[states == FileState.UPLOADING].sum()
        )
        return worth_starting(
            size=int(self._size[index]),
            score=float(self._est[index]),
            backlog_bytes=float(backlog),
            link_busy=bool((states == FileState.UPLOADING).any()),
            rates=self._rates,
        )

    def _choose_preprocess(self, candidates: np.ndarray) -> int:
        """Search a far file that may reach the cutoff, else climb."""
        dist = self._distance()[candidates]
        far = dist >= self.max_gap
        if far.any():
            optimistic = self._est[candidates] + self.kappa * self._slope() * dist
            if self.gate:
                far &= optimistic >= self._cutoff()
            if far.any():
                pool = np.flatnonzero(far)
                return int(candidates[pool[np.argmax(optimistic[pool])]])
        return int(candidates[np.argmax(self._est[candidates])])

    def _pick_upload(self, processed: np.ndarray, unprocessed: np.ndarray) -> int:
        if len(processed):
            return int(processed[0])
        self._raw_uploads += 1
        return int(unprocessed[np.argmin(self._est[unprocessed])])

    def preprocessed(self, index: int, size_after: int, cpu_seconds: float) -> None:
        """As :meth:`Policy.preprocessed`; also counts the CPU time for the end game."""
        with self._lock:
            super().preprocessed(index, size_after, cpu_seconds)
            self._rates.finished(int(self._size[index]), cpu_seconds)

    def uploaded(self, index: int) -> None:
        """As :meth:`Policy.uploaded`; also counts the bytes sent for the end game."""
        with self._lock:
            nbytes = self.upload_size(index)
            super().uploaded(index)
            self._rates.sent(nbytes)

    def upload_failed(self, index: int) -> None:
        """As :meth:`Policy.upload_failed`; a raw upload that failed does not count as sent."""
        with self._lock:
            was_raw = self._state[index] == FileState.UPLOADING and not self._processed[index]
            super().upload_failed(index)
            if was_raw:
                self._raw_uploads = max(0, self._raw_uploads - 1)


def follow_trend(est: np.ndarray, xs: np.ndarray, ys: np.ndarray, window: int) -> np.ndarray:
    """Beyond the last measured index, follow a rising trend of its last ``window`` indices.

    Args:
        est: the interpolated estimate (constant beyond ``xs[-1]``).
        xs: measured indices (sorted); ys: their scores.
        window: how far back from ``xs[-1]`` the trend is fitted (needs 3+ points).

    Returns:
        ``est`` with the indices after ``xs[-1]`` raised along the fitted line, between the
        last score and the highest score seen; unchanged if the trend is flat or falling.
    """
    last = xs[-1]
    sel = xs >= last - window
    if sel.sum() < 3 or last + 1 >= len(est):
        return est
    slope, icept = np.polyfit(xs[sel].astype(float), ys[sel], 1)
    if slope <= 0:
        return est
    out = est.copy()
    idx = np.arange(last + 1, len(est), dtype=float)
    out[last + 1 :] = np.clip(slope * idx + icept, ys[-1], max(ys.max(), ys[-1]))
    return out


class ContentPolicy(Splines):
    """Content-aware estimate: measured score ~ hint, blended with ``splines`` by R^2."""

    name = "content"

    def _refit(self) -> None:
        n = self._n
        index_est = self._index_estimate()
        hint = self._hint[:n]
        has = ~np.isnan(hint)
        known = self._known[:n]
        pairs = has & ~np.isnan(known)
        if not has.any():
            self._est = index_est
            return
        if pairs.sum() < 3 or np.ptp(hint[pairs]) == 0:
            # nothing to calibrate with yet: rank by the hint alone (a larger dark area
            # saves more), on the scale of the prior
            self._est = np.where(has, PRIOR + np.nan_to_num(hint), index_est)
            return
        x, y = hint[pairs], np.maximum(known[pairs], 0.0)
        a, b = np.polyfit(x, y, 1)
        resid = y - (a * x + b)
        r2 = 0.0 if np.var(y) == 0 else max(0.0, 1 - float(np.var(resid)) / float(np.var(y)))
        model = a * np.nan_to_num(hint) + b
        self._est = np.where(has, r2 * model + (1 - r2) * index_est, index_est)

    def _choose_preprocess(self, candidates: np.ndarray) -> int:
        if not np.isnan(self._hint[candidates]).all():
            return int(candidates[np.argmax(self._est[candidates])])
        return super()._choose_preprocess(candidates)
