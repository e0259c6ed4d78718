"""Gateway sessions (what RESUME replays) and connections (one websocket each)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from aiohttp import web

from ._util import dumps

log = logging.getLogger(__name__)


class GatewayConnection:
    """One websocket. Frames go out in order through a queue drained by one writer task."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: GatewaySession | None = None
        self.closed_by_fake = False
        self.opened_mono = time.monotonic()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name="fake-discord-gateway-writer")

    def send(self, frame: dict[str, Any]) -> None:
        self.send_raw(dumps(frame))

    def send_raw(self, frame: str) -> None:
        self._queue.put_nowait(frame)

    async def _write(self) -> None:
        while True:
            frame = await self._queue.get()
            try:
                if frame is None:
                    return
                if not self.ws.closed:
                    await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("gateway frame not sent: %s", exc)
            finally:
                self._queue.task_done()

    async def flush(self, within: float = 2.0) -> None:
        """Waits (at most ``within`` seconds) until every queued frame was written."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), within)

    async def close(self, code: int, message: bytes = b"") -> None:
        self.closed_by_fake = True
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(self.ws.close(code=code, message=message), 5.0)

    async def stop(self) -> None:
        if self._writer is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), 1.0)
        except TimeoutError:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._writer = None

    @property
    def open(self) -> bool:
        return not self.ws.closed


class GatewaySession:
    """A gateway session: its intents, shard, sequence counter and the log RESUME replays."""

    def __init__(
        self,
        session_id: str,
        *,
        intents: int,
        shard: tuple[int, int],
        identify: dict[str, Any],
        max_events: int,
    ) -> None:
        self.id = session_id
        self.intents = intents
        self.shard = shard
        self.identify = identify
        self.seq = 0
        self.alive = True
        self.connection: GatewayConnection | None = None
        self.events: deque[tuple[int, str, str]] = deque(maxlen=max_events)  # (seq, t, frame)
        self.dispatched: list[tuple[float, str, int]] = []  # (monotonic, t, seq)

    def has(self, intent: int) -> bool:
        return bool(self.intents & intent)

    def covers_guild(self, guild_id: int | None) -> bool:
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % count == shard_id

    def dispatch(self, t: str, d: Any) -> int:
        self.seq += 1
        frame = dumps({"op": 0, "t": t, "s": self.seq, "d": d})
        self.events.append((self.seq, t, frame))
        self.dispatched.append((time.monotonic(), t, self.seq))
        if self.connection is not None and self.connection.open:
            self.connection.send_raw(frame)
        return self.seq

    def replay_after(self, seq: int) -> list[str] | None:
        """Frames after ``seq``, or None when the log no longer reaches back that far."""
        if self.events and self.events[0][0] > seq + 1:
            return None
        return [frame for s, _, frame in self.events if s > seq]
