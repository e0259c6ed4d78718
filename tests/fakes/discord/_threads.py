"""Threads: started by the bot over REST (from a message or not), added by tests, joined."""

from __future__ import annotations

from aiohttp import web

from ._messages import _Messages
from ._state import ChannelRef
from ._util import (
    ChannelType,
    DiscordError,
    Intents,
    MessageFlag,
    Perm,
    empty_reply,
    field_error,
    invalid_form,
    json_reply,
    missing_permissions,
)
from .model import FakeChannel, FakeUser, MessageRecord


class _Threads(_Messages):
    """Creates threads (announced with THREAD_CREATE) and lets the bot join them."""

    # -----------------------------------------------------------------------------------------
    # World
    # -----------------------------------------------------------------------------------------

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
            thread_id or self.world_snowflake(),
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

    # -----------------------------------------------------------------------------------------
    # Dispatching
    # -----------------------------------------------------------------------------------------

    def _dispatch_thread_create(self, thread: FakeChannel) -> None:
        payload = {**self._channel_payload_for(thread, self.bot_user), "newly_created": True}
        payload.pop("permissions", None)
        self._dispatch_guild("THREAD_CREATE", thread.guild_id, lambda s: payload, Intents.GUILDS)

    # -----------------------------------------------------------------------------------------
    # REST: threads
    # -----------------------------------------------------------------------------------------

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
