"""FakeDiscord: Discord's REST API, gateway and CDN on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import mimetypes
import re
import secrets
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import yarl
from aiohttp import BodyPartReader, WSMsgType, web

from ._gateway import GatewayConnection, GatewaySession
from ._ratelimit import RateLimiter, Window, bucket_hash, ratelimit_headers
from ._util import (
    ApplicationFlag,
    CallbackType,
    ChannelType,
    DiscordError,
    Intents,
    InteractionType,
    MessageFlag,
    OptionType,
    Perm,
    SnowflakeFactory,
    empty_reply,
    field_error,
    invalid_form,
    iso,
    json_reply,
    missing_permissions,
    unknown_channel,
    unknown_interaction,
    unknown_message,
    unknown_webhook,
)
from .config import FakeDiscordConfig
from .model import (
    CallbackRecord,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    InteractionRecord,
    MessageRecord,
    MultipartPart,
    RequestRecord,
    StoredFile,
    UploadFile,
    parse_ids,
)

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
_RECORD = web.RequestKey("fake_record", RequestRecord)
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

USER_MENTION = re.compile(r"<@!?(\d{15,21})>")
ROLE_MENTION = re.compile(r"<@&(\d{15,21})>")
COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")

GuildRef = FakeGuild | int
ChannelRef = FakeChannel | int
UserRef = FakeUser | int

EDITABLE_FLAGS = MessageFlag.SUPPRESS_EMBEDS | MessageFlag.IS_COMPONENTS_V2
SENDABLE_FLAGS = (
    MessageFlag.SUPPRESS_EMBEDS
    | MessageFlag.EPHEMERAL
    | MessageFlag.SUPPRESS_NOTIFICATIONS
    | MessageFlag.IS_COMPONENTS_V2
)


class _Pointer:
    """Returned by :meth:`FakeDiscord.point_client_here`: restores discord.py on exit."""

    def __init__(self, api_base: str, gateway_url: str) -> None:
        import discord.gateway
        import discord.http

        self._route = discord.http.Route
        self._ws = discord.gateway.DiscordWebSocket
        self._old_base = self._route.BASE
        self._old_gateway = self._ws.DEFAULT_GATEWAY
        self._route.BASE = api_base
        self._ws.DEFAULT_GATEWAY = yarl.URL(gateway_url)
        self.active = True

    def restore(self) -> None:
        if self.active:
            self._route.BASE = self._old_base
            self._ws.DEFAULT_GATEWAY = self._old_gateway
            self.active = False

    def __enter__(self) -> _Pointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()


class FakeDiscord:
    """A wire-level fake of Discord. Start it, point discord.py at it, drive it from tests.

    ::

        async with FakeDiscord() as fake:
            guild = fake.add_guild("Test", channels=["general"])
            with fake.point_client_here():
                await bot.login(fake.token)
                ...
    """

    def __init__(self, config: FakeDiscordConfig | None = None) -> None:
        self.config = config or FakeDiscordConfig()
        self.snowflake = SnowflakeFactory()
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
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
        self.typing: list[tuple[float, int, int]] = []  # (monotonic, channel id, user id)
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._channel_messages: dict[int, list[int]] = defaultdict(list)
        self._by_token: dict[str, InteractionRecord] = {}
        self._nonces: dict[tuple[int, int, str], int] = {}
        self._dms: dict[int, int] = {}
        self._limiter = RateLimiter()
        self._change = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._pointer: _Pointer | None = None
        self.port = 0

        self.bot_user = self.add_user(self.config.bot_name, bot=True)
        self.application_id = self.bot_user.id
        self.owner = self.add_user("owner")

    # -----------------------------------------------------------------------------------------
    # Lifecycle
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

    async def start(self) -> FakeDiscord:
        app = self._build_app()
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        self.port = int(sock.getsockname()[1])
        site = web.SockSite(self._runner, sock)
        await site.start()
        return self

    async def stop(self) -> None:
        if self._pointer is not None:
            self._pointer.restore()
            self._pointer = None
        for conn in list(self.connections):
            await conn.close(1001)
            await conn.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def point_client_here(self) -> _Pointer:
        """Points discord.py (``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY``) at this
        fake now; the returned object restores both on ``restore()`` or as a context manager
        (and :meth:`stop` restores them too)."""
        if self.port == 0:
            raise RuntimeError("start the fake first")
        if self._pointer is not None:
            self._pointer.restore()
        self._pointer = _Pointer(self.api_base, self.gateway_url)
        return self._pointer

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
    # World
    # -----------------------------------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False, global_name: str | None = None) -> FakeUser:
        user = FakeUser(self.snowflake(), name, bot=bot, global_name=global_name)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        owner: FakeUser | None = None,
        channels: Sequence[str] = ("general",),
        bot_permissions: int | None = None,
    ) -> FakeGuild:
        owner = owner or self.owner
        guild = FakeGuild(self.snowflake(), name, owner.id)
        guild.roles[guild.id] = FakeRole(
            guild.id, guild.id, "@everyone", self.config.everyone_permissions
        )
        bot_role = FakeRole(
            self.snowflake(),
            guild.id,
            self.bot_user.name,
            self.config.bot_permissions if bot_permissions is None else bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot_user.id,
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[owner.id] = FakeMember(owner, guild.id)
        guild.members[self.bot_user.id] = FakeMember(self.bot_user, guild.id, [bot_role.id])
        self.guilds[guild.id] = guild
        for position, channel_name in enumerate(channels):
            channel = FakeChannel(
                self.snowflake(), ChannelType.GUILD_TEXT, channel_name, guild.id, position
            )
            self.channels[channel.id] = channel
            guild.channel_ids.append(channel.id)
        self._dispatch_guild("GUILD_CREATE", guild.id, lambda s: self._guild_payload(guild, s), 0)
        self._changed()
        return guild

    def add_role(
        self, guild: GuildRef, name: str, permissions: int = 0, *, mentionable: bool = False
    ) -> FakeRole:
        g = self._guild(guild)
        role = FakeRole(
            self.snowflake(), g.id, name, permissions, len(g.roles), mentionable=mentionable
        )
        g.roles[role.id] = role
        payload = {"guild_id": str(g.id), "role": role.payload()}
        self._dispatch_guild("GUILD_ROLE_CREATE", g.id, lambda s: payload, Intents.GUILDS)
        return role

    def add_member(
        self,
        guild: GuildRef,
        user: FakeUser,
        *,
        roles: Iterable[FakeRole] = (),
        nick: str | None = None,
        permissions: int | None = None,
    ) -> FakeMember:
        """Adds ``user`` to ``guild``. ``permissions`` gives them a role with those bits
        (e.g. ``Perm.MANAGE_MESSAGES``)."""
        g = self._guild(guild)
        role_ids = [r.id for r in roles]
        if permissions is not None:
            role_ids.append(self.add_role(g, f"{user.name}-perms", permissions).id)
        member = FakeMember(user, g.id, role_ids, nick)
        g.members[user.id] = member
        payload = {"guild_id": str(g.id), **member.payload()}
        self._dispatch_guild("GUILD_MEMBER_ADD", g.id, lambda s: payload, Intents.GUILD_MEMBERS)
        self._changed()
        return member

    def add_channel(
        self,
        guild: GuildRef,
        name: str,
        *,
        type: int = ChannelType.GUILD_TEXT,
        topic: str | None = None,
        parent: ChannelRef | None = None,
    ) -> FakeChannel:
        g = self._guild(guild)
        channel = FakeChannel(
            self.snowflake(),
            type,
            name,
            g.id,
            len(g.channel_ids),
            parent_id=None if parent is None else self._channel(parent).id,
            topic=topic,
        )
        self.channels[channel.id] = channel
        g.channel_ids.append(channel.id)
        payload = channel.payload()
        self._dispatch_guild("CHANNEL_CREATE", g.id, lambda s: payload, Intents.GUILDS)
        self._changed()
        return channel

    def add_thread(
        self,
        parent: ChannelRef,
        name: str,
        *,
        owner: FakeUser | None = None,
        private: bool = False,
        thread_id: int | None = None,
    ) -> FakeChannel:
        parent_channel = self._channel(parent)
        if parent_channel.guild_id is None or parent_channel.is_thread:
            raise ValueError("threads live in guild text channels")
        owner = owner or self.owner
        thread = FakeChannel(
            thread_id or self.snowflake(),
            ChannelType.PRIVATE_THREAD if private else ChannelType.PUBLIC_THREAD,
            name,
            parent_channel.guild_id,
            parent_id=parent_channel.id,
            owner_id=owner.id,
            member_ids={owner.id},
        )
        self.channels[thread.id] = thread
        self._guild(parent_channel.guild_id).channel_ids.append(thread.id)
        self._dispatch_thread_create(thread)
        self._changed()
        return thread

    def dm_channel(self, user: UserRef) -> FakeChannel:
        """The DM channel between the bot and ``user`` (created on first use)."""
        u = self._user(user)
        if u.id in self._dms:
            return self.channels[self._dms[u.id]]
        channel = FakeChannel(self.snowflake(), ChannelType.DM, "", None, recipients=[u])
        self.channels[channel.id] = channel
        self._dms[u.id] = channel.id
        return channel

    def _guild(self, guild: GuildRef | None) -> FakeGuild:
        if isinstance(guild, FakeGuild):
            return guild
        if guild is None or guild not in self.guilds:
            raise KeyError(f"unknown guild {guild}")
        return self.guilds[guild]

    def _channel(self, channel: ChannelRef) -> FakeChannel:
        if isinstance(channel, FakeChannel):
            return channel
        if channel not in self.channels:
            raise KeyError(f"unknown channel {channel}")
        return self.channels[channel]

    def _user(self, user: UserRef) -> FakeUser:
        if isinstance(user, FakeUser):
            return user
        if user not in self.users:
            raise KeyError(f"unknown user {user}")
        return self.users[user]

    def permissions_in(self, channel: ChannelRef, user: UserRef) -> int:
        """``user``'s permissions in ``channel``, as Discord computes them: the roles, then
        the channel's overwrites (@everyone, the member's roles, the member), then the
        implicit denials. A thread has its parent's overwrites."""
        ch = self._channel(channel)
        u = self._user(user)
        if ch.guild_id is None:
            return Perm.EVERYONE_DEFAULT if u in ch.recipients or u is self.bot_user else 0
        guild = self._guild(ch.guild_id)
        perms = guild.permissions_of(u.id)
        if perms == Perm.ALL:  # owner or administrator: overwrites do not apply
            return perms
        source = self.channels[ch.parent_id] if ch.is_thread and ch.parent_id else ch
        overwrites = source.overwrites
        member = guild.members.get(u.id)
        role_ids = member.role_ids if member is not None else []
        if guild.id in overwrites:
            _, allow, deny = overwrites[guild.id]
            perms = (perms & ~deny) | allow
        allow = deny = 0
        for role_id in role_ids:
            if role_id in overwrites and overwrites[role_id][0] == 0:
                allow |= overwrites[role_id][1]
                deny |= overwrites[role_id][2]
        perms = (perms & ~deny) | allow
        if u.id in overwrites and overwrites[u.id][0] == 1:
            _, allow, deny = overwrites[u.id]
            perms = (perms & ~deny) | allow
        writing = Perm.SEND_MESSAGES_IN_THREADS if ch.is_thread else Perm.SEND_MESSAGES
        for needed in {Perm.SEND_MESSAGES, writing}:
            if not perms & needed:
                perms &= ~Perm.IMPLIED_BY_SENDING
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        return perms

    def app_permissions(self, channel: ChannelRef) -> int:
        """What Discord sends as ``app_permissions`` and checks in interaction responses."""
        ch = self._channel(channel)
        if ch.is_dm:
            return Perm.IN_BOT_DM
        return self.permissions_in(ch, self.bot_user)

    def set_overwrite(
        self, channel: ChannelRef, target: FakeRole | FakeUser, *, allow: int = 0, deny: int = 0
    ) -> None:
        """A permission overwrite on ``channel`` for a role (or the guild's @everyone role)
        or a member, announced with CHANNEL_UPDATE as on Discord."""
        ch = self._channel(channel)
        kind = 1 if isinstance(target, FakeUser) else 0
        ch.overwrites[target.id] = (kind, allow, deny)
        payload = ch.payload()
        self._dispatch_guild("CHANNEL_UPDATE", ch.guild_id, lambda s: payload, Intents.GUILDS)
        self._changed()

    def _first_text_channel(self) -> FakeChannel:
        for channel in self.channels.values():
            if channel.type == ChannelType.GUILD_TEXT:
                return channel
        raise LookupError("add a guild with a channel first")

    def _first_human(self, guild_id: int | None) -> FakeUser:
        for user in self.users.values():
            if user.bot or user is self.owner:
                continue
            if guild_id is None or user.id in self._guild(guild_id).members:
                return user
        return self.owner

    # -----------------------------------------------------------------------------------------
    # Payloads
    # -----------------------------------------------------------------------------------------

    def _guild_payload(
        self, guild: FakeGuild, session: GatewaySession | None = None
    ) -> dict[str, Any]:
        channels = [self.channels[c] for c in guild.channel_ids]
        members = list(guild.members.values())
        if session is not None and not session.has(Intents.GUILD_MEMBERS):
            # Without the members intent Discord sends only the bot's own member.
            members = [m for m in members if m.user.id == self.bot_user.id]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "nsfw_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "max_members": 500000,
            "large": False,
            "unavailable": False,
            "joined_at": guild.joined_at,
            "member_count": len(guild.members),
            "members": [m.payload() for m in members],
            "channels": [c.payload() for c in channels if not c.is_thread],
            "threads": [c.payload() for c in channels if c.is_thread and not c.archived],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _channel_payload_for(self, channel: FakeChannel, user: FakeUser) -> dict[str, Any]:
        data = channel.payload()
        if channel.guild_id is not None:
            data["permissions"] = str(self.permissions_in(channel, user))
        if channel.is_thread and self.bot_user.id in channel.member_ids:
            data["member"] = {
                "id": str(channel.id),
                "user_id": str(self.bot_user.id),
                "join_timestamp": iso(),
                "flags": 0,
            }
        return data

    def message_payload(self, rec: MessageRecord, *, depth: int = 0) -> dict[str, Any]:
        """The message as Discord's API shows it."""
        version = rec.latest
        data: dict[str, Any] = {
            "id": str(rec.id),
            "channel_id": str(rec.channel_id),
            "author": rec.author.payload(),
            "content": version.content,
            "timestamp": iso(_wall_dt(rec.created_wall)),
            "edited_timestamp": None if rec.edited_wall is None else iso(_wall_dt(rec.edited_wall)),
            "tts": rec.tts,
            "mention_everyone": rec.mention_everyone,
            "mentions": [],
            "mention_roles": [str(r) for r in rec.mention_role_ids],
            "attachments": version.attachments,
            "embeds": version.embeds,
            "components": version.components,
            "pinned": False,
            "type": rec.type,
            "flags": version.flags,
        }
        guild = self.guilds.get(rec.guild_id) if rec.guild_id is not None else None
        if guild is not None:
            data["guild_id"] = str(guild.id)
            member = guild.members.get(rec.author.id)
            if member is not None and rec.webhook_id is None:
                data["member"] = member.payload(with_user=False)
        for uid in rec.mention_ids:
            user = self.users.get(uid)
            if user is None:
                continue
            mention = user.payload()
            if guild is not None and uid in guild.members:
                mention["member"] = guild.members[uid].payload(with_user=False)
            data["mentions"].append(mention)
        if rec.nonce is not None:
            data["nonce"] = rec.nonce
        if rec.webhook_id is not None:
            data["webhook_id"] = str(rec.webhook_id)
        if rec.application_id is not None:
            data["application_id"] = str(rec.application_id)
        if rec.reactions:
            data["reactions"] = [
                {
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me": self.bot_user.id in users,
                    "me_burst": False,
                    "burst_colors": [],
                    "emoji": _emoji_payload(name),
                }
                for name, users in rec.reactions.items()
                if users
            ]
        if rec.reference is not None:
            data["message_reference"] = rec.reference
            ref_id = rec.reference.get("message_id")
            if depth == 0 and ref_id is not None:
                ref = self.messages.get(int(ref_id))
                data["referenced_message"] = (
                    None if ref is None or ref.deleted else self.message_payload(ref, depth=1)
                )
        if rec.interaction_id is not None:
            interaction = self.interactions.get(rec.interaction_id)
            if interaction is not None:
                metadata: dict[str, Any] = {
                    "id": str(interaction.id),
                    "type": interaction.type,
                    "user": interaction.user.payload(),
                    "authorizing_integration_owners": {
                        "0": str(interaction.guild_id or 0),
                    },
                }
                if interaction.name is not None:
                    metadata["name"] = interaction.name
                    metadata["command_type"] = 1
                if interaction.original is not None and interaction.original is not rec:
                    metadata["original_response_message_id"] = str(interaction.original.id)
                if interaction.message_id is not None:
                    metadata["interacted_message_id"] = str(interaction.message_id)
                data["interaction_metadata"] = metadata
        if rec.thread_id is not None and rec.thread_id in self.channels:
            data["thread"] = self.channels[rec.thread_id].payload()
        return data

    def _blank_for(self, session: GatewaySession, rec: MessageRecord) -> bool:
        """Whether Discord withholds content from this session (message content intent)."""
        if not self.config.enforce_message_content_intent:
            return False
        if session.has(Intents.MESSAGE_CONTENT):
            return False
        if rec.guild_id is None or rec.author.id == self.bot_user.id:
            return False
        return self.bot_user.id not in rec.mention_ids

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

    def _dispatch_message(self, t: str, rec: MessageRecord) -> None:
        if rec.ephemeral:
            return
        intent = Intents.GUILD_MESSAGES if rec.guild_id is not None else Intents.DIRECT_MESSAGES
        payload = self.message_payload(rec)

        def build(session: GatewaySession) -> dict[str, Any]:
            if not self._blank_for(session, rec):
                return payload
            blanked = dict(payload)
            blanked.update(content="", embeds=[], attachments=[], components=[])
            blanked.pop("poll", None)
            return blanked

        self._dispatch_guild(t, rec.guild_id, build, intent)

    def _dispatch_delete(self, rec: MessageRecord) -> None:
        if rec.ephemeral:
            return
        payload: dict[str, Any] = {"id": str(rec.id), "channel_id": str(rec.channel_id)}
        if rec.guild_id is not None:
            payload["guild_id"] = str(rec.guild_id)
        intent = Intents.GUILD_MESSAGES if rec.guild_id is not None else Intents.DIRECT_MESSAGES
        self._dispatch_guild("MESSAGE_DELETE", rec.guild_id, lambda s: payload, intent)

    def _dispatch_thread_create(self, thread: FakeChannel) -> None:
        payload = {**self._channel_payload_for(thread, self.bot_user), "newly_created": True}
        payload.pop("permissions", None)
        self._dispatch_guild("THREAD_CREATE", thread.guild_id, lambda s: payload, Intents.GUILDS)

    async def _flush(self) -> None:
        for conn in list(self.connections):
            await conn.flush()

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
        shard_id, shard_count = data.get("shard") or [0, 1]
        if not 0 <= shard_id < shard_count:
            await conn.close(4010, b"Invalid shard.")
            return
        session = GatewaySession(
            uuid.uuid4().hex,
            intents=intents,
            shard=(int(shard_id), int(shard_count)),
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
        guilds = [g for g in self.guilds.values() if session.covers_guild(g.id)]
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

    @property
    def gateway_connected(self) -> bool:
        return any(c.session is not None and c.open for c in self.connections)

    # -----------------------------------------------------------------------------------------
    # Messages (shared by REST and test-side actions)
    # -----------------------------------------------------------------------------------------

    def _store_file(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        description: str | None = None,
        *,
        ephemeral: bool = False,
    ) -> StoredFile:
        file_id = self.snowflake()
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        safe = re.sub(r"[^\w.\-]", "_", filename) or "file"
        path = f"/attachments/{channel_id}/{file_id}/{safe}"
        stored = StoredFile(
            file_id,
            filename,
            bytes(data),
            content_type,
            url=f"{self.base_url}{path}",
            proxy_url=f"{self.base_url}/media{path}",
            description=description,
            ephemeral=ephemeral,
        )
        self.files[file_id] = stored
        return stored

    def _mentions(
        self,
        channel: FakeChannel,
        author: FakeUser,
        content: str,
        allowed: dict[str, Any] | None,
        replied: MessageRecord | None,
        *,
        mention_author: bool = True,
    ) -> tuple[list[int], list[int], bool]:
        guild = self.guilds.get(channel.guild_id) if channel.guild_id is not None else None
        user_ids = [int(u) for u in USER_MENTION.findall(content)]
        role_ids = [int(r) for r in ROLE_MENTION.findall(content)]
        everyone = "@everyone" in content or "@here" in content
        if allowed is None:
            users_ok: set[int] | None = None
            roles_ok: set[int] | None = None
            everyone_ok = True
            replied_ok = mention_author
        else:
            parse = set(allowed.get("parse") or [])
            users_ok = None if "users" in parse else set(parse_ids(allowed.get("users")))
            roles_ok = None if "roles" in parse else set(parse_ids(allowed.get("roles")))
            everyone_ok = "everyone" in parse
            replied_ok = bool(allowed.get("replied_user", False))
        mentions: list[int] = []
        for uid in user_ids:
            if uid in self.users and (users_ok is None or uid in users_ok) and uid not in mentions:
                mentions.append(uid)
        if (
            replied is not None
            and replied_ok
            and replied.author.id != author.id
            and replied.author.id not in mentions
        ):
            mentions.append(replied.author.id)
        roles: list[int] = []
        if guild is not None:
            for rid in role_ids:
                if rid in guild.roles and (roles_ok is None or rid in roles_ok):
                    roles.append(rid)
        mention_everyone = (
            everyone
            and everyone_ok
            and guild is not None
            and bool(self.permissions_in(channel, author) & Perm.MENTION_EVERYONE)
        )
        return mentions, roles, mention_everyone

    def _new_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        *,
        content: str,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        files: Sequence[StoredFile] = (),
        flags: int = 0,
        type: int = 0,
        reference: dict[str, Any] | None = None,
        allowed_mentions: dict[str, Any] | None = None,
        nonce: str | int | None = None,
        visible_to: int | None = None,
        interaction: InteractionRecord | None = None,
        source: str = "rest",
        tts: bool = False,
        mention_author: bool = True,
    ) -> MessageRecord:
        replied = None
        if reference is not None and reference.get("message_id") is not None:
            replied = self.messages.get(int(reference["message_id"]))
        mentions, roles, everyone = self._mentions(
            channel, author, content, allowed_mentions, replied, mention_author=mention_author
        )
        rec = MessageRecord(
            self.snowflake(),
            channel.id,
            channel.guild_id,
            author,
            type=type,
            visible_to=visible_to,
            interaction_id=None if interaction is None else interaction.id,
            webhook_id=None if interaction is None else self.application_id,
            application_id=None if interaction is None else self.application_id,
            nonce=nonce,
            reference=reference,
            allowed_mentions=allowed_mentions,
            mention_ids=mentions,
            mention_role_ids=roles,
            mention_everyone=everyone,
            tts=tts,
            source=source,
        )
        for f in files:
            rec.files[f.id] = f
        rec.add_version(
            content=content,
            embeds=list(embeds or []),
            components=list(components or []),
            attachments=[f.payload() for f in files],
            flags=flags,
        )
        self.messages[rec.id] = rec
        self._channel_messages[channel.id].append(rec.id)
        if not rec.ephemeral:
            channel.last_message_id = rec.id
            if channel.is_thread:
                channel.message_count += 1
        self._dispatch_message("MESSAGE_CREATE", rec)
        self._changed()
        return rec

    def _edit(
        self,
        rec: MessageRecord,
        *,
        content: str | None = None,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        flags: int | None = None,
    ) -> None:
        latest = rec.latest
        new_flags = latest.flags if flags is None else flags
        rec.add_version(
            content=latest.content if content is None else content,
            embeds=latest.embeds if embeds is None else embeds,
            components=latest.components if components is None else components,
            attachments=latest.attachments if attachments is None else attachments,
            flags=new_flags,
        )
        rec.edited_wall = time.time()
        self._dispatch_message("MESSAGE_UPDATE", rec)
        self._changed()

    def _delete(self, rec: MessageRecord) -> None:
        rec.deleted_mono = time.monotonic()
        rec.deleted_wall = time.time()
        self._dispatch_delete(rec)
        self._changed()

    # -----------------------------------------------------------------------------------------
    # Test-side actions
    # -----------------------------------------------------------------------------------------

    async def post_message(
        self,
        channel: ChannelRef,
        author: UserRef,
        content: str = "",
        *,
        mentions: Iterable[FakeUser | FakeRole] = (),
        reference: MessageRecord | int | None = None,
        attachments: Iterable[UploadFile] = (),
        embeds: Sequence[dict[str, Any]] = (),
        mention_author: bool = True,
    ) -> MessageRecord:
        """A user posts a message: MESSAGE_CREATE reaches the bot. ``mentions`` that the
        content lacks are written into it (``<@id> ``), as a Discord client does."""
        ch = self._channel(channel)
        user = self._user(author)
        for target in reversed(list(mentions)):
            if target.mention not in content and f"<@!{target.id}>" not in content:
                content = f"{target.mention} {content}"
        ref_payload = None
        if reference is not None:
            ref_id = reference.id if isinstance(reference, MessageRecord) else int(reference)
            ref = self.messages.get(ref_id)
            if ref is None:
                raise KeyError(f"unknown message {ref_id}")
            ref_payload = {
                "type": 0,
                "message_id": str(ref.id),
                "channel_id": str(ref.channel_id),
                "fail_if_not_exists": True,
            }
            if ref.guild_id is not None:
                ref_payload["guild_id"] = str(ref.guild_id)
        files = [
            self._store_file(ch.id, a.filename, a.data, a.content_type, a.description)
            for a in attachments
        ]
        rec = self._new_message(
            ch,
            user,
            content=content,
            embeds=list(embeds),
            files=files,
            type=19 if ref_payload else 0,
            reference=ref_payload,
            source="user",
            mention_author=mention_author,
        )
        await self._flush()
        return rec

    async def edit_message(self, message: MessageRecord | int, content: str) -> MessageRecord:
        """A user edits their own message: MESSAGE_UPDATE."""
        rec = message if isinstance(message, MessageRecord) else self.message(message)
        self._edit(rec, content=content)
        await self._flush()
        return rec

    async def delete_message(
        self, channel: ChannelRef, message_id: int, *, by: UserRef | None = None
    ) -> MessageRecord:
        """A user (the author, or someone with Manage Messages) deletes a message."""
        ch = self._channel(channel)
        rec = self.messages.get(message_id)
        if rec is None or rec.channel_id != ch.id or rec.deleted:
            raise KeyError(f"no message {message_id} in channel {ch.id}")
        if by is not None:
            actor = self._user(by)
            allowed = actor.id == rec.author.id or bool(
                self.permissions_in(ch, actor) & Perm.MANAGE_MESSAGES
            )
            if not allowed:
                raise PermissionError(f"{actor.name} cannot delete message {message_id}")
        self._delete(rec)
        await self._flush()
        return rec

    async def add_reaction(self, message: MessageRecord | int, user: UserRef, emoji: str) -> None:
        rec = message if isinstance(message, MessageRecord) else self.message(message)
        u = self._user(user)
        rec.reactions.setdefault(emoji, set()).add(u.id)
        self._dispatch_reaction("MESSAGE_REACTION_ADD", rec, u, emoji)
        self._changed()
        await self._flush()

    def _dispatch_reaction(self, t: str, rec: MessageRecord, user: FakeUser, emoji: str) -> None:
        payload: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(rec.channel_id),
            "message_id": str(rec.id),
            "emoji": _emoji_payload(emoji),
            "burst": False,
            "type": 0,
        }
        if rec.guild_id is not None:
            payload["guild_id"] = str(rec.guild_id)
            guild = self.guilds[rec.guild_id]
            if t == "MESSAGE_REACTION_ADD" and user.id in guild.members:
                payload["member"] = guild.members[user.id].payload()
        intent = (
            Intents.GUILD_MESSAGE_REACTIONS
            if rec.guild_id is not None
            else Intents.DIRECT_MESSAGE_REACTIONS
        )
        self._dispatch_guild(t, rec.guild_id, lambda s: payload, intent)

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        if guild_id is not None:
            for cmd in self.guild_commands.get(guild_id, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        for cmd in self.global_commands:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        return None

    def _option_value(
        self,
        channel: FakeChannel,
        otype: int,
        value: Any,
        resolved: dict[str, dict[str, Any]],
    ) -> Any:
        if otype == OptionType.ATTACHMENT:
            if isinstance(value, StoredFile):
                stored = value
            elif isinstance(value, UploadFile):
                stored = self._store_file(
                    channel.id,
                    value.filename,
                    value.data,
                    value.content_type,
                    value.description,
                    ephemeral=True,
                )
            else:
                raise TypeError(f"attachment option needs an UploadFile, not {value!r}")
            resolved.setdefault("attachments", {})[str(stored.id)] = stored.payload()
            return str(stored.id)
        if otype in (OptionType.USER, OptionType.MENTIONABLE) and isinstance(value, FakeUser | int):
            if isinstance(value, int) and value not in self.users:
                return self._option_value(channel, OptionType.ROLE, value, resolved)
            user = self._user(value)
            resolved.setdefault("users", {})[str(user.id)] = user.payload()
            guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
            if guild is not None and user.id in guild.members:
                member = guild.members[user.id].payload(with_user=False)
                member["permissions"] = str(guild.permissions_of(user.id))
                resolved.setdefault("members", {})[str(user.id)] = member
            return str(user.id)
        if otype in (OptionType.ROLE, OptionType.MENTIONABLE):
            role = value if isinstance(value, FakeRole) else None
            if role is None and channel.guild_id is not None:
                role = self._guild(channel.guild_id).roles.get(int(value))
            if role is None:
                raise KeyError(f"unknown role {value!r}")
            resolved.setdefault("roles", {})[str(role.id)] = role.payload()
            return str(role.id)
        if otype == OptionType.CHANNEL:
            target = self._channel(value)
            resolved.setdefault("channels", {})[str(target.id)] = self._channel_payload_for(
                target, self.bot_user
            )
            return str(target.id)
        if otype == OptionType.INTEGER:
            return int(value)
        if otype == OptionType.NUMBER:
            return float(value)
        if otype == OptionType.BOOLEAN:
            return bool(value)
        return str(value)

    @staticmethod
    def _infer_type(value: Any) -> int:
        if isinstance(value, UploadFile | StoredFile):
            return OptionType.ATTACHMENT
        if isinstance(value, bool):
            return OptionType.BOOLEAN
        if isinstance(value, int):
            return OptionType.INTEGER
        if isinstance(value, float):
            return OptionType.NUMBER
        if isinstance(value, FakeUser):
            return OptionType.USER
        if isinstance(value, FakeChannel):
            return OptionType.CHANNEL
        if isinstance(value, FakeRole):
            return OptionType.ROLE
        return OptionType.STRING

    def _build_options(
        self,
        channel: FakeChannel,
        definitions: list[dict[str, Any]] | None,
        values: Mapping[str, Any],
        resolved: dict[str, dict[str, Any]],
        focused: str | None,
    ) -> list[dict[str, Any]]:
        options: list[dict[str, Any]] = []
        by_name = {d["name"]: d for d in definitions or []}
        for name, value in values.items():
            definition = by_name.get(name)
            if definitions is not None and definition is None:
                raise ValueError(f"the command has no option {name!r}")
            if name == focused:
                otype = int(definition["type"]) if definition else OptionType.STRING
                options.append({"name": name, "type": otype, "value": str(value), "focused": True})
                continue
            otype = int(definition["type"]) if definition else self._infer_type(value)
            options.append(
                {
                    "name": name,
                    "type": otype,
                    "value": self._option_value(channel, otype, value, resolved),
                }
            )
        if definitions is not None and focused is None:
            missing = [
                d["name"] for d in definitions if d.get("required") and d["name"] not in values
            ]
            if missing:
                raise ValueError(f"required options missing: {missing}")
        return options

    def _interaction(
        self,
        itype: int,
        channel: FakeChannel,
        user: FakeUser,
        data: dict[str, Any],
        *,
        name: str | None = None,
        custom_id: str | None = None,
        message: MessageRecord | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        interaction_id = self.snowflake()
        token = f"aW50ZXJhY3Rpb246{interaction_id}:{secrets.token_urlsafe(48)}"
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "token": token,
            "version": 1,
            "locale": locale,
            "app_permissions": str(self.app_permissions(channel)),
            "attachment_size_limit": self.config.attachment_size_limit,
            "entitlements": [],
            "channel_id": str(channel.id),
            "channel": self._channel_payload_for(channel, user),
        }
        if channel.guild_id is not None:
            guild = self._guild(channel.guild_id)
            member = guild.members.get(user.id)
            if member is None:
                raise ValueError(f"{user.name} is not a member of {guild.name}")
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member={**member.payload(), "permissions": str(self.permissions_in(channel, user))},
                context=0,
                authorizing_integration_owners={"0": str(guild.id)},
            )
        else:
            payload.update(
                user=user.payload(), context=1, authorizing_integration_owners={"1": str(user.id)}
            )
        if message is not None:
            payload["message"] = self.message_payload(message)
        rec = InteractionRecord(
            interaction_id,
            token,
            itype,
            channel.id,
            channel.guild_id,
            user,
            data,
            payload,
            time.monotonic(),
            time.time(),
            self.config.interaction_ack_deadline,
            self.config.interaction_token_lifetime,
            name=name,
            custom_id=custom_id,
            message_id=None if message is None else message.id,
        )
        self.interactions[rec.id] = rec
        self._by_token[token] = rec
        self._dispatch_guild("INTERACTION_CREATE", channel.guild_id, lambda s: payload, 0)
        self._changed()
        return rec

    def _command_data(
        self,
        name: str,
        options: Mapping[str, Any],
        channel: FakeChannel,
        focused: str | None,
    ) -> dict[str, Any]:
        parts = name.split()
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"bad command name {name!r}")
        definition = self._find_command(parts[0], channel.guild_id)
        # Discord does not offer a command outside its contexts (1: the bot's DMs).
        contexts = (definition or {}).get("contexts") or [0, 1]
        if channel.is_dm and 1 not in contexts:
            raise ValueError(f"/{parts[0]} is not offered in direct messages")
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {
            "id": str(definition["id"]) if definition else str(self.snowflake()),
            "name": parts[0],
            "type": 1,
        }
        if definition is not None and definition.get("guild_id"):
            data["guild_id"] = definition["guild_id"]
        defs: list[dict[str, Any]] | None = (
            list(definition.get("options") or []) if definition else None
        )
        container = data
        for depth, part in enumerate(parts[1:], start=1):
            sub_def = None
            if defs is not None:
                sub_def = next((d for d in defs if d["name"] == part), None)
                if sub_def is None or sub_def.get("type") not in (1, 2):
                    raise ValueError(f"{parts[0]!r} has no subcommand {part!r}")
            if sub_def is not None:
                stype = int(sub_def["type"])
            else:
                stype = OptionType.SUB_COMMAND if depth == len(parts) - 1 else 2
            node: dict[str, Any] = {"name": part, "type": stype, "options": []}
            container.setdefault("options", []).append(node)
            container = node
            defs = list(sub_def.get("options") or []) if sub_def is not None else None
        container["options"] = self._build_options(channel, defs, options, resolved, focused)
        if resolved:
            data["resolved"] = resolved
        return data

    async def invoke_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        channel: ChannelRef | None = None,
        user: UserRef | None = None,
        attachments: Mapping[str, UploadFile] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """A user runs ``/name`` (``"config set"`` for a subcommand): INTERACTION_CREATE
        type 2. Option types come from the synced definition (else from the values);
        attachment options take :class:`UploadFile` values (or use ``attachments=``)."""
        ch = self._channel(channel) if channel is not None else self._first_text_channel()
        u = self._user(user) if user is not None else self._first_human(ch.guild_id)
        values = dict(options or {})
        values.update(attachments or {})
        data = self._command_data(name, values, ch, None)
        rec = self._interaction(
            InteractionType.APPLICATION_COMMAND, ch, u, data, name=name, locale=locale
        )
        await self._flush()
        return rec

    async def invoke_autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        channel: ChannelRef | None = None,
        user: UserRef | None = None,
    ) -> InteractionRecord:
        """A user types into option ``focused``: INTERACTION_CREATE type 4. The bot's
        choices land in ``record.autocomplete_choices``."""
        ch = self._channel(channel) if channel is not None else self._first_text_channel()
        u = self._user(user) if user is not None else self._first_human(ch.guild_id)
        values = dict(options)
        values.setdefault(focused, "")
        data = self._command_data(name, values, ch, focused)
        rec = self._interaction(InteractionType.AUTOCOMPLETE, ch, u, data, name=name)
        await self._flush()
        return rec

    async def click_button(
        self,
        message: MessageRecord | int,
        custom_id: str,
        user: UserRef | None = None,
        *,
        values: Sequence[str] | None = None,
    ) -> InteractionRecord:
        """A user clicks a button (or picks ``values`` in a select) on a message:
        INTERACTION_CREATE type 3, with the message included."""
        rec = message if isinstance(message, MessageRecord) else self.message(message)
        ch = self._channel(rec.channel_id)
        u = self._user(user) if user is not None else self._first_human(ch.guild_id)
        if rec.deleted or not rec.visible_for(u.id):
            raise ValueError(f"{u.name} cannot see message {rec.id}")
        component = _find_component(rec.components, custom_id)
        if component is None:
            raise ValueError(f"message {rec.id} has no component {custom_id!r}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] != 2:
            data["values"] = list(values or [])
        interaction = self._interaction(
            InteractionType.MESSAGE_COMPONENT, ch, u, data, custom_id=custom_id, message=rec
        )
        await self._flush()
        return interaction

    # -----------------------------------------------------------------------------------------
    # Queries
    # -----------------------------------------------------------------------------------------

    def message(self, message_id: int) -> MessageRecord:
        return self.messages[message_id]

    def messages_in(
        self,
        channel: ChannelRef,
        *,
        as_user: UserRef | None = None,
        include_deleted: bool = False,
    ) -> list[MessageRecord]:
        """Messages in the channel, oldest first: what everyone sees, plus the ephemeral ones
        ``as_user`` sees."""
        ch = self._channel(channel)
        viewer = None if as_user is None else self._user(as_user).id
        out = []
        for mid in self._channel_messages.get(ch.id, []):
            rec = self.messages[mid]
            if rec.deleted and not include_deleted:
                continue
            if rec.visible_to is not None and rec.visible_to != viewer:
                continue
            out.append(rec)
        return out

    def interaction(self, interaction_id: int | None = None) -> InteractionRecord:
        """The interaction with that id, or the latest one."""
        if interaction_id is None:
            return list(self.interactions.values())[-1]
        return self.interactions[interaction_id]

    def requests_for(
        self,
        route: str | None = None,
        *,
        method: str | None = None,
        status: int | None = None,
        kind: str | None = None,
    ) -> list[RequestRecord]:
        """Recorded requests; ``route`` matches the template (``"PATCH
        /channels/{channel_id}/messages/{message_id}"``) or a substring of it or the path."""
        out = []
        for r in self.requests:
            if method is not None and r.method != method.upper():
                continue
            if status is not None and r.status != status:
                continue
            if kind is not None and r.kind != kind:
                continue
            if (
                route is not None
                and route != r.route
                and route not in r.route
                and route not in r.path
            ):
                continue
            out.append(r)
        return out

    def request_counts(self) -> Counter[str]:
        return Counter(r.route for r in self.requests)

    def registered_commands(self, guild: GuildRef | None = None) -> list[dict[str, Any]]:
        if guild is None:
            return list(self.global_commands)
        return list(self.guild_commands.get(self._guild(guild).id, []))

    def reset_records(self) -> None:
        """Forgets recorded requests and 429 counts (and rate-limit windows)."""
        self.requests.clear()
        self.rate_limited_count = 0
        self._limiter.reset()
        self._changed()

    # -----------------------------------------------------------------------------------------
    # HTTP plumbing
    # -----------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        fake = self

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await fake._handle(request, handler)

        app = web.Application(middlewares=[middleware], client_max_size=1024**3)
        r = app.router
        a = API_PREFIX
        r.add_get("/gateway", self._gateway)
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/users/{user_id}", self._get_user),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("PATCH", "/channels/{channel_id}", self._patch_channel),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("POST", "/channels/{channel_id}/threads", self._start_thread),
            (
                "POST",
                "/channels/{channel_id}/messages/{message_id}/threads",
                self._start_thread,
            ),
            ("PUT", "/channels/{channel_id}/thread-members/@me", self._join_thread),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._put_reaction,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._delete_reaction,
            ),
            ("GET", "/applications/{application_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/commands", self._put_commands),
            ("POST", "/applications/{application_id}/commands", self._post_command),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._get_commands,
            ),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._put_commands,
            ),
            (
                "POST",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._post_command,
            ),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{application_id}/{token}", self._followup),
            ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", self._wh_get),
            ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", self._wh_patch),
            (
                "DELETE",
                "/webhooks/{application_id}/{token}/messages/{message_id}",
                self._wh_delete,
            ),
        ]
        for method, path, handler in routes:
            r.add_route(method, a + path, handler)
        r.add_get("/attachments/{channel_id}/{file_id}/{filename}", self._cdn)
        r.add_get("/media/attachments/{channel_id}/{file_id}/{filename}", self._cdn)
        from .control import add_control_routes

        add_control_routes(app, self)
        return app

    async def _read_body(self, request: web.Request) -> tuple[Any, list[MultipartPart]]:
        if request.content_type.startswith("multipart/"):
            parts: list[MultipartPart] = []
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue
                data = await part.read(decode=False)
                parts.append(
                    MultipartPart(
                        part.name or "",
                        part.filename,
                        part.headers.get("Content-Type"),
                        bytes(data),
                    )
                )
            return None, parts
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/gateway" or path.startswith("/_fake/"):
            return await handler(request)
        start = time.monotonic()
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else path
        if template.startswith(API_PREFIX):
            rel = template[len(API_PREFIX) :]
            kind = "webhook" if rel.startswith(("/interactions/", "/webhooks/")) else "bot"
        elif path.startswith(API_PREFIX):
            rel, kind = path[len(API_PREFIX) :], "bot"
        else:
            rel = template
            kind = "cdn" if path.startswith(("/attachments/", "/media/")) else "other"
        record = RequestRecord(
            mono=start,
            wall=time.time(),
            method=request.method,
            path=path,
            route=f"{request.method} {rel}",
            kind=kind,
            query=dict(request.query),
            headers=dict(request.headers),
        )
        self.requests.append(record)
        extra_headers: dict[str, str] = {}
        try:
            try:
                record.json, record.parts = await self._read_body(request)
            finally:
                request[_RECORD] = record
            if self.config.latency > 0:
                await asyncio.sleep(self.config.latency)
            limited = None
            if kind == "bot":
                if request.headers.get("Authorization") != f"Bot {self.config.token}":
                    raise DiscordError(401, 0, "401: Unauthorized")
                limited = self._limit_bot(request, record, extra_headers)
            elif kind == "webhook":
                limited = self._limit_webhook(request, record, extra_headers)
            if limited is not None:
                response: web.StreamResponse = limited
            else:
                response = await handler(request)
                if kind == "bot" and self.config.bot_reply_delay > 0:
                    await asyncio.sleep(self.config.bot_reply_delay)
        except DiscordError as err:
            response = json_reply(err.body(), err.status)
            self._note_interaction_error(request, record, err)
        except web.HTTPException as exc:
            if exc.status in (404, 405) and kind in ("bot", "webhook"):
                response = json_reply(
                    {"message": f"{exc.status}: {exc.reason}", "code": 0}, exc.status
                )
            else:
                raise
        for key, value in extra_headers.items():
            response.headers.setdefault(key, value)
        record.status = response.status
        record.duration = time.monotonic() - start
        if isinstance(response, web.Response) and response.content_type == "application/json":
            body = response.body
            if isinstance(body, bytes):
                record.response = json.loads(body)
        self._changed()
        return response

    def _note_interaction_error(
        self, request: web.Request, record: RequestRecord, err: DiscordError
    ) -> None:
        token = request.match_info.get("token")
        if token is None:
            return
        rec = self._by_token.get(token)
        if rec is not None:
            rec.errors.append((record.route, err.code))

    def _too_many(
        self,
        record: RequestRecord,
        retry_after: float,
        *,
        is_global: bool,
        scope: str,
        headers: dict[str, str],
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
        self.rate_limited_count += 1
        return json_reply(body, 429, headers)

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

    # -----------------------------------------------------------------------------------------
    # Validation
    # -----------------------------------------------------------------------------------------

    def _validate_content(self, content: Any) -> str:
        if content is None:
            return ""
        if not isinstance(content, str):
            raise invalid_form(field_error("content", "BASE_TYPE_STRING", "Must be a string."))
        if len(content) > self.config.max_content_length:
            raise invalid_form(
                field_error(
                    "content",
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {self.config.max_content_length} or fewer in length.",
                )
            )
        return content

    @staticmethod
    def _validate_embeds(embeds: Any) -> list[dict[str, Any]]:
        if embeds is None:
            return []
        if not isinstance(embeds, list):
            raise invalid_form(field_error("embeds", "BASE_TYPE_ARRAY", "Must be an array."))
        if len(embeds) > 10:
            raise invalid_form(
                field_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
            )
        total = 0
        limits = {"title": 256, "description": 4096}
        for i, embed in enumerate(embeds):
            for key, limit in limits.items():
                text = str(embed.get(key) or "")
                total += len(text)
                if len(text) > limit:
                    raise invalid_form(
                        field_error(
                            f"embeds.{i}.{key}",
                            "BASE_TYPE_MAX_LENGTH",
                            f"Must be {limit} or fewer in length.",
                        )
                    )
            fields = embed.get("fields") or []
            if len(fields) > 25:
                raise invalid_form(
                    field_error(
                        f"embeds.{i}.fields",
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 25 or fewer in length.",
                    )
                )
            for j, fld in enumerate(fields):
                for key, limit in (("name", 256), ("value", 1024)):
                    text = str(fld.get(key) or "")
                    total += len(text)
                    if len(text) > limit:
                        raise invalid_form(
                            field_error(
                                f"embeds.{i}.fields.{j}.{key}",
                                "BASE_TYPE_MAX_LENGTH",
                                f"Must be {limit} or fewer in length.",
                            )
                        )
            total += len(str((embed.get("footer") or {}).get("text") or ""))
            total += len(str((embed.get("author") or {}).get("name") or ""))
        if total > 6000:
            raise invalid_form(
                field_error(
                    "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
                )
            )
        return list(embeds)

    @staticmethod
    def _validate_components(components: Any, flags: int) -> list[dict[str, Any]]:
        if components is None:
            return []
        if not isinstance(components, list):
            raise invalid_form(field_error("components", "BASE_TYPE_ARRAY", "Must be an array."))
        if not flags & MessageFlag.IS_COMPONENTS_V2 and len(components) > 5:
            raise invalid_form(
                field_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
            )
        seen: set[str] = set()
        for i, row in enumerate(components):
            children = row.get("components") or []
            if row.get("type") == 1 and len(children) > 5:
                raise invalid_form(
                    field_error(
                        f"components.{i}.components",
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 5 or fewer in length.",
                    )
                )
            for j, child in enumerate(children):
                custom_id = child.get("custom_id")
                where = f"components.{i}.components.{j}"
                if custom_id is not None:
                    if len(custom_id) > 100:
                        raise invalid_form(
                            field_error(
                                f"{where}.custom_id",
                                "BASE_TYPE_MAX_LENGTH",
                                "Must be 100 or fewer in length.",
                            )
                        )
                    if custom_id in seen:
                        raise invalid_form(
                            field_error(
                                f"{where}.custom_id",
                                "COMPONENT_CUSTOM_ID_DUPLICATED",
                                "Component custom id cannot be duplicated",
                            )
                        )
                    seen.add(custom_id)
                if len(str(child.get("label") or "")) > 80:
                    raise invalid_form(
                        field_error(
                            f"{where}.label",
                            "BASE_TYPE_MAX_LENGTH",
                            "Must be 80 or fewer in length.",
                        )
                    )
        return list(components)

    def _uploaded(
        self,
        request: web.Request,
        body: dict[str, Any],
        channel_id: int,
        *,
        ephemeral: bool = False,
    ) -> dict[int, StoredFile]:
        """Stores the ``files[n]`` parts byte for byte; keyed by n. Uploading takes Attach
        Files, for channel messages and interaction responses alike (``app_permissions``)."""
        parts = self._record(request).files
        uploading = any(re.fullmatch(r"files\[\d+\]", part.name) for part in parts)
        if uploading and not self.app_permissions(channel_id) & Perm.ATTACH_FILES:
            raise missing_permissions()
        descriptions: dict[int, str | None] = {}
        for item in body.get("attachments") or []:
            with contextlib.suppress(TypeError, ValueError, KeyError):
                descriptions[int(item["id"])] = item.get("description")
        out: dict[int, StoredFile] = {}
        for part in parts:
            match = re.fullmatch(r"files\[(\d+)\]", part.name)
            if match is None:
                continue
            if len(part.data) > self.config.attachment_size_limit:
                raise DiscordError(413, 40005, "Request entity too large")
            index = int(match.group(1))
            out[index] = self._store_file(
                channel_id,
                part.filename or f"file{index}",
                part.data,
                part.content_type,
                descriptions.get(index),
                ephemeral=ephemeral,
            )
        return out

    @staticmethod
    def _attachment_list(
        body: dict[str, Any],
        uploaded: dict[int, StoredFile],
        existing: Mapping[int, StoredFile],
        keep_existing: Sequence[StoredFile],
    ) -> list[StoredFile] | None:
        """The attachments a create/edit ends with, or None to leave them unchanged."""
        if "attachments" in body and body["attachments"] is not None:
            result: list[StoredFile] = []
            for item in body["attachments"]:
                ident = int(item["id"])
                if ident in existing:
                    result.append(existing[ident])
                elif ident in uploaded:
                    result.append(uploaded[ident])
                else:
                    raise invalid_form(
                        field_error(
                            "attachments", "ATTACHMENT_NOT_FOUND", f"Unknown attachment {ident}"
                        )
                    )
            return result
        if uploaded:
            return [*keep_existing, *(uploaded[i] for i in sorted(uploaded))]
        return None

    def _check_not_empty(
        self,
        content: str,
        embeds: list[Any],
        files: Sequence[StoredFile],
        components: list[Any],
        body: dict[str, Any],
    ) -> None:
        if content.strip() or embeds or files or components:
            return
        if body.get("sticker_ids") or body.get("poll"):
            return
        raise DiscordError(400, 50006, "Cannot send an empty message")

    # -----------------------------------------------------------------------------------------
    # REST: users, application, gateway, guilds
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

    async def _get_user(self, request: web.Request) -> web.StreamResponse:
        user = self.users.get(_int(request.match_info["user_id"]))
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return json_reply(user.payload())

    async def _create_dm(self, request: web.Request) -> web.StreamResponse:
        body = self._body(request)
        user = self.users.get(_int(body.get("recipient_id")))
        if user is None:
            raise invalid_form(field_error("recipient_id", "NUMBER_TYPE_COERCE", "Unknown user"))
        return json_reply(self.dm_channel(user).payload())

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

    def _bot_guild(self, request: web.Request) -> FakeGuild:
        guild = self.guilds.get(_int(request.match_info["guild_id"]))
        if guild is None:
            raise DiscordError(404, 10004, "Unknown Guild")
        if self.bot_user.id not in guild.members:
            raise DiscordError(403, 50001, "Missing Access")
        return guild

    async def _get_guild(self, request: web.Request) -> web.StreamResponse:
        guild = self._bot_guild(request)
        data = self._guild_payload(guild)
        for key in ("members", "channels", "threads", "presences", "voice_states", "joined_at"):
            data.pop(key, None)
        return json_reply(data)

    async def _get_member(self, request: web.Request) -> web.StreamResponse:
        guild = self._bot_guild(request)
        member = guild.members.get(_int(request.match_info["user_id"]))
        if member is None:
            raise DiscordError(404, 10007, "Unknown Member")
        return json_reply(member.payload())

    # -----------------------------------------------------------------------------------------
    # REST: channels and messages
    # -----------------------------------------------------------------------------------------

    def _bot_channel(self, request: web.Request, *, need: int = Perm.VIEW_CHANNEL) -> FakeChannel:
        channel = self.channels.get(_int(request.match_info["channel_id"]))
        if channel is None:
            raise unknown_channel()
        if channel.is_dm:
            if self._dms.get(channel.recipients[0].id) != channel.id:
                raise unknown_channel()
            return channel
        perms = self.permissions_in(channel, self.bot_user)
        if not perms & Perm.VIEW_CHANNEL:
            raise DiscordError(403, 50001, "Missing Access")
        if perms & need != need:
            raise missing_permissions()
        return channel

    def _channel_message(self, request: web.Request, channel: FakeChannel) -> MessageRecord:
        rec = self.messages.get(_int(request.match_info["message_id"]))
        if rec is None or rec.channel_id != channel.id or rec.deleted or rec.ephemeral:
            raise unknown_message()
        return rec

    async def _get_channel(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        data = self._channel_payload_for(channel, self.bot_user)
        data.pop("permissions", None)
        return json_reply(data)

    async def _patch_channel(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        body = self._body(request)
        if channel.is_thread:
            is_owner = channel.owner_id == self.bot_user.id
            if (
                not is_owner
                and not self.permissions_in(channel, self.bot_user) & Perm.MANAGE_THREADS
            ):
                raise missing_permissions()
        elif not self.permissions_in(channel, self.bot_user) & Perm.MANAGE_CHANNELS:
            raise missing_permissions()
        if "name" in body:
            name = str(body["name"] or "")
            if not 1 <= len(name) <= 100:
                raise invalid_form(
                    field_error(
                        "name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                    )
                )
            channel.name = name
        for key in ("archived", "locked", "invitable"):
            if key in body and body[key] is not None:
                setattr(channel, key, bool(body[key]))
        if body.get("auto_archive_duration"):
            channel.auto_archive_duration = int(body["auto_archive_duration"])
        if "topic" in body and not channel.is_thread:
            channel.topic = body["topic"]
        payload = channel.payload()
        event = "THREAD_UPDATE" if channel.is_thread else "CHANNEL_UPDATE"
        self._dispatch_guild(event, channel.guild_id, lambda s: payload, Intents.GUILDS)
        self._changed()
        return json_reply(payload)

    async def _get_messages(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request, need=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        query = request.query
        limit = int(query.get("limit", "50"))
        if not 1 <= limit <= 100:
            raise invalid_form(
                field_error("limit", "NUMBER_TYPE_MAX", "Must be between 1 and 100.")
            )
        visible = [m for m in self.messages_in(channel)]
        if "before" in query:
            visible = [m for m in visible if m.id < int(query["before"])]
            visible = visible[-limit:]
        elif "after" in query:
            visible = [m for m in visible if m.id > int(query["after"])][:limit]
        elif "around" in query:
            around = int(query["around"])
            older = [m for m in visible if m.id <= around][-(limit - limit // 2) :]
            newer = [m for m in visible if m.id > around][: limit // 2]
            visible = older + newer
        else:
            visible = visible[-limit:]
        return json_reply([self.message_payload(m) for m in reversed(visible)])

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        need = Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES
        if not channel.is_dm and not self.permissions_in(channel, self.bot_user) & need:
            raise missing_permissions()
        if channel.is_thread and channel.locked:
            raise DiscordError(400, 50083, "Thread is archived")
        body = self._body(request)
        flags = int(body.get("flags") or 0)
        if flags & ~SENDABLE_FLAGS or flags & MessageFlag.EPHEMERAL:
            raise invalid_form(field_error("flags", "MESSAGE_FLAGS_INVALID", "Invalid flags"))
        content = self._validate_content(body.get("content"))
        embeds = self._validate_embeds(body.get("embeds"))
        components = self._validate_components(body.get("components"), flags)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            previous = self._nonces.get((channel.id, self.bot_user.id, str(nonce)))
            if previous is not None and previous in self.messages:
                return json_reply(self.message_payload(self.messages[previous]))
        uploaded = self._uploaded(request, body, channel.id)
        files = self._attachment_list(body, uploaded, {}, []) or []
        self._check_not_empty(content, embeds, files, components, body)
        reference = self._reference(channel, body.get("message_reference"))
        rec = self._new_message(
            channel,
            self.bot_user,
            content=content,
            embeds=embeds,
            components=components,
            files=files,
            flags=flags,
            type=19 if reference else 0,
            reference=reference,
            allowed_mentions=body.get("allowed_mentions"),
            nonce=nonce,
            tts=bool(body.get("tts")),
        )
        if nonce is not None:
            self._nonces[(channel.id, self.bot_user.id, str(nonce))] = rec.id
        return json_reply(self.message_payload(rec))

    def _reference(self, channel: FakeChannel, ref: Any) -> dict[str, Any] | None:
        if not ref:
            return None
        message_id = _int(ref.get("message_id"))
        channel_id = _int(ref.get("channel_id") or channel.id)
        target = self.messages.get(message_id)
        if target is None or target.deleted or target.channel_id != channel_id:
            if ref.get("fail_if_not_exists", True):
                raise invalid_form(
                    field_error(
                        "message_reference",
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                        "Unknown message",
                    )
                )
            return None
        payload = {
            "type": int(ref.get("type") or 0),
            "message_id": str(target.id),
            "channel_id": str(target.channel_id),
        }
        if target.guild_id is not None:
            payload["guild_id"] = str(target.guild_id)
        return payload

    async def _get_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request, need=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        return json_reply(self.message_payload(self._channel_message(request, channel)))

    def _apply_edit_body(
        self,
        request: web.Request,
        rec: MessageRecord,
        body: dict[str, Any],
        *,
        clear_loading: bool = False,
    ) -> None:
        flags = rec.flags
        if "flags" in body and body["flags"] is not None:
            flags = (rec.flags & ~EDITABLE_FLAGS) | (int(body["flags"]) & EDITABLE_FLAGS)
        if clear_loading:
            flags &= ~MessageFlag.LOADING
        content = self._validate_content(body["content"]) if "content" in body else rec.content
        embeds = self._validate_embeds(body["embeds"]) if "embeds" in body else rec.embeds
        components = (
            self._validate_components(body["components"], flags)
            if "components" in body
            else rec.components
        )
        uploaded = self._uploaded(request, body, rec.channel_id, ephemeral=rec.ephemeral)
        current = rec.attachment_files
        files = self._attachment_list(body, uploaded, {f.id: f for f in current}, current)
        final_files = current if files is None else files
        self._check_not_empty(content, embeds, final_files, components, body)
        for f in final_files:
            rec.files[f.id] = f
        self._edit(
            rec,
            content=content,
            embeds=embeds,
            components=components,
            attachments=None if files is None else [f.payload() for f in files],
            flags=flags,
        )

    async def _patch_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        rec = self._channel_message(request, channel)
        if rec.author.id != self.bot_user.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit_body(request, rec, self._body(request))
        return json_reply(self.message_payload(rec))

    async def _delete_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        rec = self._channel_message(request, channel)
        if rec.author.id != self.bot_user.id and not channel.is_dm:
            if not self.permissions_in(channel, self.bot_user) & Perm.MANAGE_MESSAGES:
                raise missing_permissions()
        elif rec.author.id != self.bot_user.id:
            raise missing_permissions()
        self._delete(rec)
        return empty_reply()

    async def _typing(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        self.typing.append((time.monotonic(), channel.id, self.bot_user.id))
        self._changed()
        return empty_reply()

    async def _start_thread(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        if channel.is_dm or channel.is_thread:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        body = self._body(request)
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise invalid_form(
                field_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            )
        starter: MessageRecord | None = None
        if "message_id" in request.match_info:
            starter = self._channel_message(request, channel)
            if starter.thread_id is not None:
                raise DiscordError(
                    400, 160004, "A thread has already been created for this message"
                )
            ttype = ChannelType.PUBLIC_THREAD
        else:
            ttype = int(body.get("type") or ChannelType.PRIVATE_THREAD)
            if ttype not in (ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD):
                raise invalid_form(field_error("type", "BASE_TYPE_CHOICES", "Invalid thread type"))
        need = (
            Perm.CREATE_PUBLIC_THREADS
            if ttype == ChannelType.PUBLIC_THREAD
            else Perm.CREATE_PRIVATE_THREADS
        )
        if not self.permissions_in(channel, self.bot_user) & need:
            raise missing_permissions()
        duration = int(body.get("auto_archive_duration") or 1440)
        if duration not in (60, 1440, 4320, 10080):
            raise invalid_form(
                field_error("auto_archive_duration", "BASE_TYPE_CHOICES", "Invalid duration")
            )
        thread = FakeChannel(
            starter.id if starter is not None else self.snowflake(),
            ttype,
            name,
            channel.guild_id,
            parent_id=channel.id,
            owner_id=self.bot_user.id,
            auto_archive_duration=duration,
            invitable=bool(body.get("invitable", True)),
            rate_limit_per_user=int(body.get("rate_limit_per_user") or 0),
            member_ids={self.bot_user.id},
        )
        self.channels[thread.id] = thread
        self._guild(channel.guild_id).channel_ids.append(thread.id)
        self._dispatch_thread_create(thread)
        if starter is not None:
            starter.thread_id = thread.id
            self._edit(starter, flags=starter.flags | MessageFlag.HAS_THREAD)
        self._changed()
        data = self._channel_payload_for(thread, self.bot_user)
        data.pop("permissions", None)
        return json_reply(data, 201)

    async def _join_thread(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        if not channel.is_thread:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        channel.member_ids.add(self.bot_user.id)
        self._changed()
        return empty_reply()

    async def _put_reaction(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request, need=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        rec = self._channel_message(request, channel)
        emoji = request.match_info["emoji"]
        rec.reactions.setdefault(emoji, set()).add(self.bot_user.id)
        self._dispatch_reaction("MESSAGE_REACTION_ADD", rec, self.bot_user, emoji)
        self._changed()
        return empty_reply()

    async def _delete_reaction(self, request: web.Request) -> web.StreamResponse:
        channel = self._bot_channel(request)
        rec = self._channel_message(request, channel)
        emoji = request.match_info["emoji"]
        rec.reactions.get(emoji, set()).discard(self.bot_user.id)
        self._dispatch_reaction("MESSAGE_REACTION_REMOVE", rec, self.bot_user, emoji)
        self._changed()
        return empty_reply()

    # -----------------------------------------------------------------------------------------
    # REST: application commands
    # -----------------------------------------------------------------------------------------

    def _command_store(self, request: web.Request) -> list[dict[str, Any]]:
        if _int(request.match_info["application_id"]) != self.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        if "guild_id" not in request.match_info:
            return self.global_commands
        guild = self._bot_guild(request)
        return self.guild_commands.setdefault(guild.id, [])

    def _validate_command(self, index: str, cmd: Any) -> None:
        if not isinstance(cmd, dict):
            raise invalid_form(field_error(index, "DICT_TYPE_CONVERT", "Must be an object."))
        ctype = int(cmd.get("type") or 1)
        name = str(cmd.get("name") or "")
        prefix = f"{index}." if index else ""
        if not COMMAND_NAME.match(name) or (ctype == 1 and name != name.lower()):
            raise invalid_form(
                field_error(
                    f"{prefix}name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            )
        if ctype == 1:
            description = str(cmd.get("description") or "")
            if not 1 <= len(description) <= 100:
                raise invalid_form(
                    field_error(
                        f"{prefix}description",
                        "BASE_TYPE_BAD_LENGTH",
                        "Must be between 1 and 100 in length.",
                    )
                )
        self._validate_options(f"{prefix}options", cmd.get("options") or [])

    def _validate_options(self, where: str, options: list[dict[str, Any]]) -> None:
        if len(options) > 25:
            raise invalid_form(
                field_error(where, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            )
        seen_optional = False
        names: set[str] = set()
        for i, opt in enumerate(options):
            name = str(opt.get("name") or "")
            if not COMMAND_NAME.match(name) or name != name.lower():
                raise invalid_form(
                    field_error(
                        f"{where}.{i}.name",
                        "APPLICATION_COMMAND_INVALID_NAME",
                        "Command name is invalid",
                    )
                )
            if name in names:
                raise invalid_form(
                    field_error(
                        f"{where}.{i}.name",
                        "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                        "Option names must be unique",
                    )
                )
            names.add(name)
            description = str(opt.get("description") or "")
            if not 1 <= len(description) <= 100:
                raise invalid_form(
                    field_error(
                        f"{where}.{i}.description",
                        "BASE_TYPE_BAD_LENGTH",
                        "Must be between 1 and 100 in length.",
                    )
                )
            if opt.get("type") in (1, 2):
                self._validate_options(f"{where}.{i}.options", opt.get("options") or [])
                continue
            if opt.get("required"):
                if seen_optional:
                    raise invalid_form(
                        field_error(
                            f"{where}.{i}.required",
                            "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                            "Required options must be placed before non-required options",
                        )
                    )
            else:
                seen_optional = True
            if len(opt.get("choices") or []) > 25:
                raise invalid_form(
                    field_error(
                        f"{where}.{i}.choices",
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 25 or fewer in length.",
                    )
                )

    def _stored_command(
        self, cmd: dict[str, Any], store: list[dict[str, Any]], guild_id: str | None
    ) -> dict[str, Any]:
        ctype = int(cmd.get("type") or 1)
        old = next((c for c in store if c["name"] == cmd["name"] and c["type"] == ctype), None)
        stored: dict[str, Any] = {
            "id": old["id"] if old else str(self.snowflake()),
            "application_id": str(self.application_id),
            "version": str(self.snowflake()),
            "default_member_permissions": None,
            "type": ctype,
            "nsfw": False,
            "description": "",
            "options": [],
            "contexts": None,
            "integration_types": [0],
            **cmd,
        }
        stored["type"] = ctype
        if guild_id is not None:
            stored["guild_id"] = guild_id
        else:
            stored.setdefault("dm_permission", True)
        return stored

    async def _get_commands(self, request: web.Request) -> web.StreamResponse:
        return json_reply(self._command_store(request))

    async def _put_commands(self, request: web.Request) -> web.StreamResponse:
        store = self._command_store(request)
        body = self._record(request).payload or []
        if not isinstance(body, list):
            raise invalid_form(field_error("_root", "BASE_TYPE_ARRAY", "Must be an array."))
        seen: set[tuple[str, int]] = set()
        for i, cmd in enumerate(body):
            self._validate_command(str(i), cmd)
            key = (cmd["name"], int(cmd.get("type") or 1))
            if key in seen:
                raise invalid_form(
                    field_error(
                        f"{i}.name",
                        "APPLICATION_COMMAND_ALREADY_EXISTS",
                        "Application command names must be unique",
                    )
                )
            seen.add(key)
        guild_id = request.match_info.get("guild_id")
        new = [self._stored_command(cmd, store, guild_id) for cmd in body]
        store[:] = new
        self._changed()
        return json_reply(new)

    async def _post_command(self, request: web.Request) -> web.StreamResponse:
        store = self._command_store(request)
        body = self._body(request)
        self._validate_command("", body)
        stored = self._stored_command(body, store, request.match_info.get("guild_id"))
        existed = any(c["id"] == stored["id"] for c in store)
        store[:] = [c for c in store if c["id"] != stored["id"]] + [stored]
        self._changed()
        return json_reply(stored, 200 if existed else 201)

    # -----------------------------------------------------------------------------------------
    # REST: interactions and their webhooks
    # -----------------------------------------------------------------------------------------

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        rec = self._by_token.get(info["token"])
        if rec is None or str(rec.id) != info["interaction_id"]:
            raise unknown_interaction()
        body = self._body(request)
        now = time.monotonic()
        ctype = int(body.get("type") or 0)
        attempt = CallbackRecord(now, time.time(), ctype, body.get("data"), 0)
        try:
            if rec.callback is not None:
                raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
            if now > rec.created_mono + rec.ack_deadline:
                raise unknown_interaction()
            message = self._apply_callback(request, rec, ctype, body.get("data") or {})
        except DiscordError as err:
            attempt.status, attempt.error_code = err.status, err.code
            rec.rejected.append(attempt)
            raise
        attempt.status = 200
        rec.callback = attempt
        self._changed()
        with_response = request.query.get("with_response", "").lower() in ("1", "true")
        if not with_response:
            return empty_reply()
        reply: dict[str, Any] = {
            "interaction": {
                "id": str(rec.id),
                "type": rec.type,
                "response_message_loading": ctype == CallbackType.DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": bool(message is not None and message.ephemeral),
            },
            "resource": {"type": ctype},
        }
        if message is not None:
            reply["interaction"]["response_message_id"] = str(message.id)
            if ctype in (4, 5, 7):
                reply["resource"]["message"] = self.message_payload(message)
        return json_reply(reply)

    def _apply_callback(
        self, request: web.Request, rec: InteractionRecord, ctype: int, data: dict[str, Any]
    ) -> MessageRecord | None:
        allowed = {
            InteractionType.APPLICATION_COMMAND: (4, 5, 9),
            InteractionType.MESSAGE_COMPONENT: (4, 5, 6, 7, 9),
            InteractionType.AUTOCOMPLETE: (8,),
            InteractionType.MODAL_SUBMIT: (4, 5, 6, 7),
            InteractionType.PING: (1,),
        }[rec.type]
        if ctype not in allowed:
            raise invalid_form(
                field_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid response type")
            )
        channel = self.channels[rec.channel_id]
        msg_type = 20 if rec.type == InteractionType.APPLICATION_COMMAND else 0
        if ctype == CallbackType.CHANNEL_MESSAGE:
            rec.original = self._webhook_message(request, rec, channel, data, msg_type)
            return rec.original
        if ctype == CallbackType.DEFERRED_CHANNEL_MESSAGE:
            ephemeral = bool(int(data.get("flags") or 0) & MessageFlag.EPHEMERAL)
            rec.original = self._new_message(
                channel,
                self.bot_user,
                content="",
                flags=MessageFlag.LOADING | (MessageFlag.EPHEMERAL if ephemeral else 0),
                type=msg_type,
                visible_to=rec.user.id if ephemeral else None,
                interaction=rec,
                source="interaction",
            )
            return rec.original
        if ctype in (CallbackType.DEFERRED_UPDATE_MESSAGE, CallbackType.UPDATE_MESSAGE):
            target = self.messages.get(rec.message_id or 0)
            if target is None or target.deleted:
                raise unknown_message()
            rec.original = target
            if ctype == CallbackType.UPDATE_MESSAGE:
                self._apply_edit_body(request, target, data)
            return target
        if ctype == CallbackType.AUTOCOMPLETE_RESULT:
            choices = data.get("choices") or []
            if len(choices) > 25:
                raise invalid_form(
                    field_error(
                        "data.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                    )
                )
            rec.autocomplete_choices = list(choices)
            return None
        if ctype == CallbackType.MODAL:
            rec.modal = data
            return None
        return None

    def _webhook_message(
        self,
        request: web.Request,
        rec: InteractionRecord,
        channel: FakeChannel,
        data: dict[str, Any],
        msg_type: int,
    ) -> MessageRecord:
        flags = int(data.get("flags") or 0)
        ephemeral = bool(flags & MessageFlag.EPHEMERAL)
        content = self._validate_content(data.get("content"))
        embeds = self._validate_embeds(data.get("embeds"))
        components = self._validate_components(data.get("components"), flags)
        uploaded = self._uploaded(request, data, channel.id, ephemeral=ephemeral)
        files = self._attachment_list(data, uploaded, {}, []) or []
        self._check_not_empty(content, embeds, files, components, data)
        return self._new_message(
            channel,
            self.bot_user,
            content=content,
            embeds=embeds,
            components=components,
            files=files,
            flags=flags & SENDABLE_FLAGS,
            type=msg_type,
            allowed_mentions=data.get("allowed_mentions"),
            visible_to=rec.user.id if ephemeral else None,
            interaction=rec,
            source="interaction",
            tts=bool(data.get("tts")),
        )

    def _webhook_interaction(self, request: web.Request) -> InteractionRecord:
        info = request.match_info
        rec = self._by_token.get(info["token"])
        if rec is None or _int(info["application_id"]) != self.application_id:
            raise unknown_webhook()
        if rec.token_expired:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        return rec

    def _webhook_target(self, request: web.Request, rec: InteractionRecord) -> MessageRecord:
        ident = request.match_info["message_id"]
        if ident == "@original":
            target = rec.original
        else:
            target = next((m for m in rec.messages if str(m.id) == ident), None)
        if target is None or target.deleted:
            raise unknown_message()
        return target

    async def _followup(self, request: web.Request) -> web.StreamResponse:
        rec = self._webhook_interaction(request)
        if rec.callback is None:
            raise unknown_webhook()
        body = self._body(request)
        original = rec.original
        if original is not None and not original.deleted and original.latest.loading:
            # Discord: the first followup after a deferred (type 5) response replaces the
            # "thinking" message and keeps the defer's visibility.
            self._apply_edit_body(request, original, body, clear_loading=True)
            message = original
            rec.followups.append(message)
        else:
            channel = self.channels[rec.channel_id]
            msg_type = 20 if rec.type == InteractionType.APPLICATION_COMMAND else 0
            message = self._webhook_message(request, rec, channel, body, msg_type)
            rec.followups.append(message)
        self._changed()
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_reply(self.message_payload(message))
        return empty_reply()

    async def _wh_get(self, request: web.Request) -> web.StreamResponse:
        rec = self._webhook_interaction(request)
        return json_reply(self.message_payload(self._webhook_target(request, rec)))

    async def _wh_patch(self, request: web.Request) -> web.StreamResponse:
        rec = self._webhook_interaction(request)
        target = self._webhook_target(request, rec)
        if target.author.id != self.bot_user.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit_body(request, target, self._body(request), clear_loading=True)
        return json_reply(self.message_payload(target))

    async def _wh_delete(self, request: web.Request) -> web.StreamResponse:
        rec = self._webhook_interaction(request)
        target = self._webhook_target(request, rec)
        self._delete(target)
        return empty_reply()

    # -----------------------------------------------------------------------------------------
    # CDN
    # -----------------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        stored = self.files.get(_int(request.match_info["file_id"]))
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _wall_dt(wall: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(wall, tz=dt.UTC)


def _emoji_payload(name: str) -> dict[str, Any]:
    match = re.fullmatch(r"<?a?:?(\w+):(\d+)>?", name)
    if match:
        return {"id": match.group(2), "name": match.group(1)}
    return {"id": None, "name": name}


def _find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    for component in components:
        if component.get("custom_id") == custom_id:
            return component
        for key in ("components", "accessory"):
            children = component.get(key)
            if isinstance(children, dict):
                children = [children]
            if isinstance(children, list):
                found = _find_component(children, custom_id)
                if found is not None:
                    return found
    return None
