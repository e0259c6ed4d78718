"""Small shared pieces of the fake: snowflakes, JSON replies, Discord's constants and errors."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000


class SnowflakeFactory:
    """Makes Discord snowflakes that encode the current time, strictly increasing."""

    def __init__(self, worker: int = 1, process: int = 1) -> None:
        self._worker = worker & 0x1F
        self._process = process & 0x1F
        self._increment = 0
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
            self._increment = (self._increment + 1) & 0xFFF
            value = (ms << 22) | (self._worker << 17) | (self._process << 12) | self._increment
            if value <= self._last:
                value = self._last + 1
            self._last = value
            return value


SEEDED_START_MS = 1735689600000  # 2025-01-01T00:00:00Z


class SeededSnowflakes:
    """Snowflakes from a seed instead of the clock: the n-th one made (n = 0, 1, 2...) is the
    same in every fake with that seed. Its timestamp part is 2025-01-01 00:00 UTC plus n
    milliseconds, so the ids increase and read as plausible creation times; the seed's low 22
    bits fill the worker, process and increment parts, so fakes with different seeds (below
    2**22) never make the same id."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"snowflake seed must not be negative, not {seed}")
        self._low = seed & 0x3FFFFF
        self._made = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            ms = SEEDED_START_MS - DISCORD_EPOCH_MS + self._made
            self._made += 1
        return (ms << 22) | self._low


def snowflake_time(snowflake: int) -> dt.datetime:
    ms = (snowflake >> 22) + DISCORD_EPOCH_MS
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events to; direct messages go to shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


def iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).isoformat()


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON reply whose Content-Type is exactly ``application/json`` (no charset).

    aiohttp's ``json_response`` appends ``; charset=utf-8``; discord.py compares the header
    with ``==`` and would then treat the body as text.
    """
    all_headers = {"Content-Type": "application/json"}
    if headers:
        all_headers.update(headers)
    return web.Response(body=dumps(data).encode(), status=status, headers=all_headers)


def empty_reply(status: int = 204, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers=headers or {})


class DiscordError(Exception):
    """An error reply with Discord's body: ``{"message", "code", "errors"?}``."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def field_error(path: str, code: str, message: str) -> dict[str, Any]:
    """Builds Discord's nested ``errors`` object for one field path like ``content`` or
    ``embeds.0.description``."""
    node: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".")):
        node = {key: node}
    return node


def invalid_form(errors: dict[str, Any]) -> DiscordError:
    return DiscordError(400, 50035, "Invalid Form Body", errors)


def unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


def unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def unknown_webhook() -> DiscordError:
    return DiscordError(404, 10015, "Unknown Webhook")


def unknown_interaction() -> DiscordError:
    return DiscordError(404, 10062, "Unknown interaction")


def missing_permissions() -> DiscordError:
    return DiscordError(403, 50013, "Missing Permissions")


# Gateway intents (bit values).
class Intents:
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    MESSAGE_CONTENT = 1 << 15
    GUILD_PRESENCES = 1 << 8
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


class ApplicationFlag:
    """The application's `flags` that say which privileged intents the portal has switched on:
    the plain flag once the app is verified, the `_LIMITED` one before (under 100 servers)."""

    GATEWAY_PRESENCE = 1 << 12
    GATEWAY_PRESENCE_LIMITED = 1 << 13
    GATEWAY_GUILD_MEMBERS = 1 << 14
    GATEWAY_GUILD_MEMBERS_LIMITED = 1 << 15
    GATEWAY_MESSAGE_CONTENT = 1 << 18
    GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19

    @classmethod
    def for_intents(cls, privileged_intents: int, *, verified: bool) -> int:
        pairs = (
            (Intents.GUILD_PRESENCES, cls.GATEWAY_PRESENCE, cls.GATEWAY_PRESENCE_LIMITED),
            (Intents.GUILD_MEMBERS, cls.GATEWAY_GUILD_MEMBERS, cls.GATEWAY_GUILD_MEMBERS_LIMITED),
            (
                Intents.MESSAGE_CONTENT,
                cls.GATEWAY_MESSAGE_CONTENT,
                cls.GATEWAY_MESSAGE_CONTENT_LIMITED,
            ),
        )
        flags = 0
        for intent, full, limited in pairs:
            if privileged_intents & intent:
                flags |= full if verified else limited
        return flags


# Permission bits used by the fake.
class Perm:
    CREATE_INSTANT_INVITE = 1 << 0
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1

    EVERYONE_DEFAULT = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | CHANGE_NICKNAME
        | USE_APPLICATION_COMMANDS
        | CREATE_PUBLIC_THREADS
        | CREATE_PRIVATE_THREADS
        | SEND_MESSAGES_IN_THREADS
    )
    BOT_DEFAULT = EVERYONE_DEFAULT | MANAGE_THREADS
    # Lost with the permission to send (implicit permissions).
    IMPLIED_BY_SENDING = SEND_TTS_MESSAGES | MENTION_EVERYONE | EMBED_LINKS | ATTACH_FILES
    # What an app may use in interaction responses, all it has in a DM with its bot user.
    IN_BOT_DM = ATTACH_FILES | EMBED_LINKS | MENTION_EVERYONE | USE_EXTERNAL_EMOJIS


class MessageFlag:
    SUPPRESS_EMBEDS = 1 << 2
    HAS_THREAD = 1 << 5
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_COMPONENTS_V2 = 1 << 15


class ChannelType:
    GUILD_TEXT = 0
    DM = 1
    GUILD_VOICE = 2
    GUILD_CATEGORY = 4
    GUILD_ANNOUNCEMENT = 5
    ANNOUNCEMENT_THREAD = 10
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12
    THREADS = (10, 11, 12)


class InteractionType:
    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class CallbackType:
    PONG = 1
    CHANNEL_MESSAGE = 4
    DEFERRED_CHANNEL_MESSAGE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    AUTOCOMPLETE_RESULT = 8
    MODAL = 9
    ALL = (1, 4, 5, 6, 7, 8, 9)


class OptionType:
    SUB_COMMAND = 1
    SUB_COMMAND_GROUP = 2
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    USER = 6
    CHANNEL = 7
    ROLE = 8
    MENTIONABLE = 9
    NUMBER = 10
    ATTACHMENT = 11


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
