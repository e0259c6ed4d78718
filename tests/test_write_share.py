"""Each process paces its writes within its part of the bot-wide limit."""

from __future__ import annotations

import time
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.config import load_settings
from bot.conversation.runs import INTERRUPTED
from bot.db import migrate
from bot.db.engine import create_engine, create_sessionmaker
from bot.db.models import ConversationKind, TurnStatus
from bot.db.repository import ConversationStore, NewTurn
from cogs.sinks import DiscordBudget, DiscordLimits
from tests.harness import running_harness, sqlite_url


@pytest.mark.parametrize(
    ("part", "writes", "period", "reserve"),
    [
        (Fraction(1), 50, 1.0, 2),
        (Fraction(1, 2), 25, 1.0, 2),
        (Fraction(2, 3), 33, 1.0, 2),  # rounded down: together the processes stay within 50
        (Fraction(1, 25), 2, 1.0, 1),
        (Fraction(1, 50), 1, 1.0, 0),  # no slot kept back from a single write
        (Fraction(1, 64), 1, 1.28, 0),  # under one write a second: one in a longer period
        (Fraction(1, 100), 1, 2.0, 0),
    ],
)
def test_a_process_writes_within_its_share(
    part: Fraction, writes: int, period: float, reserve: int
) -> None:
    limits = DiscordLimits().share(part)
    assert (limits.bot_writes, limits.bot_reserve) == (writes, reserve)
    assert limits.bot_period == pytest.approx(period)
    # Every process with such a share, together, within the bot-wide limit.
    assert limits.bot_writes / limits.bot_period / part <= 50 + 1e-9
    assert limits.channel_writes == DiscordLimits().channel_writes  # per channel: unshared
    window = DiscordBudget(limits).bot
    assert (window.limit, window.reserve) == (writes, reserve)


def _settings(**values: Any) -> Any:
    return load_settings(discord_token="x", acedatacloud_api_token="y", _env_file=None, **values)


@pytest.mark.parametrize(
    ("sharding", "writes"),
    [
        ({}, 50),
        ({"shard_count": 4}, 50),  # one process runs every shard
        ({"shard_count": 4, "shard_ids": [1, 2]}, 25),
        ({"shard_count": 3, "shard_ids": [2]}, 16),
    ],
)
async def test_the_bot_takes_its_share_from_its_shard_settings(
    sharding: dict[str, Any], writes: int
) -> None:
    bot = Bot(_settings(**sharding))
    assert bot.limits.bot_writes == writes
    tests_limits = DiscordLimits(bot_writes=10, progress_interval=0.2)
    bot = Bot(_settings(**sharding), limits=tests_limits)
    assert bot.limits.bot_writes == writes // 5
    assert bot.limits.progress_interval == 0.2


async def test_answers_a_crash_left_are_marked_within_the_write_limit(tmp_path: Path) -> None:
    """At start, every answer a crash left half written is marked, and there may be many:
    their requests keep within the bot-wide limit like every other write."""
    url = sqlite_url(tmp_path)
    engine = create_engine(url)
    await migrate.upgrade(engine)
    store = ConversationStore(create_sessionmaker(engine))
    limits = DiscordLimits(bot_writes=3, bot_period=0.3)
    async with running_harness(url, limits=limits) as harness:
        discord = harness.discord
        shown = []
        for channel in (harness.general, harness.random, harness.general):
            message = await discord.post_message(channel, discord.bot_user, "half an answer ▌")
            conversation = await store.open(
                channel.id, guild_id=harness.guild.id, kind=ConversationKind.CHANNEL
            )
            await store.append_turn(
                conversation.id,
                NewTurn(
                    role="assistant",
                    content="half an answer",
                    token_estimate=3,
                    status=TurnStatus.IN_PROGRESS,
                    message_ids=[message.id],
                ),
            )
            shown.append(message)
        await engine.dispose()

        await harness.start_bot()
        await discord.wait_for(
            lambda: all(INTERRUPTED in m.latest.content for m in shown), timeout=15
        )
        paths = {f"/api/v10/channels/{m.channel_id}/messages/{m.id}" for m in shown}
        starts = [r.mono for r in discord.requests if r.path in paths]
        assert len(starts) == 2 * len(shown)  # read, then edited
        for n, start in enumerate(starts):
            within = [s for s in starts[n:] if s < start + limits.bot_period]
            assert len(within) <= limits.bot_writes, starts


def test_the_budget_forgets_the_windows_of_quiet_channels() -> None:
    budget = DiscordBudget()
    busy = budget.channel(1)
    busy.record(time.monotonic())  # written to in its period: still counted
    writing = budget.channel(2)
    writing.start()
    held = budget.channel(3)  # quiet, but an answer's sink still has it
    quiet = weakref.ref(budget.channel(4))
    for channel_id in range(100, 1100):
        budget.channel(channel_id)
    assert quiet() is None
    assert budget.channel(1) is busy
    assert budget.channel(2) is writing
    assert budget.channel(3) is held  # a channel never has two windows
    assert len(budget._channels) < 100
