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
``invoke_autocomplete``, ``click_button``, ``submit_modal``, ``delete_channel``,
``remove_bot``, ``drop_gateway``. Queries: ``messages_in``, ``message``, ``interaction``,
``requests``/``requests_for``, ``request_counts``, ``rate_limited_count``,
``registered_commands``, ``identify_count``/``resume_count``, ``typing``, ``shards_told``.
Shards: with ``FakeDiscordConfig(shards=N)`` a session hears only of its shard's guilds
(``(guild_id >> 22) % num_shards``; direct messages on shard 0); ``add_guild(shard=k)``
puts a guild on shard k.
Wait without sleeping: ``await fake.wait_for(lambda: ..., timeout=5)``.
Twin worlds: fakes made with one ``FakeDiscordConfig(snowflake_seed=N)`` give the world they
build (in the same order) the same ids.
Another process: ``python -m tests.fakes.discord --channels 50 --port N`` (see __main__).

Where things are. ``FakeDiscord`` (``server``) combines one mixin per concern over the shared
``_state._State``; a new route goes in the table in ``server._build_app``, its handler in the
module of its concern:

- ``server``: ``FakeDiscord``: start/stop, the route table, recording every request, queries
  on the records (``requests_for``...)
- ``_state``: the shared state, lookups, ``wait_for``, dispatching events to gateway sessions
- ``_guilds``: users, guilds, members, roles, channels, DMs (``add_*``) and their REST reads;
  taking them away (``delete_channel``, ``remove_bot``)
- ``_permissions``: ``permissions_in`` (roles, overwrites), the bot's access to a channel
- ``_gateway``: sessions, connections, HELLO/IDENTIFY/RESUME/READY, ``drop_gateway``
- ``_messages``: messages and channels: REST routes, test actions (``post_message``...),
  payloads, events, content/embed/component limits, reactions, typing
- ``_threads``: threads (``add_thread``, starting and joining over REST)
- ``_attachments``: stored files, uploads (``files[n]``) and the CDN
- ``_commands``: application commands registered over REST
- ``_interactions``: ``invoke_command``/``click_button``/``submit_modal``..., the callback,
  interaction webhooks
- ``_modals``: the MODAL callback's checks and the MODAL_SUBMIT data a person sends back
- ``_ratelimit``: the rate-limit windows and the 429 replies
- ``model``: world objects and records; ``config``: the knobs; ``control``: ``/_fake/``
  endpoints for another process; ``_util``: Discord's constants, error bodies, snowflakes
  (from the clock, or from a seed)
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
