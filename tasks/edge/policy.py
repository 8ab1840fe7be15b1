"""The edge scheduling policy: which file to pre-process next, which to upload next.

One :class:`Policy` object holds the state of every arrival index and serves two views over it:
:meth:`Policy.next_preprocess` for the CPU lane and :meth:`Policy.next_upload` for the upload lane.
Both lanes call it from their own threads (an internal lock guards every method); the simulator
calls the same object on a virtual clock. See docs/edge-policy.md for the rules and their
measurement.

Published HASTE rules (HASTE.md): ``splines-random`` (the paper run), ``splines-block``,
``natural``, ``random``, ``oracle`` and ``upload-only``. Ours: ``splines`` (the default) and
``content`` (uses a cheap per-image ``hint``), in :mod:`.ours`.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence

import numpy as np

from .estimate import interpolate, score

_ABSENT = -1


class FileState(enum.IntEnum):
    """State of one arrival index."""

    WAITING_UNPROCESSED = 0
    PREPROCESSING = 1
    WAITING_PROCESSED = 2
    UPLOADING = 3
    UPLOADED = 4


class InvalidTransition(ValueError):
    """A lane reported something impossible for the file's state (a bug in the caller)."""


class Policy:
    """Shared state plus the two choices; subclasses override :meth:`_pick_preprocess`/upload.

    Args:
        seed: seeds the policy's own random generator (ties and random picks).
        oracle_scores: true score by index, for the ``oracle`` policy and for measurement.
    """

    name = "base"

    def __init__(self, *, seed: int = 0, oracle_scores: Sequence[float] | None = None) -> None:
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(seed)
        self._oracle = None if oracle_scores is None else np.asarray(oracle_scores, dtype=float)
        self._n = 0  # 1 + highest index added
        cap = 64
        self._state = np.full(cap, _ABSENT, dtype=np.int8)
        self._size = np.zeros(cap, dtype=np.int64)
        self._size_after = np.zeros(cap, dtype=np.int64)
        self._known = np.full(cap, np.nan)
        self._hint = np.full(cap, np.nan)
        self._cpu = np.full(cap, np.nan)
        self._no_pre = np.zeros(cap, dtype=bool)  # pre-processing failed: never offer again
        self._processed = np.zeros(cap, dtype=bool)
        self._est = np.ones(0)
        self._stale = False  # the estimate needs a refit (done lazily, before the next pick)

    # ----------------------------------------------------------------- lanes' API
    def add(self, index: int, size_bytes: int, hint: float | None = None) -> None:
        """A file arrived; ``index`` is its arrival order from 0 (each index once)."""
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
        with self._lock:
            self._grow(index + 1)
            if self._state[index] != _ABSENT:
                raise ValueError(f"index {index} was already added")
            self._state[index] = FileState.WAITING_UNPROCESSED
            self._size[index] = size_bytes
            if hint is not None:
                self._hint[index] = float(hint)
            self._n = max(self._n, index + 1)
            self._stale = True

    def next_preprocess(self) -> int | None:
        """Choose a file to pre-process and mark it PREPROCESSING; None if none (or not now)."""
        with self._lock:
            self._fresh()
            candidates = np.flatnonzero(
                (self._state[: self._n] == FileState.WAITING_UNPROCESSED) & ~self._no_pre[: self._n]
            )
            if len(candidates) == 0:
                return None
            index = self._pick_preprocess(candidates)
            if index is not None:
                self._state[index] = FileState.PREPROCESSING
            return None if index is None else int(index)

    def next_upload(self) -> int | None:
        """Choose a file to upload and mark it UPLOADING; None if nothing waits."""
        with self._lock:
            self._fresh()
            states = self._state[: self._n]
            processed = np.flatnonzero(states == FileState.WAITING_PROCESSED)
            unprocessed = np.flatnonzero(states == FileState.WAITING_UNPROCESSED)
            if len(processed) == 0 and len(unprocessed) == 0:
                return None
            index = int(self._pick_upload(processed, unprocessed))
            self._state[index] = FileState.UPLOADING
            return index

    def preprocessed(self, index: int, size_after: int, cpu_seconds: float) -> None:
        """Pre-processing finished: record the score and make the file wait for upload."""
        if cpu_seconds < 0 or size_after < 0:
            raise ValueError(f"bad measurement: size_after={size_after} cpu={cpu_seconds}")
        with self._lock:
            self._expect(index, FileState.PREPROCESSING)
            self._known[index] = score(int(self._size[index]), size_after, cpu_seconds)
            self._size_after[index] = size_after
            self._cpu[index] = cpu_seconds
            self._processed[index] = True
            self._state[index] = FileState.WAITING_PROCESSED
            self._stale = True

    def preprocess_failed(self, index: int) -> None:
        """Pre-processing failed: the original waits for upload; never offered again."""
        with self._lock:
            self._expect(index, FileState.PREPROCESSING)
            self._no_pre[index] = True
            self._state[index] = FileState.WAITING_UNPROCESSED

    def uploaded(self, index: int) -> None:
        """The upload is confirmed."""
        with self._lock:
            self._expect(index, FileState.UPLOADING)
            self._state[index] = FileState.UPLOADED

    def upload_failed(self, index: int) -> None:
        """The upload failed: back to the waiting state it came from."""
        with self._lock:
            self._expect(index, FileState.UPLOADING)
            self._state[index] = (
                FileState.WAITING_PROCESSED
                if self._processed[index]
                else FileState.WAITING_UNPROCESSED
            )

    def use_processed(self, index: int) -> bool:
        """Whether the uploader should send the processed file (it exists and is smaller)."""
        with self._lock:
            self._check(index)
            return bool(self._processed[index] and self._size_after[index] < self._size[index])

    def upload_size(self, index: int) -> int:
        """Bytes the uploader sends for ``index`` (processed size if :meth:`use_processed`)."""
        with self._lock:
            use = self.use_processed(index)
            return int(self._size_after[index] if use else self._size[index])

    def state(self, index: int) -> FileState:
        """The state of ``index`` (KeyError if it never arrived)."""
        with self._lock:
            self._check(index)
            return FileState(int(self._state[index]))

    def estimates(self) -> list[float]:
        """Current estimate by index (for plots)."""
        with self._lock:
            self._fresh()
            return [float(x) for x in self._est[: self._n]]

    def known(self) -> list[float | None]:
        """Measured score by index, None where not measured (for plots)."""
        with self._lock:
            return [None if np.isnan(x) else float(x) for x in self._known[: self._n]]

    def counts(self) -> dict[str, int]:
        """Number of files per state name."""
        with self._lock:
            states = self._state[: self._n]
            return {s.name: int(np.count_nonzero(states == s)) for s in FileState}

    def __len__(self) -> int:
        with self._lock:
            return int(np.count_nonzero(self._state[: self._n] != _ABSENT))

    # ----------------------------------------------------------------- rules (override)
    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        """Which of ``candidates`` (waiting unprocessed, eligible) to pre-process, or None."""
        raise NotImplementedError

    def _pick_upload(self, processed: np.ndarray, unprocessed: np.ndarray) -> int:
        """HASTE: a waiting processed file (lowest index), else the lowest estimate."""
        if len(processed):
            return int(processed[0])
        return int(unprocessed[np.argmin(self._est[unprocessed])])

    def _fresh(self) -> None:
        if self._stale or len(self._est) != self._n:
            self._refit()
            self._stale = False

    def _refit(self) -> None:
        """Recompute ``self._est`` (after an arrival or a measurement)."""
        self._est = interpolate(self._known, self._n)

    # ----------------------------------------------------------------- helpers
    def _max_random(self, values: np.ndarray, candidates: np.ndarray) -> int:
        """A uniformly random candidate among those with the maximum value."""
        best = candidates[values == values.max()]
        return int(best[self._rng.integers(len(best))])

    def _grow(self, n: int) -> None:
        cap = len(self._state)
        if n <= cap:
            return
        new = max(n, 2 * cap)
        fills = {"_state": _ABSENT, "_known": np.nan, "_hint": np.nan, "_cpu": np.nan}
        for attr in (
            "_state",
            "_size",
            "_size_after",
            "_known",
            "_hint",
            "_cpu",
            "_no_pre",
            "_processed",
        ):
            old = getattr(self, attr)
            arr = np.full(new, fills.get(attr, 0), dtype=old.dtype)
            arr[:cap] = old
            setattr(self, attr, arr)

    def _check(self, index: int) -> None:
        if not 0 <= index < self._n or self._state[index] == _ABSENT:
            raise KeyError(f"index {index} never arrived")

    def _expect(self, index: int, state: FileState) -> None:
        self._check(index)
        if self._state[index] != state:
            now = FileState(int(self._state[index])).name
            raise InvalidTransition(f"index {index} is {now}, expected {state.name}")


class SplinesRandom(Policy):
    """The paper run: every 5th pick a uniform random file (search), else climb.

    Climb = a random file among those with the maximum estimate.
    """

    name = "splines-random"
    search_every = 5

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._picks = 0

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        self._picks += 1
        if self._picks % self.search_every == 0:
            return int(candidates[self._rng.integers(len(candidates))])
        return self._max_random(self._est[candidates], candidates)


class SplinesBlock(Policy):
    """The later block rule: search blocks of 15 arrivals, then climb on the estimate.

    Search: the first block with an unprocessed file, no known score and nothing in progress
    gives its first unprocessed file. Climb: the unprocessed file with the highest estimate.
    """

    name = "splines-block"
    block = 15

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        eligible = np.zeros(self._n, dtype=bool)
        eligible[candidates] = True
        for start in range(0, self._n, self.block):
            sl = slice(start, min(start + self.block, self._n))
            if (
                eligible[sl].any()
                and np.isnan(self._known[sl]).all()
                and not (self._state[sl] == FileState.PREPROCESSING).any()
            ):
                return start + int(np.argmax(eligible[sl]))
        return int(candidates[np.argmax(self._est[candidates])])


class Natural(Policy):
    """Pre-process the lowest index first."""

    name = "natural"

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        return int(candidates[0])


class RandomPolicy(Policy):
    """No prioritisation: both choices uniformly random (the paper's baseline)."""

    name = "random"

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        return int(candidates[self._rng.integers(len(candidates))])

    def _pick_upload(self, processed: np.ndarray, unprocessed: np.ndarray) -> int:
        waiting = np.concatenate([processed, unprocessed])
        return int(waiting[self._rng.integers(len(waiting))])


class Oracle(Policy):
    """Climb on the true score (needs ``oracle_scores``); uploads the lowest true score first."""

    name = "oracle"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self._oracle is None:
            raise ValueError("the oracle policy needs oracle_scores")
        self._scores: np.ndarray = self._oracle

    def _true(self, indices: np.ndarray) -> np.ndarray:
        out = np.full(len(indices), -np.inf)
        ok = indices < len(self._scores)
        out[ok] = self._scores[indices[ok]]
        return out

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        return int(candidates[np.argmax(self._true(candidates))])

    def _refit(self) -> None:
        est = np.zeros(self._n)
        m = min(self._n, len(self._scores))
        est[:m] = self._scores[:m]
        self._est = est


class UploadOnly(Policy):
    """Never pre-processes."""

    name = "upload-only"

    def _pick_preprocess(self, candidates: np.ndarray) -> int | None:
        return None


def _registry() -> dict[str, Callable[..., Policy]]:
    from .ours import ContentPolicy, Splines

    classes = (
        Splines,
        ContentPolicy,
        SplinesRandom,
        SplinesBlock,
        Natural,
        RandomPolicy,
        Oracle,
        UploadOnly,
    )
    return {cls.name: cls for cls in classes}


def policy_names() -> list[str]:
    """Every policy name :func:`make_policy` accepts (``splines`` first: the default)."""
    return list(_registry())


def make_policy(
    name: str = "splines",
    *,
    seed: int = 0,
    oracle_scores: Sequence[float] | None = None,
    **options: object,
) -> Policy:
    """A fresh policy by name.

    Args:
        name: one of :func:`policy_names`.
        seed: seeds random picks and ties.
        oracle_scores: true score per index (required by ``oracle``; ignored by the others).
        **options: rule-specific tuning passed to the class (see :mod:`.ours`).

    Raises:
        ValueError: unknown name, or ``oracle`` without scores.
    """
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(registry)}")
    return registry[name](seed=seed, oracle_scores=oracle_scores, **options)
