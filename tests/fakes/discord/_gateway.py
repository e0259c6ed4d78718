"""The gateway: sessions (what RESUME replays), connections (one websocket each), and the
handshake a client goes through (HELLO, IDENTIFY or RESUME, READY and the guilds), with the
REST routes that tell a client who it is and where the gateway is."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from ._guilds import _Guilds
from ._util import ApplicationFlag, Intents, dumps, json_reply, shard_of

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
        return shard_of(guild_id, count) == shard_id

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


class _Gateway(_Guilds):
    """The websocket endpoint and what it answers; drops for tests."""

    # -----------------------------------------------------------------------------------------
    # Gateway
    # -----------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = GatewayConnection(ws)
        conn.start()
        self.connections.add(conn)
        conn.send(
            {
                "op": 10,
                "d": {"heartbeat_interval": self.config.heartbeat_interval_ms},
                "s": None,
                "t": None,
            }
        )
        self._changed()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._gateway_frame(conn, json.loads(msg.data))
                elif msg.type == WSMsgType.BINARY:
                    await self._gateway_frame(conn, json.loads(msg.data.decode()))
        finally:
            session = conn.session
            if session is not None and session.connection is conn:
                session.connection = None
                # A client that closes with 1000/1001 ends its session (Discord invalidates it).
                if not conn.closed_by_fake and ws.close_code in (1000, 1001):
                    session.alive = False
            self.connections.discard(conn)
            await conn.stop()
            self._changed()
        return ws

    async def _gateway_frame(self, conn: GatewayConnection, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        data = frame.get("d")
        if op == 1:
            conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2 and isinstance(data, dict):
            await self._identify(conn, data)
        elif op == 6 and isinstance(data, dict):
            await self._resume(conn, data)
        elif op == 8 and isinstance(data, dict):
            self._request_members(conn, data)

    async def _identify(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        if data.get("token") != self.config.token:
            await conn.close(4004, b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & Intents.PRIVILEGED & ~self.config.allowed_privileged_intents:
            await conn.close(4014, b"Disallowed intent(s).")
            return
        shard = _shard_pair(data.get("shard", [0, 1]))
        if shard is None:
            await conn.close(4010, b"Invalid shard.")
            return
        guilds = [g for g in self.guilds.values() if shard_of(g.id, shard[1]) == shard[0]]
        if len(guilds) > self.config.max_guilds_per_shard:
            await conn.close(4011, b"Sharding required.")
            return
        session = GatewaySession(
            uuid.uuid4().hex,
            intents=intents,
            shard=shard,
            identify=data,
            max_events=self.config.max_recorded_events,
        )
        if conn.session is not None:
            conn.session.connection = None
        conn.session = session
        session.connection = conn
        self.sessions[session.id] = session
        self.identify_count += 1
        self.identify_payloads.append(data)
        session.dispatch(
            "READY",
            {
                "v": 10,
                "user": {
                    **self.bot_user.payload(),
                    "verified": True,
                    "mfa_enabled": False,
                    "flags": 0,
                },
                "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "shard": [session.shard[0], session.shard[1]],
                "application": {"id": str(self.application_id), "flags": self._application_flags()},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "geo_ordered_rtc_regions": [],
                "_trace": ["fake-discord"],
            },
        )
        # GUILD_CREATE for every unavailable guild right away, so READY's wait ends soon.
        for guild in guilds:
            session.dispatch("GUILD_CREATE", self._guild_payload(guild, session))
        self._changed()

    async def _resume(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        frames = None
        if session is not None and session.alive and data.get("token") == self.config.token:
            frames = session.replay_after(int(data.get("seq") or 0))
        if session is None or frames is None:
            conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        old = session.connection
        if old is not None and old is not conn:
            old.session = None
            session.connection = None
            await old.close(4000)
        for frame in frames:
            conn.send_raw(frame)
        conn.session = session
        session.connection = conn
        session.dispatch("RESUMED", {"_trace": ["fake-discord"]})
        self.resume_count += 1
        self._changed()

    def _request_members(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        session = conn.session
        guild = self.guilds.get(int(data.get("guild_id", 0)))
        if session is None or guild is None:
            return
        members = list(guild.members.values())
        query = data.get("query")
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            members = [m for m in members if m.user.id in wanted]
        elif query:
            members = [m for m in members if m.user.name.lower().startswith(str(query).lower())]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        payload: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            payload["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", payload)

    async def drop_gateway(self, code: int = 4000, *, resumable: bool = True) -> None:
        """Drops every gateway connection. With ``resumable`` the socket is closed with
        ``code`` (4000 = unknown error, which clients resume); otherwise the session is
        invalidated (op 9) so the client must IDENTIFY again."""
        for conn in list(self.connections):
            if not resumable:
                if conn.session is not None:
                    conn.session.alive = False
                conn.send({"op": 9, "d": False, "s": None, "t": None})
                await conn.flush()
            else:
                await conn.close(code)
        self._changed()

    def shards_told(self, event: str, object_id: int) -> list[tuple[int, int]]:
        """The shards (``(shard_id, num_shards)``) of the sessions that were sent ``event``
        about the message, interaction or guild ``object_id``."""
        told = []
        for session in self.sessions.values():
            for _, t, frame in session.events:
                if t == event and json.loads(frame)["d"].get("id") == str(object_id):
                    told.append(session.shard)
                    break
        return told

    @property
    def gateway_connected(self) -> bool:
        return any(c.session is not None and c.open for c in self.connections)

    # -----------------------------------------------------------------------------------------
    # REST: the bot, its application, the gateway's address
    # -----------------------------------------------------------------------------------------

    async def _get_me(self, request: web.Request) -> web.StreamResponse:
        return json_reply(
            {
                **self.bot_user.payload(),
                "verified": True,
                "mfa_enabled": False,
                "flags": 0,
                "locale": "en-US",
                "email": None,
            }
        )

    def _application_flags(self) -> int:
        return ApplicationFlag.for_intents(
            self.config.allowed_privileged_intents, verified=self.config.application_verified
        )

    async def _get_application(self, request: web.Request) -> web.StreamResponse:
        return json_reply(
            {
                "id": str(self.application_id),
                "name": self.config.application_name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": self.owner.payload(),
                "team": None,
                "flags": self._application_flags(),
                "bot": self.bot_user.payload(),
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.StreamResponse:
        return json_reply({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.StreamResponse:
        return json_reply(
            {
                "url": self.gateway_url,
                "shards": self.config.shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000 - self.identify_count,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )


def _shard_pair(value: Any) -> tuple[int, int] | None:
    """IDENTIFY's ``shard``: ``[shard_id, num_shards]``, the id below the count."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return None
    shard_id, count = value
    return (shard_id, count) if 0 <= shard_id < count else None
