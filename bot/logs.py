"""The one place logging is set up."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # discord.http logs every request and rate-limit wait at DEBUG/INFO; keep it to warnings.
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING if level != "DEBUG" else logging.INFO)
    # The bot never joins voice, so discord.py's warnings about voice libraries are noise.
    voice = logging.getLogger("discord.client")
    voice.filters[:] = [f for f in voice.filters if not isinstance(f, _NoVoiceWarnings)]
    voice.addFilter(_NoVoiceWarnings())


class _NoVoiceWarnings(logging.Filter):
    _MESSAGES = frozenset(
        {
            "PyNaCl is not installed, voice will NOT be supported",
            "davey is not installed, voice will NOT be supported",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._MESSAGES
