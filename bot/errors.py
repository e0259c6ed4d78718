"""Errors every service shares, and the one place a failure becomes a sentence for a person."""

from __future__ import annotations

import logging

from bot.ai import ApiError

UNEXPECTED = "Something went wrong; the bot's admin can find the details in its log."


class UserError(Exception):
    """Something the person can fix; `str()` is one sentence for them."""


def sentence_for(error: BaseException, *, doing: str, log: logging.Logger) -> str:
    """The sentence a person sees for `error`; the admin's log gets the details (with the
    upstream trace id for API failures). `doing` names the action for the log."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, ApiError):
        log.warning("%s failed: %s", doing, error)
        return error.user_message
    log.error("%s failed", doing, exc_info=error)
    return UNEXPECTED
