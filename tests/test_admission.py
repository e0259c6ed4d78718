"""Admission: the one step before any paid call, as a plain unit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bot.admission import NOT_HERE, Admission, Request, RequestKind
from bot.db.models import ConversationKind
from bot.errors import UserError
from bot.places import Place
from tests.helpers import RULES

CHANNEL = Place(10, 1, ConversationKind.CHANNEL)
DIRECT = Place(11, None, ConversationKind.DIRECT)
admission = Admission(RULES)


async def admitted_model(**fields: Any) -> str:
    request = replace(Request(RequestKind.QUESTION, CHANNEL, author_id=1), **fields)
    return (await admission.admit(request)).model


async def refusal(**fields: Any) -> str:
    with pytest.raises(UserError) as refused:
        await admitted_model(**fields)
    return str(refused.value)


async def test_the_place_default_model_is_used_unless_one_is_picked() -> None:
    assert await admitted_model() == "gpt-4o-mini"
    assert await admitted_model(model="gpt-4o") == "gpt-4o"
    assert await admitted_model(kind=RequestKind.IMAGE) == "gpt-image-1"
    assert await admitted_model(kind=RequestKind.EDIT, model="dall-e-2") == "dall-e-2"


async def test_refusals_are_one_sentence_each() -> None:
    assert await refusal(model="gpt-3") == "I don't know the model 'gpt-3'; pick one from the list."
    assert await refusal(kind=RequestKind.IMAGE, model="x") == (
        "I don't know the image model 'x'; pick one from the list."
    )
    assert await refusal(prompt_chars=4001) == (
        "Your message is 4001 characters long; the limit is 4000."
    )
    assert await refusal(images=1) == "gpt-4o-mini can't look at images; pick a model that can."
    assert await refusal(place=DIRECT) == NOT_HERE


async def test_an_answer_asked_again_keeps_its_model() -> None:
    """Regenerate uses the model the answer was made with, even if no longer offered."""
    assert await admitted_model(kind=RequestKind.REGENERATE, model="gpt-3") == "gpt-3"
    assert await admitted_model(images=1, model="gpt-4o") == "gpt-4o"
