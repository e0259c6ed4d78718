"""Run the fake as its own process (for benchmarks)::

    python -m tests.fakes.discord --channels 50 --port 8765

prints one JSON line (api_base, gateway_url, token, guild and channel ids, control_base) on
stdout, then serves until SIGINT/SIGTERM. Drive it over HTTP under ``/_fake/``. With
``--set snowflake_seed=N`` two such processes (same arguments) give their worlds the same ids.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import fields

from .config import FakeDiscordConfig
from .control import info
from .server import FakeDiscord


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.discord", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--channels", type=int, default=1, help="text channels in the guild")
    parser.add_argument("--users", type=int, default=2, help="human users in the guild")
    parser.add_argument("--token", default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="any FakeDiscordConfig field, e.g. --set latency=0.05 --set send_limit=10",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> FakeDiscordConfig:
    config = FakeDiscordConfig(host=args.host, port=args.port)
    if args.token:
        config.token = args.token
    types = {f.name: _knob_type(getattr(config, f.name)) for f in fields(config)}
    for item in args.set:
        key, _, raw = item.partition("=")
        if key not in types:
            raise SystemExit(f"unknown knob {key!r}; knobs: {', '.join(sorted(types))}")
        kind = types[key]
        value: object = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        setattr(config, key, value)
    return config


def _knob_type(default: object) -> type:
    """The type a knob's value is parsed as; the knobs that default to None (such as
    ``snowflake_seed``) take integers."""
    return int if default is None else type(default)


async def serve(args: argparse.Namespace) -> None:
    fake = FakeDiscord(build_config(args))
    guild = fake.add_guild(
        "Bench Guild", channels=[f"channel-{i}" for i in range(max(1, args.channels))]
    )
    for i in range(args.users):
        fake.add_member(guild, fake.add_user(f"user{i}"))
    await fake.start()
    sys.stdout.write(json.dumps(info(fake)) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
