"""What admins set with /config for a server or a channel, and what a place runs with.

A setting's effective value is the channel's (a thread uses its parent channel's), else the
server's, else the deployment's. Every process keeps a small cache of servers' settings and asks
the database, with one read of the server's version, whether it is still current, so that a
change made through any process is used by all of them on their next request.
"""

from __future__ import annotations

import enum
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.conversation.tokens import output_limit
from bot.db.config_store import BudgetRule, ConfigStore, GuildConfig, LoggedChange, Values
from bot.errors import UserError
from bot.places import Place

MAX_SYSTEM_PROMPT = 4000
_CACHED_SERVERS = 1000


class Setting(enum.StrEnum):
    MODEL = "model"
    IMAGE_MODEL = "image_model"
    SYSTEM_PROMPT = "system_prompt"
    TEMPERATURE = "temperature"
    MAX_ANSWER_TOKENS = "max_answer_tokens"
    REPLY_MODE = "reply_mode"
    HISTORY = "history"
    ROLES = "roles"
    MEMORY = "memory"


class ReplyMode(enum.StrEnum):
    MENTION = "mention"  # mentions and replies to the bot
    ALL = "all"  # every message from a person
    THREAD = "thread"  # a mention opens a thread, answered there as /chat does
    OFF = "off"  # the bot ignores mentions, and its commands (but /config) say it is off


class History(enum.StrEnum):
    SHARED = "shared"  # one conversation per channel
    PERSONAL = "personal"  # each person their own in a channel (threads stay shared)


class Memory(enum.StrEnum):
    ON = "on"  # older turns are embedded and recalled when they no longer fit the history
    OFF = "off"


class Scope(enum.StrEnum):
    CHANNEL = "channel"
    SERVER = "server"


class Source(enum.StrEnum):
    """Where an effective value comes from."""

    CHANNEL = "channel"
    SERVER = "server"
    DEFAULT = "default"


@dataclass(frozen=True)
class PlaceSettings:
    """What requests in one place run with; `sources` says where each value comes from."""

    model: str
    image_model: str
    system_prompt: str
    temperature: float | None  # None: the model's own default
    max_answer_tokens: int | None  # None: the model's limit
    reply_mode: ReplyMode = ReplyMode.MENTION
    history: History = History.SHARED
    roles: frozenset[int] = frozenset()  # empty: everyone
    memory: Memory = Memory.ON
    sources: Mapping[Setting, Source] | None = None  # None: all the deployment's
    budgets: tuple[BudgetRule, ...] = ()  # the server's, set with /budget

    def value(self, setting: Setting) -> Any:
        return getattr(self, setting.value)

    def source(self, setting: Setting) -> Source:
        return (self.sources or {}).get(setting, Source.DEFAULT)

    def answer_tokens(self, model: str) -> int | None:
        """The `max_tokens` to ask `model` for: the setting, never above what it can write."""
        if self.max_answer_tokens is None:
            return None
        return min(self.max_answer_tokens, output_limit(model))


@dataclass(frozen=True)
class Catalog:
    """The models the deployment offers."""

    chat_models: Sequence[str]
    image_models: Sequence[str]


@dataclass(frozen=True)
class Change:
    setting: Setting
    scope: Scope
    old: Any  # as stored: None when it was inherited
    new: Any


@dataclass(frozen=True)
class LogEntry:
    change: LoggedChange
    setting: Setting


class ServerConfig:
    def __init__(self, store: ConfigStore, defaults: PlaceSettings, catalog: Catalog) -> None:
        self._store = store
        self.defaults = defaults
        self.catalog = catalog
        self._cache: OrderedDict[int, GuildConfig] = OrderedDict()

    # Reading.

    async def for_place(self, place: Place) -> PlaceSettings:
        """The effective settings where `place` is (direct messages: the deployment's)."""
        if place.guild_id is None:
            return self.defaults
        config = await self._current(place.guild_id)
        return self._of_scope(config, place, Scope.CHANNEL)

    async def for_scope(self, place: Place, scope: Scope) -> PlaceSettings:
        """The effective settings of the channel or the server that `scope` names at `place`."""
        assert place.guild_id is not None
        return self._of_scope(await self._current(place.guild_id), place, scope)

    def last_seen(self, place: Place, scope: Scope) -> PlaceSettings:
        """`for_scope` as this process last read it (the deployment's if never), for when the
        database cannot answer in time."""
        assert place.guild_id is not None
        config = self._cache.get(place.guild_id) or GuildConfig(None, {}, {})
        return self._of_scope(config, place, scope)

    def _of_scope(self, config: GuildConfig, place: Place, scope: Scope) -> PlaceSettings:
        channel = config.channels.get(place.settings_channel_id, {})
        settings = self._resolve(config.server, channel if scope is Scope.CHANNEL else {})
        return replace(settings, budgets=config.budgets)

    async def is_untouched(self, guild_id: int) -> bool:
        """Nothing was ever set in this server."""
        return (await self._current(guild_id)).version is None

    async def log(self, guild_id: int, *, limit: int = 25) -> list[LogEntry]:
        changes = await self._store.history(guild_id, limit=limit)
        return [LogEntry(c, Setting(c.setting)) for c in changes if c.setting in _SETTING_NAMES]

    async def _current(self, guild_id: int) -> GuildConfig:
        version = await self._store.version(guild_id)
        cached = self._cache.get(guild_id)
        if cached is not None and cached.version == version:
            self._cache.move_to_end(guild_id)
            return cached
        config = GuildConfig(None, {}, {}) if version is None else await self._store.load(guild_id)
        self._cache[guild_id] = config
        self._cache.move_to_end(guild_id)
        while len(self._cache) > _CACHED_SERVERS:
            self._cache.popitem(last=False)
        return config

    def _resolve(self, server: Values, channel: Values) -> PlaceSettings:
        chosen: dict[str, Any] = {}
        sources: dict[Setting, Source] = {}
        for setting in Setting:
            for source, values in ((Source.CHANNEL, channel), (Source.SERVER, server)):
                value = values.get(setting.value)
                # A value the deployment no longer offers (CHAT_MODELS changed) is passed over.
                if value is not None and self._still_offered(setting, value):
                    chosen[setting.value] = _typed(setting, value)
                    sources[setting] = source
                    break
        return replace(self.defaults, **chosen, sources=sources)

    def _still_offered(self, setting: Setting, value: Any) -> bool:
        if setting is Setting.MODEL:
            return value in self.catalog.chat_models
        if setting is Setting.IMAGE_MODEL:
            return value in self.catalog.image_models
        return True

    # Changing.

    async def change(
        self, place: Place, setting: Setting, value: Any, scope: Scope, *, by: int
    ) -> Change:
        """Store `value` (as `parse` made it; None: inherit again) and log who did it."""
        assert place.guild_id is not None, "/config works in servers only"
        channel_id = place.settings_channel_id if scope is Scope.CHANNEL else None
        stored = sorted(value) if isinstance(value, frozenset) else value
        old = await self._store.change(place.guild_id, channel_id, setting.value, stored, by=by)
        return Change(setting, scope, old, stored)

    async def budgets(self, guild_id: int) -> tuple[BudgetRule, ...]:
        return (await self._current(guild_id)).budgets

    async def set_budget(self, guild_id: int, rule: BudgetRule, *, by: int) -> None:
        await self._store.set_budget(guild_id, rule, by=by)

    async def clear_budget(self, guild_id: int, rule: BudgetRule) -> bool:
        return await self._store.clear_budget(guild_id, rule)

    async def forget_channel(self, guild_id: int, channel_id: int) -> None:
        await self._store.forget_channels(guild_id, [channel_id])

    async def forget_role(self, guild_id: int, role_id: int, *, by: int) -> None:
        await self._store.forget_role(guild_id, role_id, by=by)

    async def forget_server(self, guild_id: int) -> None:
        await self._store.forget_guild(guild_id)
        self._cache.pop(guild_id, None)

    # Values as people type and read them.

    def parse(
        self,
        setting: Setting,
        text: str | None,
        *,
        model: str,
        server_roles: Mapping[int, str],
    ) -> Any:
        """The value to store for what an admin typed; UserError names the allowed values.
        `model` is the chat model where it applies; `server_roles` the server's, by id."""
        text = (text or "").strip()
        if setting is Setting.ROLES:
            return _parse_roles(text, server_roles)
        if not text:
            raise UserError(f"Give {setting.value} a value: {self.allowed(setting, model)}.")
        if setting is Setting.MODEL:
            return _one_of(text, self.catalog.chat_models, "models")
        if setting is Setting.IMAGE_MODEL:
            return _one_of(text, self.catalog.image_models, "image models")
        if setting is Setting.SYSTEM_PROMPT:
            if len(text) > MAX_SYSTEM_PROMPT:
                raise UserError(
                    f"A system prompt can be up to {MAX_SYSTEM_PROMPT} characters; "
                    f"this one has {len(text)}."
                )
            return text
        if setting is Setting.TEMPERATURE:
            number = _number(text.replace(",", "."))
            if number is None or not 0 <= number <= 2:
                raise UserError(f"The temperature is a number from 0 to 2, not {text!r}.")
            return number
        if setting is Setting.MAX_ANSWER_TOKENS:
            limit = output_limit(model)
            if not text.isdigit() or not 1 <= int(text) <= limit:
                raise UserError(
                    f"max_answer_tokens is a whole number from 1 to {limit} for {model}."
                )
            return int(text)
        if setting is Setting.REPLY_MODE:
            return _one_of(text.lower(), [mode.value for mode in ReplyMode], "reply modes")
        if setting is Setting.MEMORY:
            return _one_of(text.lower(), [value.value for value in Memory], "memory values")
        return _one_of(text.lower(), [mode.value for mode in History], "history modes")

    def allowed(self, setting: Setting, model: str) -> str:
        """The values `setting` takes, in words."""
        offered: dict[Setting, Sequence[str]] = {
            Setting.MODEL: self.catalog.chat_models,
            Setting.IMAGE_MODEL: self.catalog.image_models,
            Setting.REPLY_MODE: [mode.value for mode in ReplyMode],
            Setting.HISTORY: [mode.value for mode in History],
            Setting.MEMORY: [value.value for value in Memory],
        }
        if setting in offered:
            return "one of " + ", ".join(offered[setting])
        if setting is Setting.SYSTEM_PROMPT:
            return f"text of up to {MAX_SYSTEM_PROMPT} characters"
        if setting is Setting.TEMPERATURE:
            return "a number from 0 to 2"
        if setting is Setting.MAX_ANSWER_TOKENS:
            return f"a whole number from 1 to {output_limit(model)}"
        return "role mentions, or nothing for everyone"


_SETTING_NAMES = {setting.value for setting in Setting}
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def _typed(setting: Setting, value: Any) -> Any:
    if setting is Setting.REPLY_MODE:
        return ReplyMode(value)
    if setting is Setting.HISTORY:
        return History(value)
    if setting is Setting.MEMORY:
        return Memory(value)
    if setting is Setting.ROLES:
        return frozenset(int(role) for role in value)
    return value


def _one_of(text: str, allowed: Sequence[str], what: str) -> str:
    if text not in allowed:
        raise UserError(
            f"{text!r} is not one of the {what} here; pick one of {', '.join(allowed)}."
        )
    return text


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_roles(text: str, server_roles: Mapping[int, str]) -> frozenset[int]:
    """Role mentions (as Discord sends them, <@&id>), or role names typed as @Name or Name."""
    if text.lower().removeprefix("@") == "everyone":
        return frozenset()
    found = {int(role_id) for role_id in _ROLE_MENTION.findall(text)}
    unknown = [role_id for role_id in found if role_id not in server_roles]
    if unknown:
        raise UserError(
            f"This server has no role <@&{unknown[0]}>; mention roles of this server, "
            "or leave the value empty for everyone."
        )
    # What is not a mention is role names, as /config show lists roles: separated by commas.
    by_name = {name.lower(): role_id for role_id, name in server_roles.items()}
    for typed in _ROLE_MENTION.sub(",", text).split(","):
        name = typed.strip().removeprefix("@").strip()
        if not name:
            continue
        if name.lower() not in by_name:
            raise UserError(
                f"This server has no role named {typed.strip()!r}; mention the roles (type @ "
                "and pick them), or leave the value empty for everyone."
            )
        found.add(by_name[name.lower()])
    return frozenset(found)


def describe(setting: Setting, value: Any) -> str:
    """A value as /config shows it."""
    if value is None:
        return {
            Setting.TEMPERATURE: "the model's default",
            Setting.MAX_ANSWER_TOKENS: "the model's limit",
        }.get(setting, "not set")
    if setting is Setting.ROLES:
        return ", ".join(f"<@&{role}>" for role in sorted(value)) if value else "everyone"
    if setting is Setting.SYSTEM_PROMPT:
        return f'"{value}"'
    return str(value)
