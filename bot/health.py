"""A heartbeat file for container health checks, so that checking costs no call to Discord.

The running bot touches the file while its gateway connections are open; `python -m bot health`
only looks at how old the file is. `python -m bot.health` is the same check without importing the
bot (a tenth of the CPU time), for the container engine that runs it every 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def main() -> int:
    healthy, sentence = verdict()
    print(sentence)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
