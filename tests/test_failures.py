"""Every failure in Discord ends in one function: one sentence for the person, details logged."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import discord
import pytest
from discord import app_commands

from bot.admission import NOT_HERE
from bot.ai import RateLimited
from bot.errors import UNEXPECTED, UserError
from cogs.failures import tell_failure


class Message:
    """What tell_failure uses of a discord.Message."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.channel = SimpleNamespace(id=5)
        self.replies: list[str] = []
        self._refuse = refuse

    async def reply(self, text: str, **_options: Any) -> None:
        if self._refuse:
            response = SimpleNamespace(status=403, reason="Forbidden")
            raise discord.Forbidden(response, {"code": 50013, "message": "Missing Permissions"})
        self.replies.append(text)


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (UserError("Pick a model."), "Pick a model."),
        (RateLimited("429", trace_id="t-1"), RateLimited.user_message),
        (app_commands.CheckFailure(), NOT_HERE),
        (RuntimeError("the details of a bug"), UNEXPECTED),
    ],
)
async def test_a_failed_mention_is_answered_with_one_sentence(
    error: BaseException, sentence: str, caplog: pytest.LogCaptureFixture
) -> None:
    message = Message()
    await tell_failure(message, error, doing="Answering message 1")  # type: ignore[arg-type]
    assert message.replies == [f"⚠️ {sentence}"]
    if isinstance(error, RuntimeError):  # the admin gets the details, the person does not
        assert "the details of a bug" in caplog.text


async def test_a_reply_discord_refuses_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await tell_failure(Message(refuse=True), UserError("x"), doing="y")  # type: ignore[arg-type]
    assert "Could not tell the person in channel 5" in caplog.text
