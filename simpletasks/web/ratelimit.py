"""A per-client sliding-window rate limit, in memory (one service process)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """Allows at most ``limit`` events per ``window`` seconds for each client key.

    Args:
        limit: Events allowed per window (0 disables the limit).
        window: Window length in seconds.
        clock: Monotonic clock (for tests).
    """

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._events: dict[str, deque[float]] = {}

    def allow(self, client: str) -> bool:
        """Record an event for ``client``; return whether it is within the limit."""
        if self.limit <= 0:
            return True
        now = self._clock()
        with self._lock:
            if len(self._events) > 50_000:  # drop idle clients
                self._events = {
                    k: v for k, v in self._events.items() if v and v[-1] > now - self.window
                }
            events = self._events.setdefault(client, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (at least 1)."""
        with self._lock:
            events = self._events.get(client)
            if not events:
                return 1
            return max(1, int(events[0] + self.window - self._clock()) + 1)
