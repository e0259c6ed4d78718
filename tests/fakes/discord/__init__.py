"""A wire-level fake of Discord (REST under /api/v10, the gateway, a CDN) on 127.0.0.1.

A real discord.py client talks to it over real sockets::

    async with FakeDiscord(FakeDiscordConfig(...)) as fake:     # or await fake.start()/stop()
        guild = fake.add_guild("Test", channels=["general"])   # bot + owner are members
        alice = fake.add_user("alice")
        fake.add_member(guild, alice, permissions=Perm.MANAGE_MESSAGES)
        with fake.point_client_here():   # sets Route.BASE and DEFAULT_GATEWAY, restores on exit
            bot = commands.Bot(..., guild_ready_timeout=0.05)  # on_ready waits this long
            task = asyncio.create_task(bot.start(fake.token))

Test actions (each dispatches over the gateway): ``post_message``, ``edit_message``,
``delete_message``, ``add_reaction``, ``invoke_command`` ("name" or "group sub"),
``invoke_autocomplete``, ``click_button``, ``drop_gateway``. Queries: ``messages_in``,
``message``, ``interaction``, ``requests``/``requests_for``, ``request_counts``,
``rate_limited_count``, ``registered_commands``, ``identify_count``/``resume_count``, ``typing``.
Wait without sleeping: ``await fake.wait_for(lambda: ..., timeout=5)``.
Another process: ``python -m tests.fakes.discord --channels 50 --port N`` (see __main__).
"""

from ._util import (
    CallbackType,
    ChannelType,
    Intents,
    InteractionType,
    MessageFlag,
    OptionType,
    Perm,
)
from .config import FakeDiscordConfig
from .model import (
    CallbackRecord,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    InteractionRecord,
    MessageRecord,
    MessageVersion,
    MultipartPart,
    RequestRecord,
    StoredFile,
    UploadFile,
)
from .server import FakeDiscord

__all__ = [
    "CallbackRecord",
    "CallbackType",
    "ChannelType",
    "FakeChannel",
    "FakeDiscord",
    "FakeDiscordConfig",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "Intents",
    "InteractionRecord",
    "InteractionType",
    "MessageFlag",
    "MessageRecord",
    "MessageVersion",
    "MultipartPart",
    "OptionType",
    "Perm",
    "RequestRecord",
    "StoredFile",
    "UploadFile",
]
