"""The fake's world (users, guilds, roles, channels) and its records (requests, messages,
interactions)."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._util import ChannelType, MessageFlag, Perm, iso, snowflake_time

# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class FakeUser:
    id: int
    name: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def __repr__(self) -> str:
        return f"FakeUser({self.id}, {self.name!r}{', bot' if self.bot else ''})"


@dataclass(eq=False)
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None
    mentionable: bool = False

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    guild_id: int
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso)

    def payload(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r) for r in self.role_ids],
            "nick": self.nick,
            "avatar": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        return data


@dataclass(eq=False)
class FakeChannel:
    id: int
    type: int
    name: str
    guild_id: int | None
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    last_message_id: int | None = None
    rate_limit_per_user: int = 0
    # Threads.
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    auto_archive_duration: int = 1440
    message_count: int = 0
    member_ids: set[int] = field(default_factory=set)
    # Guild channels (threads use their parent's): role or member id -> (type, allow, deny),
    # type 0 for a role (the guild's id is @everyone), 1 for a member.
    overwrites: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    # DMs.
    recipients: list[FakeUser] = field(default_factory=list)
    # Deleted (or in a guild the bot was removed from): unknown to REST and test actions.
    deleted: bool = False

    @property
    def is_thread(self) -> bool:
        return self.type in ChannelType.THREADS

    @property
    def is_dm(self) -> bool:
        return self.type == ChannelType.DM

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
            "flags": 0,
        }
        if self.is_dm:
            data["recipients"] = [u.payload() for u in self.recipients]
            return data
        data.update(
            guild_id=str(self.guild_id),
            position=self.position,
            parent_id=str(self.parent_id) if self.parent_id else None,
            rate_limit_per_user=self.rate_limit_per_user,
            nsfw=False,
        )
        if self.is_thread:
            created = iso(snowflake_time(self.id))
            data.update(
                owner_id=str(self.owner_id),
                message_count=self.message_count,
                total_message_sent=self.message_count,
                member_count=len(self.member_ids),
                thread_metadata={
                    "archived": self.archived,
                    "auto_archive_duration": self.auto_archive_duration,
                    "archive_timestamp": created,
                    "locked": self.locked,
                    "invitable": self.invitable,
                    "create_timestamp": created,
                },
            )
        else:
            overwrites = [
                {"id": str(target), "type": kind, "allow": str(allow), "deny": str(deny)}
                for target, (kind, allow, deny) in self.overwrites.items()
            ]
            data.update(topic=self.topic, permission_overwrites=overwrites)
        return data


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    joined_at: str = field(default_factory=iso)
    bot_removed: bool = False  # kicked or deleted: no longer the bot's

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    def permissions_of(self, user_id: int) -> int:
        member = self.members.get(user_id)
        if member is None:
            return 0
        if user_id == self.owner_id:
            return Perm.ALL
        perms = self.everyone.permissions
        for role_id in member.role_ids:
            role = self.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
        if perms & Perm.ADMINISTRATOR:
            return Perm.ALL
        return perms


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadFile:
    """A file a test user attaches (to a message or an attachment option)."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


def _image_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    return None


@dataclass(eq=False)
class StoredFile:
    """An attachment stored byte for byte and served by the fake's CDN route."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    proxy_url: str
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.proxy_url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        dims = _image_size(self.data)
        if dims is not None:
            data["width"], data["height"] = dims
        return data


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultipartPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(eq=False)
class RequestRecord:
    """One HTTP request as the fake saw and answered it."""

    mono: float
    wall: float
    method: str
    path: str
    route: str  # "POST /channels/{channel_id}/messages" (relative to /api/v10), or the path
    kind: str  # "bot", "webhook" (interaction/webhook routes), "cdn", "other"
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    parts: list[MultipartPart] = field(default_factory=list)
    status: int = 0
    response: Any = None
    bucket: str | None = None
    rate_limited: bool = False
    scope: str | None = None
    duration: float = 0.0

    @property
    def payload(self) -> Any:
        """The JSON body, or the ``payload_json`` part of a multipart body."""
        if self.json is not None:
            return self.json
        for part in self.parts:
            if part.name == "payload_json":
                return part.json()
        return None

    @property
    def files(self) -> list[MultipartPart]:
        return [p for p in self.parts if p.name.startswith("files[")]

    def __repr__(self) -> str:
        return (
            f"<{self.method} {self.path} -> {self.status}{' (429)' if self.rate_limited else ''}>"
        )


@dataclass(frozen=True)
class MessageVersion:
    """What a person saw of a message from ``mono`` (monotonic) / ``wall`` (time.time()) on."""

    mono: float
    wall: float
    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: list[dict[str, Any]]
    flags: int

    @property
    def loading(self) -> bool:
        return bool(self.flags & MessageFlag.LOADING)

    @property
    def attachment_names(self) -> list[str]:
        return [str(a["filename"]) for a in self.attachments]


@dataclass(eq=False)
class MessageRecord:
    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    versions: list[MessageVersion] = field(default_factory=list)
    type: int = 0
    visible_to: int | None = None  # ephemeral: the only user who sees it
    deleted_mono: float | None = None
    deleted_wall: float | None = None
    interaction_id: int | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    nonce: str | int | None = None
    reference: dict[str, Any] | None = None
    allowed_mentions: dict[str, Any] | None = None
    mention_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    reactions: dict[str, set[int]] = field(default_factory=dict)
    thread_id: int | None = None
    tts: bool = False
    edited_wall: float | None = None
    files: dict[int, StoredFile] = field(default_factory=dict)
    source: str = "rest"  # "user" (test-side), "rest", "interaction", "webhook"

    def add_version(
        self,
        *,
        content: str,
        embeds: list[dict[str, Any]],
        components: list[dict[str, Any]],
        attachments: list[dict[str, Any]],
        flags: int,
    ) -> MessageVersion:
        version = MessageVersion(
            time.monotonic(), time.time(), content, embeds, components, attachments, flags
        )
        self.versions.append(version)
        return version

    @property
    def latest(self) -> MessageVersion:
        return self.versions[-1]

    @property
    def content(self) -> str:
        return self.latest.content

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.latest.embeds

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.latest.components

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return self.latest.attachments

    @property
    def attachment_files(self) -> list[StoredFile]:
        """The stored files of the current version, in order."""
        return [self.files[int(a["id"])] for a in self.latest.attachments]

    @property
    def flags(self) -> int:
        return self.latest.flags

    @property
    def created_mono(self) -> float:
        return self.versions[0].mono

    @property
    def created_wall(self) -> float:
        return self.versions[0].wall

    @property
    def deleted(self) -> bool:
        return self.deleted_mono is not None

    @property
    def ephemeral(self) -> bool:
        return self.visible_to is not None

    @property
    def contents(self) -> list[str]:
        """The content of every version, oldest first."""
        return [v.content for v in self.versions]

    @property
    def pinged_user_ids(self) -> list[int]:
        """Users notified by this message (after ``allowed_mentions``)."""
        return list(self.mention_ids)

    def visible_for(self, user_id: int | None) -> bool:
        return self.visible_to is None or self.visible_to == user_id

    def __repr__(self) -> str:
        text = self.content if len(self.content) < 40 else self.content[:37] + "..."
        state = " deleted" if self.deleted else ""
        return (
            f"<Message {self.id} in {self.channel_id} by {self.author.name}: {text!r} "
            f"v{len(self.versions)}{state}>"
        )


@dataclass(eq=False)
class CallbackRecord:
    mono: float
    wall: float
    type: int
    data: dict[str, Any] | None
    status: int
    error_code: int | None = None


@dataclass(eq=False)
class InteractionRecord:
    """An interaction the test started, with everything the bot answered to it."""

    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    user: FakeUser
    data: dict[str, Any]
    payload: dict[str, Any]
    created_mono: float
    created_wall: float
    ack_deadline: float
    token_lifetime: float
    name: str | None = None
    custom_id: str | None = None
    message_id: int | None = None  # a component interaction's message
    callback: CallbackRecord | None = None
    rejected: list[CallbackRecord] = field(default_factory=list)
    original: MessageRecord | None = None
    followups: list[MessageRecord] = field(default_factory=list)
    autocomplete_choices: list[dict[str, Any]] | None = None
    modal: dict[str, Any] | None = None  # the modal the bot opened (callback type 9)
    modal_submission: InteractionRecord | None = None  # its MODAL_SUBMIT, once sent
    errors: list[tuple[str, int]] = field(default_factory=list)  # (route, Discord code)

    @property
    def acknowledged(self) -> bool:
        return self.callback is not None

    @property
    def response_type(self) -> int | None:
        return None if self.callback is None else self.callback.type

    @property
    def ack_latency(self) -> float | None:
        return None if self.callback is None else self.callback.mono - self.created_mono

    @property
    def deferred(self) -> bool:
        return self.response_type in (5, 6)

    @property
    def ephemeral(self) -> bool:
        return self.original is not None and self.original.ephemeral

    @property
    def did_not_respond(self) -> bool:
        """What the user sees as "The application did not respond"."""
        return self.callback is None and time.monotonic() > self.created_mono + self.ack_deadline

    @property
    def token_expired(self) -> bool:
        return time.monotonic() > self.created_mono + self.token_lifetime

    @property
    def messages(self) -> list[MessageRecord]:
        out = [self.original] if self.original is not None else []
        return out + [m for m in self.followups if m is not self.original]

    def __repr__(self) -> str:
        label = self.name or self.custom_id or ""
        return (
            f"<Interaction {self.id} type={self.type} {label!r} callback={self.response_type} "
            f"followups={len(self.followups)}>"
        )


def parse_ids(values: Sequence[Any] | None) -> list[int]:
    return [int(v) for v in values or []]
