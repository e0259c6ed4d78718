"""The state the parts of the fake share, and how a change is announced: to tests waiting in
``wait_for`` and to the gateway sessions that should hear of it."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from ._ratelimit import RateLimiter
from ._util import (
    SeededSnowflakes,
    SnowflakeFactory,
    field_error,
    invalid_form,
    unknown_channel,
)
from .config import FakeDiscordConfig
from .model import (
    FakeChannel,
    FakeGuild,
    FakeUser,
    InteractionRecord,
    MessageRecord,
    RequestRecord,
    StoredFile,
)

if TYPE_CHECKING:
    from ._gateway import GatewayConnection, GatewaySession

API_PREFIX = "/api/v10"
_RECORD = web.RequestKey("fake_record", RequestRecord)
T = TypeVar("T")

GuildRef = FakeGuild | int
ChannelRef = FakeChannel | int
UserRef = FakeUser | int


class _State:
    """The world, the records and the gateway's sessions, shared by every part of
    :class:`FakeDiscord` (each part is a mixin over this state), with the lookups, waits
    and gateway dispatch they all use."""

    # Set by FakeDiscord.__init__, which adds them as users.
    bot_user: FakeUser
    application_id: int
    owner: FakeUser

    def __init__(self, config: FakeDiscordConfig | None = None) -> None:
        self.config = config or FakeDiscordConfig()
        # Ids made while serving encode the current time; the world's come from the seed
        # when there is one (see FakeDiscordConfig.snowflake_seed).
        self.snowflake = SnowflakeFactory()
        seed = self.config.snowflake_seed
        self.world_snowflake: Callable[[], int] = (
            self.snowflake if seed is None else SeededSnowflakes(seed)
        )
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        # Gone from the bot's view, kept for queries (``messages_in``...).
        self.deleted_channels: dict[int, FakeChannel] = {}
        self.removed_guilds: dict[int, FakeGuild] = {}
        self.messages: dict[int, MessageRecord] = {}
        self.files: dict[int, StoredFile] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.requests: list[RequestRecord] = []
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: set[GatewayConnection] = set()
        self.identify_count = 0
        self.resume_count = 0
        self.identify_payloads: list[dict[str, Any]] = []
        self.rate_limited_count = 0
        self.write_faults: Counter[str] = Counter()  # injected failures by status ("429", "500")
        self._write_fault_rng = random.Random(self.config.write_fault_seed)
        self.typing: list[tuple[float, int, int]] = []  # (monotonic, channel id, user id)
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._channel_messages: dict[int, list[int]] = defaultdict(list)
        self._by_token: dict[str, InteractionRecord] = {}
        self._nonces: dict[tuple[int, int, str], int] = {}
        self._dms: dict[int, int] = {}
        self._limiter = RateLimiter()
        self._change = asyncio.Event()
        self.port = 0

    # -----------------------------------------------------------------------------------------
    # Addresses
    # -----------------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return self.config.token

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/gateway"

    # -----------------------------------------------------------------------------------------
    # Waiting
    # -----------------------------------------------------------------------------------------

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is the point of this helper
        *,
        what: str | None = None,
    ) -> T:
        """Re-checks ``predicate`` whenever the fake's state changes (and every 20 ms);
        returns its first truthy value. Raises TimeoutError describing the recent state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            event = self._change
            # Wake on every state change; also every 20 ms, for predicates about time
            # (deadlines, token expiry) that no state change announces.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.02))
        result = predicate()
        if result:
            return result
        raise TimeoutError(
            f"fake Discord: condition {what or getattr(predicate, '__name__', 'predicate')!s} "
            f"not met within {timeout} s\n{self.describe()}"
        )

    def describe(self, last: int = 10) -> str:
        """A readable summary of the recent state, for failure messages."""
        lines = [
            f"gateway: {len(self.connections)} connection(s), identify={self.identify_count}, "
            f"resume={self.resume_count}, 429s={self.rate_limited_count}",
            f"last {last} requests:",
        ]
        lines += [f"  {r.method} {r.path} -> {r.status}" for r in self.requests[-last:]]
        lines.append(f"last {last} messages:")
        for rec in sorted(self.messages.values(), key=lambda m: m.id)[-last:]:
            lines.append(f"  {rec!r} flags={rec.flags}")
        lines.append("interactions:")
        lines += [f"  {i!r}" for i in list(self.interactions.values())[-last:]]
        return "\n".join(lines)

    # -----------------------------------------------------------------------------------------
    # Lookups
    # -----------------------------------------------------------------------------------------

    def _guild(self, guild: GuildRef | None) -> FakeGuild:
        """A guild the bot is in (KeyError for one it was removed from)."""
        if isinstance(guild, FakeGuild):
            found: FakeGuild | None = guild
        else:
            found = self.guilds.get(guild) if guild is not None else None
            if found is None and guild in self.removed_guilds:
                found = self.removed_guilds[guild]
        if found is None:
            raise KeyError(f"unknown guild {guild}")
        if found.bot_removed:
            raise KeyError(f"the bot was removed from guild {found.id}")
        return found

    def _channel(self, channel: ChannelRef, *, deleted_ok: bool = False) -> FakeChannel:
        """A channel that exists (KeyError for a deleted one, unless ``deleted_ok``)."""
        if isinstance(channel, FakeChannel):
            found: FakeChannel | None = channel
        else:
            found = self.channels.get(channel) or self.deleted_channels.get(channel)
        if found is None:
            raise KeyError(f"unknown channel {channel}")
        if found.deleted and not deleted_ok:
            raise KeyError(f"channel {found.id} was deleted")
        return found

    def _live_channel(self, channel_id: int) -> FakeChannel:
        """For REST: the channel, or 404 Unknown Channel once it is deleted."""
        channel = self.channels.get(channel_id)
        if channel is None:
            raise unknown_channel()
        return channel

    def _user(self, user: UserRef) -> FakeUser:
        if isinstance(user, FakeUser):
            return user
        if user not in self.users:
            raise KeyError(f"unknown user {user}")
        return self.users[user]

    # -----------------------------------------------------------------------------------------
    # Dispatching
    # -----------------------------------------------------------------------------------------

    def _live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if s.alive]

    def _dispatch_guild(
        self,
        t: str,
        guild_id: int | None,
        build: Callable[[GatewaySession], Any],
        intent: int,
    ) -> None:
        for session in self._live_sessions():
            if not session.covers_guild(guild_id):
                continue
            if intent and not session.has(intent):
                continue
            session.dispatch(t, build(session))

    async def _flush(self) -> None:
        for conn in list(self.connections):
            await conn.flush()

    # -----------------------------------------------------------------------------------------
    # Request bodies
    # -----------------------------------------------------------------------------------------

    @staticmethod
    def _record(request: web.Request) -> RequestRecord:
        return request[_RECORD]

    def _body(self, request: web.Request) -> dict[str, Any]:
        payload = self._record(request).payload
        if payload is None:
            return {}
        if not isinstance(payload, dict):
            raise invalid_form(field_error("_root", "DICT_TYPE_CONVERT", "Must be an object."))
        return payload
