"""Fixed-window rate-limit buckets, as Discord runs them.

A window opens with the first request after the previous window closed and lasts ``period``
seconds; at most ``limit`` requests pass in it. ``reset_after`` is the time left in the window,
which is what Discord sends as ``X-RateLimit-Reset-After``.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass


@dataclass
class Window:
    limit: int
    period: float
    start: float | None = None
    count: int = 0
    denied: int = 0

    def _roll(self, now: float) -> None:
        if self.start is None or now >= self.start + self.period:
            self.start = now
            self.count = 0

    def try_take(self, now: float) -> bool:
        self._roll(now)
        if self.count >= self.limit:
            self.denied += 1
            return False
        self.count += 1
        return True

    def give_back(self) -> None:
        self.count = max(0, self.count - 1)

    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    def reset_after(self, now: float) -> float:
        if self.start is None:
            return self.period
        return max(0.0, self.start + self.period - now)


def bucket_hash(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:32]


class RateLimiter:
    """All windows of one fake, keyed by bucket name plus major parameters."""

    def __init__(self) -> None:
        self._windows: dict[str, Window] = {}

    def window(self, key: str, limit: int, period: float) -> Window:
        window = self._windows.get(key)
        if window is None or window.limit != limit or window.period != period:
            window = self._windows[key] = Window(limit, period)
        return window

    def reset(self) -> None:
        self._windows.clear()


def ratelimit_headers(
    window: Window, bucket: str, now: float, *, scope: str | None = None
) -> dict[str, str]:
    # Round Reset-After *up* to the millisecond, as Discord does, so a client that waits
    # exactly that long finds the window closed.
    reset_after = math.ceil(window.reset_after(now) * 1000) / 1000
    headers = {
        "X-RateLimit-Bucket": bucket,
        "X-RateLimit-Limit": str(window.limit),
        "X-RateLimit-Remaining": str(window.remaining()),
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
    }
    if scope is not None:
        headers["X-RateLimit-Scope"] = scope
    return headers
