"""A sliding one-second window message limiter (data channels and WebSockets share it)."""

from __future__ import annotations

import collections
import time


class RateLimiter:
    """Allows at most ``per_second`` events in any one-second window."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be > 0")
        self.per_second = per_second
        self._times: collections.deque[float] = collections.deque()

    def allow(self, now: float | None = None) -> bool:
        """Record one event at ``now`` (monotonic seconds); False when it exceeds the limit."""
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] >= 1.0:
            self._times.popleft()
        self._times.append(now)
        return len(self._times) <= self.per_second


class Gate:
    """At most ``limit`` holders at once; :meth:`enter` never waits (the caller answers 503)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.active = 0

    def enter(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1
