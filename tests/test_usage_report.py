"""The usage chart (a PNG drawn with matplotlib) and the CSV export."""

from __future__ import annotations

import csv
import gzip
import io
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone

import numpy
import pytest
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import UsageKind
from bot.db.usage_store import DaySpent, RecordedUse, UsageStore
from bot.usage_report import (
    CSV_COLUMNS,
    HEIGHT,
    IMAGES_COLOUR,
    TOKENS_COLOUR,
    WIDTH,
    chart_png,
    fitted,
    records_csv,
)

TODAY = date(2026, 12, 1)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image.convert("RGB")


def _pixels_of(png: bytes, colour: str) -> list[tuple[int, int]]:
    """Where the chart has exactly `colour` (a bar's fill), as (x, y)."""
    pixels = numpy.asarray(_image(png))
    rows, columns = numpy.nonzero((pixels == _rgb(colour)).all(axis=2))
    return [(int(x), int(y)) for x, y in zip(columns, rows, strict=True)]


def _use(days_ago: Sequence[int], *, tokens: int = 5_000, images: int = 3) -> list[DaySpent]:
    return [DaySpent(TODAY - timedelta(days=n), tokens + n, images) for n in days_ago]


def test_the_chart_is_a_png_of_about_1000_by_500() -> None:
    png = chart_png(_use(range(30)), today=TODAY, title="Usage")
    assert png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (WIDTH, HEIGHT) == (1000, 500)
    image.load()  # decodes every pixel


def test_bars_stand_where_use_was() -> None:
    early = chart_png(_use(range(25, 30)), today=TODAY, title="Usage")  # the span's first days
    late = chart_png(_use(range(5)), today=TODAY, title="Usage")  # its last days, today too
    assert len(_image(early).getcolors(maxcolors=WIDTH * HEIGHT) or []) > 20  # text, bars, axes

    for colour in (TOKENS_COLOUR, IMAGES_COLOUR):
        left = [x for x, _ in _pixels_of(early, colour)]
        right = [x for x, _ in _pixels_of(late, colour)]
        assert len(left) > 1_000 and len(right) > 1_000
        assert max(left) < WIDTH / 3
        assert min(right) > WIDTH * 2 / 3
    # Tokens above, images in a panel of their own below.
    tokens_rows = [y for _, y in _pixels_of(late, TOKENS_COLOUR)]
    images_rows = [y for _, y in _pixels_of(late, IMAGES_COLOUR)]
    assert max(tokens_rows) < min(images_rows)


def test_a_series_without_use_draws_no_bars() -> None:
    only_tokens = chart_png(_use(range(30), images=0), today=TODAY, title="Usage")
    assert _pixels_of(only_tokens, TOKENS_COLOUR)
    assert not _pixels_of(only_tokens, IMAGES_COLOUR)


def test_no_use_looks_different_from_use() -> None:
    nothing = chart_png([], today=TODAY, title="Usage")
    some = chart_png(_use([3]), today=TODAY, title="Usage")
    assert nothing.startswith(PNG_SIGNATURE)
    assert _image(nothing).size == (WIDTH, HEIGHT)
    assert nothing != some
    assert not _pixels_of(nothing, TOKENS_COLOUR)
    assert not _pixels_of(nothing, IMAGES_COLOUR)
    zero = [DaySpent(TODAY - timedelta(days=3), 0, 0)]
    assert chart_png(zero, today=TODAY, title="Usage") == nothing


def test_days_outside_the_span_are_left_out() -> None:
    inside = _use([0, 7, 29])
    outside = [
        DaySpent(TODAY - timedelta(days=30), 10**9, 500),
        DaySpent(TODAY - timedelta(days=400), 10**9, 500),
        DaySpent(TODAY + timedelta(days=1), 10**9, 500),
    ]
    assert chart_png(inside + outside, today=TODAY, title="Usage") == chart_png(
        inside, today=TODAY, title="Usage"
    )
    assert chart_png(outside, today=TODAY, title="Usage") == chart_png(
        [], today=TODAY, title="Usage"
    )
    # The same day outside a week is inside a month.
    assert chart_png(outside[:1], today=TODAY, title="Usage", span=31) != chart_png(
        [], today=TODAY, title="Usage", span=31
    )


def test_spans_of_other_lengths() -> None:
    for span in (1, 7, 90):
        png = chart_png(_use(range(span)), today=TODAY, title="Usage", span=span)
        assert _image(png).size == (WIDTH, HEIGHT)
        assert _pixels_of(png, TOKENS_COLOUR)
    with pytest.raises(ValueError, match="span"):
        chart_png([], today=TODAY, title="Usage", span=0)


def test_a_title_is_text_even_with_dollar_signs() -> None:
    """matplotlib reads $…$ as TeX: a server named like that must not break the chart."""
    png = chart_png(_use([1]), today=TODAY, title="Costs $\\frac{$ and $5")
    assert png.startswith(PNG_SIGNATURE)


def test_importing_the_module_does_not_import_matplotlib() -> None:
    check = (
        "import sys, bot.usage_report; "
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'matplotlib']; "
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _parsed(data: bytes) -> tuple[list[str], list[RecordedUse]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    header, body = rows[0], rows[1:]
    return header, [
        RecordedUse(
            datetime.fromisoformat(at),
            int(user),
            int(channel) if channel else None,
            UsageKind(kind),
            model,
            int(prompt),
            int(completion),
            int(images),
        )
        for at, user, channel, kind, model, prompt, completion, images in body
    ]


def _in_utc(record: RecordedUse) -> RecordedUse:
    at = record.at if record.at.tzinfo else record.at.replace(tzinfo=UTC)
    return RecordedUse(
        at.astimezone(UTC),
        record.user_id,
        record.channel_id,
        record.kind,
        record.model,
        record.prompt_tokens,
        record.completion_tokens,
        record.images,
    )


def test_the_csv_parses_back_to_the_records() -> None:
    records = [
        RecordedUse(
            datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=UTC),
            123456789012345678,
            987654321098765432,
            UsageKind.CHAT,
            "gpt-4o",
            1200,
            345,
            0,
        ),
        # A direct message: no channel kept. A time without its zone is UTC, as SQLite gives it.
        RecordedUse(datetime(2026, 12, 1, 0, 0, 1), 2, None, UsageKind.IMAGE, "dall-e-3", 0, 0, 4),
        RecordedUse(
            datetime(2026, 12, 1, 9, 30, tzinfo=timezone(timedelta(hours=9))),
            3,
            4,
            UsageKind.EDIT,
            'model, with "quotes"',
            0,
            0,
            1,
        ),
    ]
    data = records_csv(records)
    data.decode("utf-8")
    header, parsed = _parsed(data)
    assert header == list(CSV_COLUMNS)
    assert ",".join(header) == (
        "time,user_id,channel_id,kind,model,prompt_tokens,completion_tokens,images"
    )
    assert parsed == [_in_utc(record) for record in records]
    times = [row[0] for row in csv.reader(io.StringIO(data.decode(), newline=""))][1:]
    assert times[0] == "2026-11-30T23:59:59.999999Z"
    assert times[2] == "2026-12-01T00:30:00.000000Z"
    assert _parsed(records_csv([])) == (list(CSV_COLUMNS), [])


async def test_the_csv_of_what_was_recorded(sessions: async_sessionmaker[AsyncSession]) -> None:
    usage = UsageStore(sessions)
    await usage.record(
        user_id=1,
        guild_id=50,
        channel_id=60,
        kind=UsageKind.CHAT,
        model="gpt-4o",
        prompt_tokens=10,
        completion_tokens=2,
    )
    await usage.record(
        user_id=2, guild_id=50, channel_id=None, kind=UsageKind.IMAGE, model="dall-e-3", images=2
    )
    records = await usage.records(50, since=datetime.now(UTC) - timedelta(hours=1))
    assert len(records) == 2
    _, parsed = _parsed(records_csv(records))
    assert parsed == [_in_utc(record) for record in records]
    assert all(abs(record.at - datetime.now(UTC)) < timedelta(minutes=5) for record in parsed)


def test_an_export_too_big_to_attach_is_compressed_or_left_out() -> None:
    data = b"time,user_id\n" + b"2026-12-01T00:00:00Z,42\n" * 5_000
    assert fitted(data, "usage.csv", len(data)) == (data, "usage.csv")
    packed = fitted(data, "usage.csv", len(data) // 5)
    assert packed is not None and packed[1] == "usage.csv.gz"
    assert gzip.decompress(packed[0]) == data
    assert fitted(data, "usage.csv", 10) is None
