"""Permissions as Discord computes them (roles, channel overwrites, implicit denials) and the
checks REST requests pass through."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._state import ChannelRef, UserRef, _State
from ._util import DiscordError, Intents, Perm, _int, iso, missing_permissions, unknown_channel
from .model import FakeChannel, FakeRole, FakeUser


class _Permissions(_State):
    """What a user may do in a channel, and the channel as that user sees it."""

    # -----------------------------------------------------------------------------------------
    # Permissions
    # -----------------------------------------------------------------------------------------

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

    # -----------------------------------------------------------------------------------------
    # Payloads
    # -----------------------------------------------------------------------------------------

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

    # -----------------------------------------------------------------------------------------
    # REST: the bot's access to a channel
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
