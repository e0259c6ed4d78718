"""The container health check, which costs no call to Discord.

With METRICS_PORT set, it asks the running bot's `/healthz` (every shard connected, the database
answering). Without, it looks at how old a heartbeat file is, which the running bot touches while
its gateway connections are open. `python -m bot health` reads the settings as the bot does;
`python -m bot.health` is the same check without importing the bot (a tenth of the CPU time),
reading only the environment, for the container engine that runs it every 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BEAT_EVERY = 15.0
# Long enough for a late beat or a quick gateway reconnect; short enough to notice a hang.
STALE_AFTER = 60.0


def heartbeat_file() -> Path:
    return Path(tempfile.gettempdir()) / "acedata-discord-bot.heartbeat"


async def keep_beating(connected: Callable[[], bool]) -> None:
    """Touch the heartbeat file every BEAT_EVERY seconds while `connected()` says so; remove it
    when stopped, so a bot that has shut down is unhealthy at once."""
    path = heartbeat_file()
    try:
        while True:
            if connected():
                path.touch()
            await asyncio.sleep(BEAT_EVERY)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def verdict() -> tuple[bool, str]:
    """Whether the running bot confirmed its gateway connection lately, and a sentence saying so."""
    try:
        age = max(0.0, time.time() - heartbeat_file().stat().st_mtime)
    except FileNotFoundError:
        age = None
    if age is None or age > STALE_AFTER:
        return False, f"Unhealthy: not connected to Discord in the last {STALE_AFTER:.0f} s."
    return True, f"Healthy: connected to Discord {age:.0f} s ago."


# Within the container engine's 10 s timeout; /healthz itself waits at most 1 s for the database.
ASK_TIMEOUT = 5.0
# What a wildcard address is asked on: Python listens on "::" for IPv6 alone.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def healthz_url(port: int, host: str) -> str:
    """Where the bot listening on `host`:`port` answers; a wildcard address is asked locally."""
    host = _WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"http://{host}:{port}/healthz"


def ask_healthz(url: str) -> tuple[bool, str]:
    """Whether the bot's /healthz says it is healthy, and a sentence saying so."""
    import urllib.error  # here: the heartbeat check does without it
    import urllib.request

    # Straight to the bot: a proxy from HTTP_PROXY would not reach it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=ASK_TIMEOUT) as reply:
            body = json.loads(reply.read())
            return True, f"Healthy: {url} says {body.get('status', 'ok')}."
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                reason = json.loads(exc.read()).get("reason")
            except (ValueError, AttributeError):
                reason = None
        return False, f"Unhealthy: {reason or f'{url} answered HTTP {exc.code}.'}"
    except (OSError, ValueError) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        why = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        return False, f"Unhealthy: {url} does not answer ({why})."


def main(metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> int:
    """Check through /healthz with a metrics port, else through the heartbeat file."""
    if metrics_port is not None:
        healthy, sentence = ask_healthz(healthz_url(metrics_port, metrics_host))
    else:
        healthy, sentence = verdict()
    print(sentence)
    return 0 if healthy else 1


def _from_environment() -> int:
    """METRICS_PORT and METRICS_HOST as the container sets them (no .env, no settings: this
    runs every 30 s and must stay quick)."""
    port = os.environ.get("METRICS_PORT", "").strip()
    host = os.environ.get("METRICS_HOST", "").strip() or "127.0.0.1"
    if port and not port.isdigit():
        print("Unhealthy: METRICS_PORT is not a port number.")
        return 1
    return main(int(port) if port else None, host)


if __name__ == "__main__":
    sys.exit(_from_environment())
