"""Messages and channels: creating, editing and deleting messages (from REST and from tests),
their payloads and gateway events, the limits Discord validates, reactions and typing."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._state import ChannelRef, UserRef
from ._util import (
    DiscordError,
    Intents,
    MessageFlag,
    Perm,
    _int,
    empty_reply,
    field_error,
    invalid_form,
    iso,
    json_reply,
    missing_permissions,
    unknown_message,
)
from .model import (
    FakeChannel,
    FakeRole,
    FakeUser,
    InteractionRecord,
    MessageRecord,
    StoredFile,
    UploadFile,
    parse_ids,
)

if TYPE_CHECKING:
    from ._gateway import GatewaySession
from ._attachments import _Attachments
from ._permissions import _Permissions

USER_MENTION = re.compile(r"<@!?(\d{15,21})>")
ROLE_MENTION = re.compile(r"<@&(\d{15,21})>")

EDITABLE_FLAGS = MessageFlag.SUPPRESS_EMBEDS | MessageFlag.IS_COMPONENTS_V2
SENDABLE_FLAGS = (
    MessageFlag.SUPPRESS_EMBEDS
    | MessageFlag.EPHEMERAL
    | MessageFlag.SUPPRESS_NOTIFICATIONS
    | MessageFlag.IS_COMPONENTS_V2
)


class _Messages(_Attachments, _Permissions):
    """Messages as REST, interactions and test actions create them, and the channel
    routes around them."""

    # -----------------------------------------------------------------------------------------
    # Payloads
    # -----------------------------------------------------------------------------------------

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

    # -----------------------------------------------------------------------------------------
    # Messages (shared by REST and test-side actions)
    # -----------------------------------------------------------------------------------------

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
        self._channel(rec.channel_id)
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
        self._channel(rec.channel_id)
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
        ``as_user`` sees. A deleted channel keeps its messages here."""
        ch = self._channel(channel, deleted_ok=True)
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
    # REST: channels and messages
    # -----------------------------------------------------------------------------------------

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


def _wall_dt(wall: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(wall, tz=dt.UTC)


def _emoji_payload(name: str) -> dict[str, Any]:
    match = re.fullmatch(r"<?a?:?(\w+):(\d+)>?", name)
    if match:
        return {"id": match.group(2), "name": match.group(1)}
    return {"id": None, "name": name}
