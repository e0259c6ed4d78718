"""Retry with full-jitter exponential backoff, for failures that can succeed on a second try."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.ai.errors import ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` counts the first try; `total_time` bounds the time spent before a new try."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    total_time: float = 30.0

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number `retry` (0-based): uniform in [0, min(max, base * 2^n)]."""
        return min(self.max_delay, self.base_delay * 2.0**retry) * rand()


NO_RETRY = RetryPolicy(attempts=1)


async def with_retry(
    policy: RetryPolicy,
    call: Callable[[], Awaitable[T]],
    *,
    what: str = "request",
    rand: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `call`, trying again on retryable ApiErrors while attempts and time allow."""
    started = clock()
    attempt = 1
    while True:
        try:
            return await call()
        except ApiError as err:
            if not err.can_retry or attempt >= policy.attempts:
                raise
            delay = policy.backoff(attempt - 1, rand)
            if clock() - started + delay > policy.total_time:
                raise
            log.info(
                "%s failed (%s, trace_id=%s); retry %d of %d in %.2f s: %s",
                what,
                type(err).__name__,
                err.trace_id,
                attempt,
                policy.attempts - 1,
                delay,
                err,
            )
            await asyncio.sleep(delay)
            attempt += 1
