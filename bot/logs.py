"""The one place logging is set up, and the last line of defence for what must not be logged."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote

# Libraries that log whole payloads at DEBUG: message text, SQL parameters, tokens in URLs.
# They stay at WARNING whatever LOG_LEVEL says.
_PAYLOAD_LOGGERS = (
    "discord.http",
    "discord.gateway",
    "discord.webhook",
    "sqlalchemy.engine",
    "aiosqlite",
)
# Interaction and webhook URLs carry their token as a path segment.
_TOKEN_IN_URL = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?'\"]+")
REDACTED = "[redacted]"


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then removes the secrets it knows and tokens in Discord URLs from the
    whole line, traceback included."""

    def __init__(self, fmt: str, datefmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt, datefmt)
        known = {form for secret in secrets if secret for form in (secret, quote(secret, ""))}
        # Longest first, so a secret that contains another is removed whole.
        self._secrets = sorted(known, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))

    def redact(self, text: str) -> str:
        text = _TOKEN_IN_URL.sub(rf"\1{REDACTED}", text)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


class JsonFormatter(RedactingFormatter):
    """One JSON object a line, for log shippers: time (UTC), level, logger, message, and the
    traceback as `exception`; redacted as the plain lines are."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__("%(message)s", "", secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, *, secrets: Iterable[str] = (), as_json: bool = False) -> None:
    """Log lines to stderr at `level`, plain or (`as_json`) one JSON object each, with
    `secrets` removed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(secrets)
        if as_json
        else RedactingFormatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S", secrets
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
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
