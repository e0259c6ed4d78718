"""Image work off the event loop, bot-wide bounded by the pixels it decodes at once."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from bot.images.files import CheckedImage, check_image, check_mask, check_size, pixel_count

T = TypeVar("T")


class Attachment(Protocol):
    """A file a person sent, as Discord's attachments have it."""

    @property
    def size(self) -> int: ...

    async def read(self) -> bytes: ...


class ImageWork:
    """Runs Pillow work in threads, as many jobs side by side as `budget_pixels` allows.

    Each job counts the pixels of the picture it works on; jobs start in the order they came
    once theirs fit, so large jobs wait their turn rather than run side by side, and one larger
    than the whole budget still runs, alone.
    """

    def __init__(self, *, max_bytes: int, max_pixels: int, budget_pixels: int) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._budget = budget_pixels
        self._used = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def run(self, pixels: int, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        await self._start(pixels)
        job = asyncio.ensure_future(asyncio.to_thread(work, *args, **kwargs))

        # A thread can't be stopped: if the caller gives up, its pixels stay counted until the
        # thread ends (and its failure, seen by no one, is not reported as unhandled).
        def ended(job: asyncio.Future[T]) -> None:
            self._end(pixels)
            if not job.cancelled():
                job.exception()

        job.add_done_callback(ended)
        return await asyncio.shield(job)

    async def read(self, attachment: Attachment, *, min_side: int = 16) -> CheckedImage:
        """The image a person attached, checked by its content: refused from its declared size
        before downloading, from its header before decoding."""
        check_size(attachment.size, max_bytes=self.max_bytes)
        data = await attachment.read()
        return await self.run(
            await asyncio.to_thread(pixel_count, data),
            check_image,
            data,
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            min_side=min_side,
        )

    async def read_mask(self, attachment: Attachment, image: CheckedImage) -> CheckedImage:
        check_size(attachment.size, max_bytes=self.max_bytes, what="mask")
        data = await attachment.read()
        return await self.run(
            await asyncio.to_thread(pixel_count, data),
            check_mask,
            data,
            image,
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
        )

    async def _start(self, pixels: int) -> None:
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, turn))
        self._admit()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # admitted as it was cancelled
                self._end(pixels)
            else:
                self._admit()  # those behind it may fit now
            raise

    def _end(self, pixels: int) -> None:
        self._used -= pixels
        self._admit()

    def _admit(self) -> None:
        while self._waiting:
            pixels, turn = self._waiting[0]
            if turn.done():  # given up while waiting
                self._waiting.popleft()
                continue
            if self._used and self._used + pixels > self._budget:
                return
            self._waiting.popleft()
            self._used += pixels
            turn.set_result(None)
