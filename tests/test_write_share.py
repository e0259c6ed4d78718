"""Each process paces its writes within its part of the bot-wide limit."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from bot.app import Bot
from bot.config import load_settings
from cogs.sinks import DiscordBudget, DiscordLimits


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
