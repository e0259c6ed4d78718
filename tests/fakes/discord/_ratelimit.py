"""Fixed-window rate-limit buckets, as Discord runs them.

A window opens with the first request after the previous window closed and lasts ``period``
seconds; at most ``limit`` requests pass in it. ``reset_after`` is the time left in the window,
which is what Discord sends as ``X-RateLimit-Reset-After``. ``_RateLimits`` picks the
bucket of each request and answers 429 as Discord does when it is spent.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._util import json_reply
from .config import FakeDiscordConfig
from .model import RequestRecord


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


# The routes that write a message: sends, edits, interaction responses and webhook messages.
MESSAGE_WRITES = frozenset(
    {
        "POST /channels/{channel_id}/messages",
        "PATCH /channels/{channel_id}/messages/{message_id}",
        "POST /interactions/{interaction_id}/{token}/callback",
        "POST /webhooks/{application_id}/{token}",
        "PATCH /webhooks/{application_id}/{token}/messages/{message_id}",
    }
)


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


class _RateLimits:
    """The global, per-route and shared per-channel windows of bot requests, and the
    per-token window of interaction webhooks."""

    # The part of _State this uses, declared rather than inherited: _State makes its
    # RateLimiter from this module.
    config: FakeDiscordConfig
    rate_limited_count: int
    write_faults: Counter[str]
    _limiter: RateLimiter
    _write_fault_rng: random.Random

    def _too_many(
        self,
        record: RequestRecord,
        retry_after: float,
        *,
        is_global: bool,
        scope: str,
        headers: dict[str, str],
        injected: bool = False,
    ) -> web.Response:
        retry_after = max(0.001, math.ceil(retry_after * 1000) / 1000)
        body: dict[str, Any] = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        if is_global:
            body["code"] = 0
        headers = dict(headers)
        headers.update(
            {
                "Via": "1.1 google",
                "Retry-After": str(math.ceil(retry_after)),
                "X-RateLimit-Scope": scope,
            }
        )
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        record.rate_limited = True
        record.scope = scope
        if not injected:  # the count is of the limits the bot ran into itself
            self.rate_limited_count += 1
        return json_reply(body, 429, headers)

    def _write_fault(self, record: RequestRecord) -> web.Response | None:
        """A failure injected into a message write (``write_fault_rate``), or None."""
        if self.config.write_fault_rate <= 0 or record.route not in MESSAGE_WRITES:
            return None
        rng = self._write_fault_rng
        if rng.random() >= self.config.write_fault_rate:
            return None
        if rng.random() < 0.5:
            self.write_faults["429"] += 1
            # A shared limit: Discord sends no bucket headers with it, only the scope.
            retry_after = round(rng.uniform(0.1, 1.0), 3)
            return self._too_many(
                record, retry_after, is_global=False, scope="shared", headers={}, injected=True
            )
        self.write_faults["500"] += 1
        return json_reply({"message": "500: Internal Server Error", "code": 0}, 500)

    def _limit_bot(
        self, request: web.Request, record: RequestRecord, headers: dict[str, str]
    ) -> web.Response | None:
        cfg = self.config
        now = time.monotonic()
        glob = self._limiter.window("global", cfg.global_limit, cfg.global_window)
        if not glob.try_take(now):
            return self._too_many(
                record, glob.reset_after(now), is_global=True, scope="global", headers={}
            )
        info = request.match_info
        route = record.route
        channel_id = info.get("channel_id")
        major = channel_id or info.get("guild_id") or ""
        shared: Window | None = None
        if route == "POST /channels/{channel_id}/messages":
            name, limit, period = "send", cfg.send_limit, cfg.send_window
            shared = self._limiter.window(
                f"channel:{channel_id}", cfg.channel_message_limit, cfg.channel_message_window
            )
        elif route == "PATCH /channels/{channel_id}/messages/{message_id}":
            name, limit, period = "edit", cfg.edit_limit, cfg.edit_window
            shared = self._limiter.window(
                f"channel:{channel_id}", cfg.channel_message_limit, cfg.channel_message_window
            )
        elif route == "DELETE /channels/{channel_id}/messages/{message_id}":
            name, limit, period = "delete", cfg.delete_limit, cfg.delete_window
        else:
            name, limit, period = route, cfg.default_route_limit, cfg.default_route_window
        bucket = bucket_hash(name)
        record.bucket = f"{bucket}:{major}" if major else bucket
        window = self._limiter.window(f"{name}:{major}", limit, period)
        if not window.try_take(now):
            return self._too_many(
                record,
                window.reset_after(now),
                is_global=False,
                scope="user",
                headers=ratelimit_headers(window, bucket, now),
            )
        if shared is not None and not shared.try_take(now):
            window.give_back()
            return self._too_many(
                record,
                shared.reset_after(now),
                is_global=False,
                scope="user",
                headers=ratelimit_headers(window, bucket, now),
            )
        headers.update(ratelimit_headers(window, bucket, now))
        return None

    def _limit_webhook(
        self, request: web.Request, record: RequestRecord, headers: dict[str, str]
    ) -> web.Response | None:
        token = request.match_info.get("token")
        if token is None:
            return None
        cfg = self.config
        now = time.monotonic()
        bucket = bucket_hash("interaction-token")
        record.bucket = f"{bucket}:{token[:24]}"
        window = self._limiter.window(
            f"token:{token}", cfg.interaction_limit, cfg.interaction_window
        )
        if not window.try_take(now):
            return self._too_many(
                record,
                window.reset_after(now),
                is_global=False,
                scope="user",
                headers=ratelimit_headers(window, bucket, now),
            )
        headers.update(ratelimit_headers(window, bucket, now))
        return None
