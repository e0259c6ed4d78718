"""/recall and /forget end to end: the real bot embeds what was said, finds it, and forgets it
after a confirmation."""

from __future__ import annotations

from pathlib import Path

from bot.memory import MEMORY_OFF
from tests.fakes.api import Reply
from tests.harness import Harness, custom_ids, running_harness, sqlite_url

FACT = "the secret code for the vault is purple elephant"


async def embedded(harness: Harness, turns: int) -> None:
    """Wait until the bot has embedded `turns` turns."""
    assert harness.bot is not None
    memory = harness.bot.memory
    assert memory is not None
    await harness.discord.wait_for(lambda: memory.embedded >= turns, timeout=10)


async def test_recall_finds_a_message_and_forget_removes_it_after_confirming(
    tmp_path: Path,
) -> None:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        await harness.start_bot()
        harness.api.script(Reply(text="Noted, I will remember it."))
        question = await harness.mention(FACT)
        await harness.answer_to(question)
        await embedded(harness, 2)

        recall = await harness.discord.invoke_command("recall", {"query": "secret vault code"})
        found = await harness.told(recall)
        assert recall.original is not None and recall.original.visible_to == harness.alice.id
        assert FACT in found.splitlines()[1]
        guild, channel = harness.guild.id, harness.general.id
        assert f"https://discord.com/channels/{guild}/{channel}/{question.id}" in found

        # Bob may not make the bot forget what Alice said.
        refused = await harness.discord.invoke_command(
            "forget", {"text": "secret vault code"}, user=harness.bob
        )
        assert "said by others" in await harness.told(refused)

        forget = await harness.discord.invoke_command("forget", {"text": "secret vault code"})
        offered = await harness.told(forget)
        assert FACT in offered and "Noted, I will remember it." in offered
        confirmation = forget.original
        assert confirmation is not None
        ids = custom_ids(confirmation)
        assert ids[1] == "memory:cancel"
        await harness.discord.click_button(confirmation, ids[0], harness.alice)
        await harness.discord.wait_for(
            lambda: "Forgot 2 messages" in confirmation.versions[-1].content, timeout=5
        )
        assert custom_ids(confirmation) == []

        again = await harness.discord.invoke_command("recall", {"query": "secret vault code"})
        assert "Nothing in this conversation" in await harness.told(again)
        harness.api.script(Reply(text="Which code?"))
        await harness.answer_to(await harness.mention("What was the code?"))
        assert not any(FACT in sent for sent in harness.sent_history())

        admin = harness.add_admin()
        turned = await harness.discord.invoke_command(
            "config set", {"setting": "memory", "value": "off"}, user=admin
        )
        await harness.told(turned)
        off = await harness.discord.invoke_command("recall", {"query": "code"})
        assert MEMORY_OFF in await harness.told(off)
