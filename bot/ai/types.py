"""Plain result and setting types of the API client (no behaviour, no I/O)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

Message = Mapping[str, Any]
"""One chat message in OpenAI format, e.g. `{"role": "user", "content": "Hi"}`."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `chat` bounds a whole non-stream call; `stream_idle` the wait for each chunk;
    `thinking` the wait for a reasoning model's first word (it may think silently for long)."""

    connect: float = 10
    chat: float = 120
    stream_idle: float = 60
    thinking: float = 600
    images: float = 300
    other: float = 60


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer: text of choice `choice` (one of the `n` asked for), or,
    with `reasoning`, of the summary of the model's thinking before it answers."""

    text: str
    choice: int = 0
    reasoning: bool = False


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str | None
    usage: Usage | None
    model: str | None


@dataclass(frozen=True)
class GeneratedImage:
    b64_json: str | None
    url: str | None
    revised_prompt: str | None


@dataclass(frozen=True)
class ImageResult:
    images: list[GeneratedImage]
    usage: Usage | None


@dataclass(frozen=True)
class ImageFile:
    """An image to upload: raw bytes plus the name and type the multipart part announces."""

    data: bytes
    filename: str
    content_type: str = "image/png"


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: list[list[float]]
    usage: Usage | None


class TextStream(Protocol):
    """A streamed answer: `async with` it, then `async for` its Deltas; leaving or `close()`
    drops it."""

    @property
    def accepted(self) -> bool:
        """The API took the request (it is paid for, even if no word comes back)."""
        ...

    @property
    def finish_reason(self) -> str | None: ...

    @property
    def finish_reasons(self) -> Mapping[int, str]:
        """Why each of the `n` answers ended, by choice."""
        ...

    @property
    def usage(self) -> Usage | None:
        """Of all the `n` answers together."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __aiter__(self) -> AsyncIterator[Delta]: ...

    def close(self) -> None: ...
