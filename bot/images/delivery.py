"""How an image job reaches the person: the port the Discord side implements, and what passes
through it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.db.repository import ImageRef
from bot.images.files import fit_for_upload, pixel_count
from bot.images.work import Attachment, ImageWork


@dataclass(frozen=True)
class MadeImage:
    data: bytes
    revised_prompt: str | None


@dataclass(frozen=True)
class UploadFile:
    data: bytes
    filename: str


@dataclass(frozen=True)
class Repeat:
    """What a Regenerate button carries to ask again; the prompt and model are found again
    through the images it is under."""

    count: int
    size: str | None
    quality: str | None


@dataclass(frozen=True)
class Delivery:
    """The images of a finished job, with their caption."""

    caption: str
    images: Sequence[MadeImage]
    work: ImageWork

    async def files(self, limit: int) -> list[UploadFile]:
        """The images as files of at most `limit` bytes each: recompressed when over it."""
        files = []
        for number, image in enumerate(self.images, start=1):
            pixels = await asyncio.to_thread(pixel_count, image.data)
            data, extension = await self.work.run(
                pixels, fit_for_upload, image.data, limit=limit, max_pixels=self.work.max_pixels
            )
            files.append(UploadFile(data, f"image-{number}.{extension}"))
        return files


class ImageSink(Protocol):
    """Where an image job is shown: one message that counts the seconds while the model works,
    then becomes the images, or the sentence saying why there are none."""

    async def start(self, text: str) -> None:
        """Show `text`, with the seconds waited counting up until the job ends."""
        ...

    async def attachments_of(self, message_id: int) -> Mapping[int, Attachment] | None:
        """The files of an earlier message in the same place, by id; None if it is deleted."""
        ...

    async def deliver(self, delivery: Delivery) -> list[ImageRef]:
        """Show the images in place of the progress; where each of them landed."""
        ...

    async def fail(self, sentence: str) -> None:
        """Show why there are no images in place of the progress."""
        ...

    async def offer_again(self, repeat: Repeat) -> None:
        """Add a Regenerate button under the delivered images."""
        ...
