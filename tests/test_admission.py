"""Admission and the places' settings: the one step before any paid call, on a real database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.admission import (
    BOT_OFF,
    NOT_HERE,
    Admission,
    Ignored,
    Person,
    Request,
    RequestKind,
    Via,
)
from bot.db.budget_store import Ledger
from bot.db.config_store import ConfigStore, GuildConfig
from bot.db.models import ConversationKind
from bot.errors import UserError
from bot.places import Place
from bot.server_config import History, ReplyMode, Scope, ServerConfig, Setting, Source
from tests.helpers import CATALOG, DEFAULTS, RULES

GUILD = 1
CHANNEL = Place(10, GUILD, ConversationKind.CHANNEL)
OTHER_CHANNEL = Place(12, GUILD, ConversationKind.CHANNEL)
THREAD = Place(20, GUILD, ConversationKind.THREAD, parent_id=10)
DIRECT = Place(11, None, ConversationKind.DIRECT)
ALICE = Person(5)
ADMIN = Person(6, admin=True)
MEMBERS = 700  # a role


class CountingStore(ConfigStore):
    """The real store, counting how often a server's settings are read whole."""

    loads = 0

    async def load(self, guild_id: int) -> GuildConfig:
        self.loads += 1
        return await super().load(guild_id)


@pytest.fixture
def store(sessions: async_sessionmaker[AsyncSession]) -> CountingStore:
    return CountingStore(sessions)


@pytest.fixture
def config(store: CountingStore) -> ServerConfig:
    return ServerConfig(store, DEFAULTS, CATALOG)


@pytest.fixture
def admission(config: ServerConfig, sessions: async_sessionmaker[AsyncSession]) -> Admission:
    return Admission(config, RULES, Ledger(sessions))


def question(**fields: Any) -> Request:
    return replace(Request(RequestKind.QUESTION, CHANNEL, ALICE), **fields)


async def refusal(admission: Admission, **fields: Any) -> str:
    with pytest.raises(UserError) as refused:
        await admission.admit(question(**fields))
    return str(refused.value)


async def ignored(admission: Admission, **fields: Any) -> bool:
    try:
        await admission.admit(question(**fields))
    except Ignored:
        return True
    return False


async def test_the_place_default_model_is_used_unless_one_is_picked(admission: Admission) -> None:
    assert (await admission.admit(question())).model == "gpt-4o-mini"
    assert (await admission.admit(question(model="gpt-4o"))).model == "gpt-4o"
    assert (await admission.admit(question(kind=RequestKind.IMAGE))).model == "gpt-image-1"
    edit = question(kind=RequestKind.EDIT, model="dall-e-2")
    assert (await admission.admit(edit)).model == "dall-e-2"


async def test_refusals_are_one_sentence_each(admission: Admission) -> None:
    assert await refusal(admission, model="gpt-3") == (
        "I don't know the model 'gpt-3'; pick one from the list."
    )
    assert await refusal(admission, kind=RequestKind.IMAGE, model="x") == (
        "I don't know the image model 'x'; pick one from the list."
    )
    assert await refusal(admission, prompt_chars=4001) == (
        "Your message is 4001 characters long; the limit is 4000."
    )
    assert await refusal(admission, images=1) == (
        "gpt-4o-mini can't look at images; pick a model that can."
    )
    assert await refusal(admission, place=DIRECT) == NOT_HERE
    # A direct message, when they are off, passes without a word.
    assert await ignored(admission, place=DIRECT, via=Via.MENTION)


async def test_an_answer_asked_again_keeps_its_model(admission: Admission) -> None:
    """Regenerate uses the model the answer was made with, even if no longer offered."""
    again = question(kind=RequestKind.REGENERATE, model="gpt-3")
    assert (await admission.admit(again)).model == "gpt-3"
    assert (await admission.admit(question(images=1, model="gpt-4o"))).model == "gpt-4o"


async def test_a_channel_value_wins_over_the_server_s_which_wins_over_the_default(
    config: ServerConfig, admission: Admission
) -> None:
    await config.change(CHANNEL, Setting.SYSTEM_PROMPT, "Speak like a pirate.", Scope.SERVER, by=6)
    await config.change(CHANNEL, Setting.SYSTEM_PROMPT, "Answer in French.", Scope.CHANNEL, by=6)
    await config.change(CHANNEL, Setting.MODEL, "gpt-4o", Scope.CHANNEL, by=6)
    here, elsewhere, thread = [
        (await admission.admit(question(place=place))).settings
        for place in (CHANNEL, OTHER_CHANNEL, THREAD)
    ]
    assert (here.system_prompt, here.source(Setting.SYSTEM_PROMPT)) == (
        "Answer in French.",
        Source.CHANNEL,
    )
    assert (elsewhere.system_prompt, elsewhere.source(Setting.SYSTEM_PROMPT)) == (
        "Speak like a pirate.",
        Source.SERVER,
    )
    assert thread == here  # a thread follows its channel
    assert (await admission.admit(question(place=THREAD))).model == "gpt-4o"
    assert elsewhere.source(Setting.MODEL) is Source.DEFAULT

    await config.change(CHANNEL, Setting.SYSTEM_PROMPT, None, Scope.CHANNEL, by=6)
    assert (await config.for_place(CHANNEL)).system_prompt == "Speak like a pirate."
    await config.change(CHANNEL, Setting.SYSTEM_PROMPT, None, Scope.SERVER, by=6)
    assert (await config.for_place(CHANNEL)).system_prompt == DEFAULTS.system_prompt
    # A direct message runs on the deployment's settings.
    assert await config.for_place(DIRECT) == DEFAULTS


async def test_reply_modes(config: ServerConfig, admission: Admission) -> None:
    # mention: a mention is answered, a plain message passes.
    assert not await ignored(admission, via=Via.MENTION)
    assert await ignored(admission, via=Via.MESSAGE)

    await config.change(CHANNEL, Setting.REPLY_MODE, ReplyMode.ALL, Scope.CHANNEL, by=6)
    assert not await ignored(admission, via=Via.MESSAGE)
    assert not await ignored(admission, via=Via.MESSAGE, place=THREAD)
    assert await ignored(admission, via=Via.MESSAGE, place=OTHER_CHANNEL)

    await config.change(CHANNEL, Setting.REPLY_MODE, ReplyMode.OFF, Scope.CHANNEL, by=6)
    assert await ignored(admission, via=Via.MENTION)
    assert await ignored(admission, via=Via.MESSAGE)
    for kind in RequestKind:
        assert await refusal(admission, kind=kind) == BOT_OFF


async def test_only_members_with_an_allowed_role_may_ask(
    config: ServerConfig, admission: Admission
) -> None:
    await config.change(CHANNEL, Setting.ROLES, frozenset({MEMBERS, 701}), Scope.SERVER, by=6)
    sentence = "Only members with one of the roles <@&700>, <@&701> can use the bot here."
    for kind in RequestKind:
        assert await refusal(admission, kind=kind) == sentence
    assert await refusal(admission, via=Via.MENTION) == sentence
    assert await ignored(admission, via=Via.MESSAGE)  # not a word for every message
    member = Person(5, roles=frozenset({MEMBERS}))
    assert (await admission.admit(question(person=member))).model
    assert (await admission.admit(question(person=ADMIN))).model
    # A channel may open up again: an empty list is everyone.
    await config.change(CHANNEL, Setting.ROLES, frozenset(), Scope.CHANNEL, by=6)
    assert (await admission.admit(question())).model
    assert await refusal(admission, place=OTHER_CHANNEL) == sentence


async def test_personal_history_gives_each_person_a_conversation_in_a_channel(
    config: ServerConfig, admission: Admission
) -> None:
    assert (await admission.admit(question())).place.owner_id == 0
    await config.change(CHANNEL, Setting.HISTORY, History.PERSONAL, Scope.CHANNEL, by=6)
    assert (await admission.admit(question())).place.owner_id == ALICE.id
    assert (await admission.admit(question(person=ADMIN))).place.owner_id == ADMIN.id
    image = question(kind=RequestKind.IMAGE)
    assert (await admission.admit(image)).place.owner_id == ALICE.id
    # Threads stay shared; an answer asked again stays where it was.
    assert (await admission.admit(question(place=THREAD))).place.owner_id == 0
    shared = question(kind=RequestKind.REGENERATE, model="gpt-4o", again=True)
    assert (await admission.admit(shared)).place.owner_id == 0


async def test_temperature_and_answer_length_reach_what_the_request_runs_with(
    config: ServerConfig, admission: Admission
) -> None:
    await config.change(CHANNEL, Setting.TEMPERATURE, 0.3, Scope.CHANNEL, by=6)
    await config.change(CHANNEL, Setting.MAX_ANSWER_TOKENS, 100_000, Scope.SERVER, by=6)
    settings = (await admission.admit(question())).settings
    assert settings.temperature == 0.3
    assert settings.answer_tokens("gpt-4o-mini") == 16_384  # never above the model's limit
    assert settings.answer_tokens("gpt-5") == 100_000


async def test_a_change_through_one_process_is_used_by_another_at_once(
    sessions: async_sessionmaker[AsyncSession], store: CountingStore
) -> None:
    """Each process caches a server's settings and checks their version on every read."""
    here = ServerConfig(store, DEFAULTS, CATALOG)
    there = ServerConfig(ConfigStore(sessions), DEFAULTS, CATALOG)
    await here.change(CHANNEL, Setting.MODEL, "gpt-4o", Scope.CHANNEL, by=6)
    assert (await here.for_place(CHANNEL)).model == "gpt-4o"
    loads = store.loads
    assert (await here.for_place(OTHER_CHANNEL)).model == "gpt-4o-mini"
    assert (await here.for_place(CHANNEL)).model == "gpt-4o"
    assert store.loads == loads  # unchanged: served from the cache

    await there.change(CHANNEL, Setting.MODEL, "gpt-4o-mini", Scope.CHANNEL, by=6)
    assert (await here.for_place(CHANNEL)).model == "gpt-4o-mini"

    # The bot leaves the server and comes back: nothing held from before counts.
    await there.forget_server(GUILD)
    assert (await here.for_place(CHANNEL)).model == "gpt-4o-mini"
    await there.change(CHANNEL, Setting.MODEL, "gpt-4o", Scope.CHANNEL, by=6)
    assert (await here.for_place(CHANNEL)).model == "gpt-4o"


async def test_a_model_no_longer_offered_is_passed_over(
    store: CountingStore, config: ServerConfig
) -> None:
    await config.change(CHANNEL, Setting.MODEL, "gpt-4o", Scope.CHANNEL, by=6)
    await config.change(CHANNEL, Setting.MODEL, "gpt-4o", Scope.SERVER, by=6)
    narrower = replace(CATALOG, chat_models=["gpt-4o-mini"])
    settings = await ServerConfig(store, DEFAULTS, narrower).for_place(CHANNEL)
    assert (settings.model, settings.source(Setting.MODEL)) == ("gpt-4o-mini", Source.DEFAULT)


ROLES = {GUILD: "@everyone", MEMBERS: "Members", 701: "Cool People"}


@pytest.mark.parametrize(
    ("setting", "text", "sentence"),
    [
        (
            "model",
            "gpt-3",
            "'gpt-3' is not one of the models here; pick one of gpt-4o-mini, gpt-4o.",
        ),
        (
            "image_model",
            "midjourney",
            "'midjourney' is not one of the image models here; pick one of gpt-image-1, dall-e-2.",
        ),
        ("temperature", "5", "The temperature is a number from 0 to 2, not '5'."),
        ("temperature", "warm", "The temperature is a number from 0 to 2, not 'warm'."),
        ("temperature", "nan", "The temperature is a number from 0 to 2, not 'nan'."),
        (
            "max_answer_tokens",
            "0",
            "max_answer_tokens is a whole number from 1 to 16384 for gpt-4o-mini.",
        ),
        (
            "max_answer_tokens",
            "20000",
            "max_answer_tokens is a whole number from 1 to 16384 for gpt-4o-mini.",
        ),
        (
            "reply_mode",
            "sometimes",
            "'sometimes' is not one of the reply modes here; pick one of mention, all, thread, "
            "off.",
        ),
        (
            "history",
            "private",
            "'private' is not one of the history modes here; pick one of shared, personal.",
        ),
        (
            "system_prompt",
            "x" * 4001,
            "A system prompt can be up to 4000 characters; this one has 4001.",
        ),
        ("model", "", "Give model a value: one of gpt-4o-mini, gpt-4o."),
        (
            "roles",
            "<@&999>",
            "This server has no role <@&999>; mention roles of this server, or leave the value "
            "empty for everyone.",
        ),
        (
            "roles",
            "@Admins",
            "This server has no role named '@Admins'; mention the roles (type @ and pick them), "
            "or leave the value empty for everyone.",
        ),
    ],
)
async def test_invalid_values_are_refused_with_what_is_allowed(
    config: ServerConfig, setting: str, text: str, sentence: str
) -> None:
    with pytest.raises(UserError) as refused:
        config.parse(Setting(setting), text, model="gpt-4o-mini", server_roles=ROLES)
    assert str(refused.value) == sentence


def test_values_as_admins_type_them(config: ServerConfig) -> None:
    def parse(setting: Setting, text: str | None) -> Any:
        return config.parse(setting, text, model="gpt-4o-mini", server_roles=ROLES)

    assert parse(Setting.TEMPERATURE, " 0,7 ") == 0.7
    assert parse(Setting.MAX_ANSWER_TOKENS, "1024") == 1024
    assert parse(Setting.REPLY_MODE, "ALL") == "all"
    assert parse(Setting.ROLES, "<@&700> <@&701>") == {MEMBERS, 701}
    assert parse(Setting.ROLES, "@Cool People") == {701}
    # As /config show lists them.
    assert parse(Setting.ROLES, "<@&700>, <@&701>") == {MEMBERS, 701}
    assert parse(Setting.ROLES, "Members, @Cool People") == {MEMBERS, 701}
    assert parse(Setting.ROLES, "") == frozenset()
    assert parse(Setting.ROLES, "@everyone") == frozenset()
    assert parse(Setting.MODEL, "gpt-4o") == "gpt-4o"
