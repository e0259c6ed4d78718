"""The lenient SSE reader, fed byte chunks split at awkward places."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol

from bot.ai.sse import SseDecoder, iter_sse_data


async def _chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _collect(chunks: Iterable[bytes]) -> list[str]:
    return [data async for data in iter_sse_data(_chunks(chunks))]


def _splits(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


QUIRKY = (
    b": keep-alive\r\n\r\n"
    b'data: {"a": 1}  \r\n\r\n'
    b"event: message\nid: 7\nretry: 1000\n"
    b'data:{"b": "caf\xc3\xa9 \xe2\x82\xac"}\n\n'
    b"data: line one\ndata: line two\n\n"
    b": ping\n\n"
    b"data: [DONE]\n\n"
    b"data: after done\n\n"
)
EXPECTED = ['{"a": 1}', '{"b": "café €"}', "line one\nline two"]


async def test_quirky_stream_in_one_chunk() -> None:
    assert await _collect([QUIRKY]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16])
async def test_quirky_stream_in_small_chunks(size: int) -> None:
    # Size 1 splits every `\r\n` and every multi-byte UTF-8 character.
    assert await _collect(_splits(QUIRKY, size)) == EXPECTED


async def test_every_single_split_point() -> None:
    for cut in range(1, len(QUIRKY)):
        assert await _collect([QUIRKY[:cut], QUIRKY[cut:]]) == EXPECTED, cut


async def test_split_inside_crlf_and_inside_utf8() -> None:
    euro = "€".encode()
    chunks = [b"data: x\r", b"\n\r", b"\ndata: " + euro[:1], euro[1:2], euro[2:] + b"\n\n"]
    assert await _collect(chunks) == ["x", "€"]


async def test_final_event_without_blank_line_is_yielded_at_eof() -> None:
    assert await _collect([b"data: first\n\ndata: last"]) == ["first", "last"]
    assert await _collect([b"data: last\n"]) == ["last"]


async def test_done_stops_even_without_blank_line() -> None:
    assert await _collect([b"data: a\n\ndata: [DONE]\ndata: b\n\n"]) == ["a"]


async def test_data_field_without_value_and_without_colon() -> None:
    # As the SSE spec says: each is an event whose data is the empty string.
    assert await _collect([b"data\n\ndata:\n\n"]) == ["", ""]


async def test_blank_line_with_spaces_ends_an_event() -> None:
    assert await _collect([b"data: a \n  \ndata: b\n\n"]) == ["a", "b"]


async def test_several_megabyte_line() -> None:
    big = "x" * (5 * 1024 * 1024)
    raw = f"data: {big}\n\ndata: small\n\n".encode()
    assert await _collect(_splits(raw, 65536)) == [big, "small"]


class _Protocol(BaseProtocol):
    """Enough of a protocol for a StreamReader fed by hand (no transport to pause)."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


async def test_reads_an_aiohttp_stream_reader_beyond_its_line_limit() -> None:
    loop = asyncio.get_running_loop()
    reader = aiohttp.StreamReader(_Protocol(loop), limit=1024, loop=loop)
    big = "y" * 100_000  # far over the reader's limit of 1 KiB
    reader.feed_data(f"data: {big}\n\n".encode())
    reader.feed_data(b"data: [DONE]\n\n")
    reader.feed_eof()
    assert [data async for data in iter_sse_data(reader)] == [big]


def test_decoder_close_flushes_partial_line() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\n\ndata: b") == ["a"]
    assert decoder.close() == ["b"]
    assert decoder.close() == []
