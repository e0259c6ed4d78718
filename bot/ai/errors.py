"""Typed errors for the OpenAI-compatible API, and the mapping from an HTTP reply to them.

Each class carries one sentence fit for an end user (`user_message`) and whether trying again
can help (`retryable`). The instance keeps what support asks for: status, code, trace_id and the
`x-request-id` header. `str(err)` is meant for an admin's log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

_MAX_MESSAGE = 500


class ApiError(Exception):
    """Any failure talking to the API."""

    user_message: ClassVar[str] = "Something went wrong while talking to the AI service."
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        trace_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.trace_id = trace_id
        self.request_id = request_id

    @property
    def can_retry(self) -> bool:
        """Whether this very failure is worth another attempt."""
        return self.retryable

    def redact(self, secrets: Iterable[str]) -> None:
        """Remove secrets from everything `str()` shows (servers sometimes echo what they got)."""
        self.message = redact(self.message, secrets)
        self.code = redact(self.code, secrets) if self.code is not None else None
        self.args = (self.message,)

    def __str__(self) -> str:
        head = " ".join(
            part
            for part in (
                f"HTTP {self.status}" if self.status is not None else "",
                self.code or "",
            )
            if part
        )
        text = f"{head}: {self.message}" if head else self.message
        ids = [f"trace_id={self.trace_id}"] if self.trace_id else []
        if self.request_id:
            ids.append(f"request_id={self.request_id}")
        return f"{text} ({', '.join(ids)})" if ids else text


class CreditsExhausted(ApiError):
    user_message = "The AI service account is out of credits; an admin needs to top it up."


class ContentRefused(ApiError):
    user_message = "The AI service refused this request because of its content policy."


class InvalidToken(ApiError):
    user_message = (
        "The bot's AI service token is missing, invalid or expired; an admin must fix it."
    )


class RateLimited(ApiError):
    user_message = "The AI service is busy right now; please try again in a moment."
    retryable = True


class ApiTimeout(ApiError):
    user_message = "The AI service took too long to answer; please try again."
    retryable = True

    @property
    def can_retry(self) -> bool:
        # Only the gateway's 504 is worth repeating; our own timeout already spent the budget.
        return self.status == 504 or self.code == "timeout"


class ServiceUnavailable(ApiError):
    user_message = "The AI service is unavailable right now; please try again later."
    retryable = True


class BadRequest(ApiError):
    user_message = "The AI service rejected the request."


class RequestTooLarge(BadRequest):
    user_message = "The request is too large for the AI service; try something shorter or smaller."


class ImageTooLarge(BadRequest):
    user_message = "The generated image is too large to attach."


_BY_CODE: dict[str, type[ApiError]] = {
    "used_up": CreditsExhausted,
    "insufficient_quota": CreditsExhausted,
    "forbidden": ContentRefused,
    "content_policy_violation": ContentRefused,
    "moderation_blocked": ContentRefused,
    "invalid_token": InvalidToken,
    "token_expired": InvalidToken,
    "no_token": InvalidToken,
    "token_mismatched": InvalidToken,
    "invalid_api_key": InvalidToken,
    "too_many_requests": RateLimited,
    "rate_limit_exceeded": RateLimited,
    "timeout": ApiTimeout,
    "api_error": ServiceUnavailable,
    "server_error": ServiceUnavailable,
    "service_unavailable": ServiceUnavailable,
    "request_too_large": RequestTooLarge,
}


# The error codes the bot tells apart (any other is the upstream's own word).
KNOWN_CODES = frozenset(_BY_CODE)


def _class_for(status: int | None, code: str | None) -> type[ApiError]:
    if code and code.lower() in _BY_CODE:
        return _BY_CODE[code.lower()]
    if status is None or status < 400:
        # An error payload inside a 200 reply or mid-stream: the upstream failed.
        return ServiceUnavailable
    if status == 401:
        return InvalidToken
    if status == 413:
        return RequestTooLarge
    if status == 429:
        return RateLimited
    if status in (408, 504):
        return ApiTimeout
    if status >= 500:
        return ServiceUnavailable
    return BadRequest


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float):
        return str(value)
    return None


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)  # aiohttp's headers are case-insensitive already
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value or None


def error_from_response(
    status: int | None,
    body: bytes | str | Mapping[str, Any] | None,
    headers: Mapping[str, str] | None = None,
    *,
    secrets: Iterable[str] = (),
) -> ApiError:
    """Build the matching ApiError from an error reply (or a mid-stream error payload).

    Accepts `{"error": {...}, "trace_id": ...}`, OpenAI's `{"error": {message, type, param,
    code}}`, `{"error": "text"}`, a body without `error`, or a body that is not JSON at all.
    """
    payload: Mapping[str, Any] | None = None
    raw = ""
    if isinstance(body, Mapping):
        payload = body
    elif body:
        raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, Mapping):
            payload = parsed

    code = message = trace_id = None
    if payload is not None:
        error = payload.get("error")
        if isinstance(error, Mapping):
            # OpenAI may leave `code` null and put the useful word in `type`.
            code = _text(error.get("code")) or _text(error.get("type"))
            message = _text(error.get("message"))
            trace_id = _text(error.get("trace_id"))
        elif isinstance(error, str):
            message = _text(error)
        code = code or _text(payload.get("code"))
        message = message or _text(payload.get("message")) or _text(payload.get("detail"))
        trace_id = _text(payload.get("trace_id")) or trace_id
    elif raw.strip():
        message = " ".join(raw.split())  # e.g. a proxy's HTML page, squeezed onto one line

    if not message:
        message = f"HTTP {status} without details" if status is not None else "error reported"
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "…"
    cls = _class_for(status, code)
    if cls is RequestTooLarge and "too large" not in message.lower():
        message = f"request too large: {message}"
    err = cls(
        message,
        status=status,
        code=code,
        trace_id=trace_id or _header(headers, "x-trace-id"),
        request_id=_header(headers, "x-request-id"),
    )
    err.redact(secrets)
    return err
