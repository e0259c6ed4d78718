"""Users, guilds, members, roles, channels and DMs: the world a test builds, and the REST
reads of it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._state import ChannelRef, GuildRef, UserRef, _State
from ._util import (
    ChannelType,
    DiscordError,
    Intents,
    _int,
    field_error,
    invalid_form,
    json_reply,
    shard_of,
)
from .model import FakeChannel, FakeGuild, FakeMember, FakeRole, FakeUser

if TYPE_CHECKING:
    from ._gateway import GatewaySession


class _Guilds(_State):
    """Adds users, guilds, members, roles, channels and DMs (announcing each over the
    gateway) and serves them over REST."""

    # -----------------------------------------------------------------------------------------
    # World
    # -----------------------------------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False, global_name: str | None = None) -> FakeUser:
        user = FakeUser(self.world_snowflake(), name, bot=bot, global_name=global_name)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        owner: FakeUser | None = None,
        channels: Sequence[str] = ("general",),
        bot_permissions: int | None = None,
        shard: int | None = None,
    ) -> FakeGuild:
        """A guild the bot is in. ``shard``: its id is chosen so that Discord's formula,
        ``(guild_id >> 22) % shards``, puts it on that shard (of ``config.shards``)."""
        owner = owner or self.owner
        guild = FakeGuild(self._guild_snowflake(shard), name, owner.id)
        guild.roles[guild.id] = FakeRole(
            guild.id, guild.id, "@everyone", self.config.everyone_permissions
        )
        bot_role = FakeRole(
            self.world_snowflake(),
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
                self.world_snowflake(), ChannelType.GUILD_TEXT, channel_name, guild.id, position
            )
            self.channels[channel.id] = channel
            guild.channel_ids.append(channel.id)
        self._dispatch_guild("GUILD_CREATE", guild.id, lambda s: self._guild_payload(guild, s), 0)
        self._changed()
        return guild

    def _guild_snowflake(self, shard: int | None) -> int:
        if shard is None:
            return self.world_snowflake()
        if not 0 <= shard < self.config.shards:
            raise ValueError(f"shard {shard} is not one of the fake's {self.config.shards}")
        # A few draws: seeded ids are a millisecond apart, and clock ids reach the next
        # millisecond within one.
        while shard_of(snowflake := self.world_snowflake(), self.config.shards) != shard:
            pass
        return snowflake

    def add_role(
        self, guild: GuildRef, name: str, permissions: int = 0, *, mentionable: bool = False
    ) -> FakeRole:
        g = self._guild(guild)
        role = FakeRole(
            self.world_snowflake(), g.id, name, permissions, len(g.roles), mentionable=mentionable
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
            self.world_snowflake(),
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

    def dm_channel(self, user: UserRef) -> FakeChannel:
        """The DM channel between the bot and ``user`` (created on first use)."""
        return self._open_dm(user, self.world_snowflake)

    def _open_dm(self, user: UserRef, make_id: Callable[[], int]) -> FakeChannel:
        u = self._user(user)
        if u.id in self._dms:
            return self.channels[self._dms[u.id]]
        channel = FakeChannel(make_id(), ChannelType.DM, "", None, recipients=[u])
        self.channels[channel.id] = channel
        self._dms[u.id] = channel.id
        return channel

    # -----------------------------------------------------------------------------------------
    # Taking the world away
    # -----------------------------------------------------------------------------------------

    async def delete_channel(self, channel: ChannelRef) -> FakeChannel:
        """Someone deletes a guild channel or a thread, as Discord announces it:

        - a thread: THREAD_DELETE with ``{id, guild_id, parent_id, type}``;
        - any other channel: CHANNEL_DELETE with the channel object. Its threads go with it,
          without THREAD_DELETE of their own (clients drop a deleted channel's threads). A
          category's channels stay, with their ``parent_id`` removed and one CHANNEL_UPDATE
          each, as Discord documents.

        Afterwards REST calls on it answer 404 10003 Unknown Channel, it leaves the guild's
        channel list (and GUILD_CREATE), and test actions in it raise KeyError."""
        ch = self._channel(channel)
        if ch.guild_id is None:
            raise ValueError("only guild channels and threads are deleted this way")
        guild = self._guild(ch.guild_id)
        if ch.is_thread:
            gone = {
                "id": str(ch.id),
                "guild_id": str(guild.id),
                "parent_id": str(ch.parent_id),
                "type": ch.type,
            }
            self._forget_channel(guild, ch)
            self._dispatch_guild("THREAD_DELETE", guild.id, lambda s: gone, Intents.GUILDS)
        else:
            children = [self.channels[c] for c in guild.channel_ids]
            children = [c for c in children if c.parent_id == ch.id]
            payload = ch.payload()
            self._forget_channel(guild, ch)
            for thread in (c for c in children if c.is_thread):
                self._forget_channel(guild, thread)
            self._dispatch_guild("CHANNEL_DELETE", guild.id, lambda s: payload, Intents.GUILDS)
            for child in (c for c in children if not c.is_thread):
                child.parent_id = None
                self._announce_channel_update(child)
        self._changed()
        await self._flush()
        return ch

    async def remove_bot(self, guild: GuildRef) -> FakeGuild:
        """The bot is kicked from ``guild`` (or the guild is deleted): GUILD_DELETE
        ``{"id": ...}`` reaches the session covering it, without ``unavailable`` (that key
        would mean an outage, after which the guild comes back). From then on the guild and
        its channels are not the bot's: REST answers 404 (10004 Unknown Guild on guild routes,
        10003 Unknown Channel on its channels), no more events come for it, and test actions
        on it raise KeyError."""
        g = self._guild(guild)
        payload = {"id": str(g.id)}
        self._dispatch_guild("GUILD_DELETE", g.id, lambda s: payload, Intents.GUILDS)
        for channel_id in g.channel_ids:
            channel = self.channels.pop(channel_id)
            channel.deleted = True
            self.deleted_channels[channel_id] = channel
        g.members.pop(self.bot_user.id, None)
        g.bot_removed = True
        del self.guilds[g.id]
        self.removed_guilds[g.id] = g
        self._changed()
        await self._flush()
        return g

    def _announce_channel_update(self, channel: FakeChannel) -> None:
        payload = channel.payload()
        self._dispatch_guild("CHANNEL_UPDATE", channel.guild_id, lambda s: payload, Intents.GUILDS)

    def _forget_channel(self, guild: FakeGuild, channel: FakeChannel) -> None:
        channel.deleted = True
        del self.channels[channel.id]
        self.deleted_channels[channel.id] = channel
        guild.channel_ids.remove(channel.id)

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

    # -----------------------------------------------------------------------------------------
    # REST: users, DMs and guilds
    # -----------------------------------------------------------------------------------------

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
        # Opened while serving: an id from the clock, leaving the seeded world's ids alone.
        return json_reply(self._open_dm(user, self.snowflake).payload())

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
