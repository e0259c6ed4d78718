"""Usage as a picture and as a spreadsheet: the chart and the CSV export of `/usage`.

matplotlib is imported by `chart_png` only, on its first call, so that starting the bot does not
pay for it. The chart is drawn on its own `Figure` with the Agg canvas (never `pyplot`, which
keeps global state), so it may be drawn in a worker thread.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import warnings
from collections.abc import Sequence
from datetime import UTC, date, timedelta
from typing import TYPE_CHECKING

from bot.db.usage_store import DaySpent, RecordedUse

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TOKENS_COLOUR = "#5865f2"
IMAGES_COLOUR = "#eb459e"
WIDTH, HEIGHT = 1000, 500  # pixels
_DPI = 100
_MOST_DATE_LABELS = 7

CSV_COLUMNS = (
    "time",
    "user_id",
    "channel_id",
    "kind",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "images",
)


# Names of people and servers may hold characters the built-in font lacks: they show as boxes,
# and the log need not say so for each one.
warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)


def chart_png(days: Sequence[DaySpent], *, today: date, title: str, span: int = 30) -> bytes:
    """A PNG of WIDTH×HEIGHT pixels: tokens per day over the `span` days ending `today` as bars,
    images per day in a panel below. Days without use show as zero; days outside are left out.
    Takes about a tenth of a second, and a second more on the first call, which imports
    matplotlib: run it in a thread."""
    if span < 1:
        raise ValueError("span must be at least one day")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    first = today - timedelta(days=span - 1)
    dates = [first + timedelta(days=n) for n in range(span)]
    tokens, images = [0] * span, [0] * span
    for spent in days:
        n = (spent.day - first).days
        if 0 <= n < span:
            tokens[n] += spent.tokens
            images[n] += spent.images

    # Margins fixed rather than found by a layout engine, which would draw everything twice.
    figure = Figure(figsize=(WIDTH / _DPI, HEIGHT / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)  # draws on itself, whatever backend pyplot would pick
    figure.suptitle(title, y=0.975, fontsize=14, fontweight="bold", parse_math=False)
    grid = figure.add_gridspec(
        2, 1, height_ratios=(2, 1), left=0.06, right=0.985, top=0.86, bottom=0.07, hspace=0.3
    )
    tokens_axes = figure.add_subplot(grid[0])
    images_axes = figure.add_subplot(grid[1], sharex=tokens_axes)
    days_shown = f"{span} day" + ("s" if span != 1 else "")

    for axes, values, colour, name in (
        (tokens_axes, tokens, TOKENS_COLOUR, "Tokens"),
        (images_axes, images, IMAGES_COLOUR, "Images"),
    ):
        positions = [n for n, value in enumerate(values) if value]
        axes.bar(positions, [values[n] for n in positions], width=0.75, color=colour)
        axes.set_title(
            f"{name} per day: {_short(sum(values))} in {days_shown}",
            loc="left",
            fontsize=10,
            parse_math=False,
        )
        if any(values):
            axes.set_ylim(0, max(values) * 1.08)
            axes.yaxis.set_major_locator(
                MaxNLocator(nbins=4, steps=[1, 2, 5, 10], integer=True, min_n_ticks=1)
            )
        else:
            axes.set_ylim(0, 1)
            axes.yaxis.set_major_locator(FixedLocator([0]))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _short(int(value))))
        axes.yaxis.set_minor_locator(NullLocator())
        _plain(axes)

    # A label every few days, counted back from today so that today always has one.
    step = math.ceil(span / _MOST_DATE_LABELS)
    labelled = list(range(span - 1, -1, -step))[::-1]
    images_axes.set_xlim(-0.6, span - 0.4)
    images_axes.xaxis.set_major_locator(FixedLocator(labelled))
    images_axes.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _: _day_label(dates[round(x)]) if 0 <= x < span else "")
    )
    tokens_axes.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
    if not any(tokens) and not any(images):
        tokens_axes.text(
            0.5,
            0.5,
            f"No use in these {days_shown}",
            transform=tokens_axes.transAxes,
            ha="center",
            va="center",
            fontsize=13,
            color="#80848e",
            parse_math=False,
        )

    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=_DPI)
    return out.getvalue()


def records_csv(records: Sequence[RecordedUse]) -> bytes:
    """The requests as UTF-8 CSV with a header row (CSV_COLUMNS); times in ISO 8601, UTC."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for record in records:
        # SQLite gives back the stored UTC time without its zone.
        at = record.at.replace(tzinfo=UTC) if record.at.tzinfo is None else record.at
        writer.writerow(
            (
                at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                record.user_id,
                "" if record.channel_id is None else record.channel_id,
                record.kind.value,
                record.model,
                record.prompt_tokens,
                record.completion_tokens,
                record.images,
            )
        )
    return out.getvalue().encode()


def _plain(axes: Axes) -> None:
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.spines["bottom"].set_color("#b5bac1")
    axes.grid(axis="y", color="#e3e5e8", linewidth=0.8)
    axes.set_axisbelow(True)
    axes.tick_params(axis="y", length=0, labelsize=9, labelcolor="#4e5058")
    axes.tick_params(axis="x", labelsize=9, labelcolor="#4e5058", color="#b5bac1")


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


def _short(number: int) -> str:
    """1234 → "1.2k", 2500000 → "2.5M", 3000000000 → "3B"."""
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        # 999,960 reads "1M" rather than "1000k".
        if abs(number) >= 1_000 and round(abs(number) / size, 1) >= 1:
            text = f"{number / size:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return str(number)


def fitted(data: bytes, filename: str, room: int) -> tuple[bytes, str] | None:
    """The file as it fits in `room` bytes: as it is, else gzip-compressed (CSV shrinks about
    tenfold); None if even that is too big."""
    if len(data) <= room:
        return data, filename
    packed = gzip.compress(data)
    return (packed, f"{filename}.gz") if len(packed) <= room else None
