"""Peak memory of /edit with dall-e-2 on an 8000×8000 PNG, for one job and for four at once.

    python -m bench.images [--json]

The picture (smooth colour fields under a few hundred drawn rings: photo-like detail that still
fits MAX_IMAGE_BYTES as a PNG) is made in a child process. Each measurement runs in a fresh
child process that does what /edit does, with the real code: the attachment read as bytes,
checked under the pixel budget, converted for dall-e-2 and sent by the API client to the fake
API, the usage recorded in a SQLite file, the result fitted for upload and remembered. Memory is
the peak resident set (VmHWM, reset once idle) over the resident set when idle, in MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.db.repository import ImageRef
    from bot.images.delivery import Delivery, Repeat

SIDE = 8000
TARGETS_MB = {1: 250.0, 4: 400.0}
MB = 1024 * 1024


def _make_picture(path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFilter

    generator = random.Random(7)
    fields = Image.frombytes("RGB", (160, 160), generator.randbytes(160 * 160 * 3))
    picture = fields.filter(ImageFilter.GaussianBlur(2)).resize(
        (SIDE, SIDE), Image.Resampling.BICUBIC
    )
    draw = ImageDraw.Draw(picture)
    for _ in range(300):
        x, y, size = (
            generator.randrange(SIDE),
            generator.randrange(SIDE),
            generator.randrange(20, 600),
        )
        colour = (generator.randrange(256), generator.randrange(256), generator.randrange(256))
        draw.ellipse((x, y, x + size, y + size), outline=colour, width=generator.randrange(1, 12))
    picture.save(path, "PNG")


def _memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in kB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def _forget_peak() -> None:
    """Forget the peak of starting up (Linux: "5" resets VmHWM to the current VmRSS)."""
    Path("/proc/self/clear_refs").write_text("5")


class _File:
    """An attachment as /edit gets it: a declared size, then the bytes when read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    async def read(self) -> bytes:
        return await asyncio.to_thread(self.path.read_bytes)


class _Sink:
    """Where /edit shows its result, short of Discord: the images fitted for upload."""

    def __init__(self) -> None:
        self.failure: str | None = None

    async def start(self, text: str) -> None:
        pass

    async def attachments_of(self, message_id: int) -> None:
        return None

    async def deliver(self, delivery: Delivery) -> list[ImageRef]:
        from bot.db.repository import ImageRef

        files = await delivery.files(10 * MB)
        return [ImageRef(1, 1, number, file.filename) for number, file in enumerate(files)]

    async def fail(self, sentence: str) -> None:
        self.failure = sentence

    async def offer_again(self, repeat: Repeat) -> None:
        pass


async def _measure(picture: Path, jobs: int, folder: Path) -> dict[str, Any]:
    import aiohttp

    from bot.admission import Person, Request, RequestKind
    from bot.ai import ApiClient, Timeouts
    from bot.app import build_admission
    from bot.config import Settings
    from bot.db import migrate
    from bot.db.engine import create_engine, create_sessionmaker
    from bot.db.models import ConversationKind
    from bot.db.repository import ConversationStore
    from bot.db.usage_store import UsageStore
    from bot.images.service import ImageOptions, ImageService
    from bot.images.work import ImageWork
    from bot.places import Place
    from tests.fakes.api import FakeApi

    defaults = Settings(
        discord_token="-",
        acedatacloud_api_token="-",
        image_model="dall-e-2",
        image_models=["dall-e-2"],
        _env_file=None,
    )
    engine = create_engine(f"sqlite+aiosqlite:///{folder / 'bench.db'}")
    await migrate.upgrade(engine)
    sessions = create_sessionmaker(engine)
    async with FakeApi.running() as api, aiohttp.ClientSession() as session:
        client = ApiClient(session, base_url=api.url, token=api.token, timeouts=Timeouts())
        work = ImageWork(
            max_bytes=defaults.max_image_bytes,
            max_pixels=defaults.max_image_pixels,
            budget_pixels=defaults.max_image_pixels,
        )
        service = ImageService(
            client,
            build_admission(defaults, sessions),
            ConversationStore(sessions),
            UsageStore(sessions),
            ImageOptions(),
            work,
        )

        async def edit(person: int) -> None:
            place = Place(person, 1, ConversationKind.CHANNEL)
            asked = Request(RequestKind.EDIT, place, Person(person), model="dall-e-2")
            request = await service.admit(asked, "make it autumn")
            sink = _Sink()
            await service.make(request, sink, author_name=f"person{person}", image=_File(picture))
            assert sink.failure is None, sink.failure

        idle = _memory()
        _forget_peak()
        started = time.perf_counter()
        await asyncio.gather(*(edit(person) for person in range(1, jobs + 1)))
        seconds = time.perf_counter() - started
        peak = _memory()
        sent = api.requests_to("/images/edits")
    await engine.dispose()
    assert len(sent) == jobs, f"the fake API got {len(sent)} edits, not {jobs}"
    return {
        "jobs": jobs,
        "idle_mb": idle["VmRSS"] / 1024,
        "peak_over_idle_mb": (peak["VmHWM"] - idle["VmRSS"]) / 1024,
        "seconds": seconds,
    }


def _child(picture: Path, jobs: int) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.images",
        "--measure",
        str(jobs),
        "--picture",
        str(picture),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # in the child process
    parser.add_argument("--picture", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(asyncio.run(_measure(args.picture, args.measure, Path(folder)))))
        return 0

    with tempfile.TemporaryDirectory() as folder:
        picture = Path(folder) / "picture.png"
        maker = "from pathlib import Path; from bench.images import _make_picture; "
        subprocess.run(
            [sys.executable, "-c", maker + f"_make_picture(Path({str(picture)!r}))"], check=True
        )
        figures = [_child(picture, jobs) for jobs in TARGETS_MB]
        size_mb = picture.stat().st_size / MB
    if args.json:
        print(json.dumps({"picture_mb": size_mb, "runs": figures}))
    passed = True
    print(f"/edit with dall-e-2 of a {SIDE}×{SIDE} PNG ({size_mb:.1f} MB):")
    for figure in figures:
        target = TARGETS_MB[figure["jobs"]]
        ok = figure["peak_over_idle_mb"] <= target
        passed &= ok
        print(
            f"  {figure['jobs']} job(s) at once: peak RSS {figure['peak_over_idle_mb']:.0f} MB "
            f"over idle ({figure['idle_mb']:.0f} MB), target ≤ {target:.0f} MB "
            f"{'ok' if ok else 'MISSED'}; {figure['seconds']:.1f} s"
        )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
