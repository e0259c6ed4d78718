"""A lenient Server-Sent Events reader.

Lines are split by hand from raw chunks, so a single multi-megabyte `data:` line works whatever
aiohttp's line limit is. Only `data` matters to this API: `event:`, `id:` and `retry:` lines and
`:` comments (keep-alives) are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

DONE = "[DONE]"


class SseDecoder:
    """Incremental decoder: feed raw bytes, get back the data of each complete event."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already known to hold no newline
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        start = 0
        while (end := self._buffer.find(b"\n", max(start, self._scanned))) >= 0:
            self._line(bytes(self._buffer[start:end]), events)
            start = end + 1
        del self._buffer[:start]
        self._scanned = len(self._buffer)
        return events

    def close(self) -> list[str]:
        """End of input: flush a last line and an event that lacked its blank line."""
        events: list[str] = []
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
            self._scanned = 0
        self._dispatch(events)
        return events

    def _line(self, raw: bytes, events: list[str]) -> None:
        # Decode whole lines only, so a UTF-8 character split across chunks stays intact.
        line = raw.decode("utf-8", "replace").rstrip(" \t\r")
        if not line.strip():
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if name.strip() != "data":
            return
        value = value.removeprefix(" ")
        if value == DONE and not self._data:
            # Don't wait for the blank line: some servers keep the connection open after it.
            events.append(DONE)
            return
        self._data.append(value)

    def _dispatch(self, events: list[str]) -> None:
        if self._data:
            events.append("\n".join(self._data))
            self._data.clear()


async def _chunks(content: aiohttp.StreamReader | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if isinstance(content, aiohttp.StreamReader):
        # Not `async for` on the reader itself: that iterates by line and has a line limit.
        while chunk := await content.readany():
            yield chunk
    else:
        async for chunk in content:
            yield chunk


async def iter_sse_data(
    content: aiohttp.StreamReader | AsyncIterator[bytes],
) -> AsyncIterator[str]:
    """Yield the data of each event until `[DONE]` (not yielded) or the end of the body."""
    decoder = SseDecoder()
    async for chunk in _chunks(content):
        for data in decoder.feed(chunk):
            if data == DONE:
                return
            yield data
    for data in decoder.close():
        if data == DONE:
            return
        yield data
