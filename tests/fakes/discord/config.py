"""Every knob of the fake in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from ._util import Intents, Perm


@dataclass
class FakeDiscordConfig:
    """Knobs of :class:`FakeDiscord`. Defaults follow Discord's documented behaviour.

    Rate limits use Discord's *fixed window*: a bucket's window opens with the first request
    after the previous window closed and lasts ``*_window`` seconds; at most ``*_limit``
    requests pass in it. ``Reset-After`` is the time left in the window.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str = "fake-bot-token.Zz9.x"
    bot_name: str = "FakeBot"
    application_name: str = "Fake Application"

    # Global limit for every bot-token route (interaction and webhook routes are exempt).
    global_limit: int = 50
    global_window: float = 1.0
    # Channel-wide limit shared by sends and edits (POST/PATCH messages) in one channel. Its
    # state is *not* in the reply headers (those describe each route's own bucket), so a bot
    # that mixes sends and edits meets it as a 429, as on Discord.
    channel_message_limit: int = 5
    channel_message_window: float = 5.0
    # Per-route buckets reported in the X-RateLimit-* headers (per channel/guild/webhook).
    send_limit: int = 5
    send_window: float = 5.0
    edit_limit: int = 5
    edit_window: float = 5.0
    delete_limit: int = 5
    delete_window: float = 1.0
    default_route_limit: int = 50
    default_route_window: float = 1.0
    # Per interaction token: callback plus every webhook route of that token.
    interaction_limit: int = 5
    interaction_window: float = 2.0

    # Interactions.
    interaction_ack_deadline: float = 3.0
    interaction_token_lifetime: float = 15 * 60.0

    # Messages and uploads.
    max_content_length: int = 2000
    attachment_size_limit: int = 10 * 1024 * 1024
    enforce_message_content_intent: bool = True
    # Privileged intents the "developer portal" has switched on; asking for others closes
    # the gateway with 4014 (discord.py raises PrivilegedIntentsRequired).
    allowed_privileged_intents: int = Intents.PRIVILEGED
    # A verified application (100 servers or more) has the plain GATEWAY_* application flags
    # for those intents; an unverified one the GATEWAY_*_LIMITED ones.
    application_verified: bool = False

    # Network behaviour.
    latency: float = 0.0
    # Between applying a bot-token request and answering it: everyone sees the change while
    # the bot still waits for its reply (interaction routes answer at once).
    bot_reply_delay: float = 0.0
    heartbeat_interval_ms: int = 41250
    # What GET /gateway/bot recommends; a client may identify with another count.
    shards: int = 1
    # A session that would hold more guilds is closed with 4011 (sharding required).
    max_guilds_per_shard: int = 2500
    max_recorded_events: int = 10000
    # Twin worlds: with a seed, the ids of the world a test builds (bot user and application,
    # owner, users, guilds, roles, channels, threads and DMs the test adds) come from the
    # seed, not the clock: two fakes with one seed that build the same world in the same
    # order give it the same ids. Ids made while serving (messages, interactions, files,
    # commands, what the bot creates) still encode the current time, which discord.py reads
    # (``Interaction.created_at``/``is_expired``: an id from the past is an expired token).
    snowflake_seed: int | None = None
    # Injected failures: this share of message writes (sends, edits, interaction callbacks,
    # webhook messages) is refused before it takes effect, half with a 429 of scope "shared"
    # (a limit of the resource, not of the bot) and half with a 500. With a seed, the same
    # writes in the same order meet the same failures.
    write_fault_rate: float = 0.0
    write_fault_seed: int | None = None

    # Permissions of the bot's managed role in each guild.
    bot_permissions: int = Perm.BOT_DEFAULT
    everyone_permissions: int = Perm.EVERYONE_DEFAULT
