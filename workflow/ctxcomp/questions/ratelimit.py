"""A thread-safe requests-per-minute limiter shared by all worker threads.

Requests are spaced evenly (one every 60/rpm seconds) rather than allowed in bursts: a burst of `concurrency`
reasoning requests at start-up is exactly what trips provider rate limits.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, requests_per_minute: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self) -> None:
        """Block until this caller's slot; slots are reserved under the lock, the waiting happens outside it."""
        if self.interval <= 0:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
