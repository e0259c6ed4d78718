"""Generating and editing images, one job per person, remembered in the conversation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from weakref import WeakValueDictionary

from bot.ai import ApiClient, GeneratedImage, ImageFile, ImageResult
from bot.conversation.context import question_text
from bot.conversation.tokens import estimate_tokens
from bot.db.models import UsageKind
from bot.db.repository import ConversationStore, ImageRef, NewTurn, UsageStore
from bot.errors import UserError
from bot.images.files import CheckedImage, prepare_for_model
from bot.images.models import ImageModel, image_model
from bot.images.work import ImageWork
from bot.places import Place

log = logging.getLogger(__name__)

# Image jobs one person may have running or waiting.
_JOBS_PER_PERSON = 2
T = TypeVar("T")


@dataclass(frozen=True)
class ImageOptions:
    default_model: str
    models: Sequence[str]
    max_image_bytes: int
    # Generations as tasks polled this often (None: one request held open until done).
    task_poll_every: float | None = None


@dataclass(frozen=True)
class ImageRequest:
    """What a person asked for, checked against what the model takes."""

    prompt: str
    model: ImageModel
    size: str | None
    quality: str | None
    count: int


@dataclass(frozen=True)
class MadeImage:
    data: bytes
    revised_prompt: str | None


@dataclass(frozen=True)
class ShownImage:
    """Where an image was attached on Discord."""

    channel_id: int
    message_id: int
    attachment_id: int
    filename: str
    content_type: str | None


@dataclass(frozen=True)
class ImageSource:
    """How the images of a message were made, to make them again."""

    prompt: str
    model: str | None
    author_id: int | None


class ImageService:
    def __init__(
        self,
        api: ApiClient,
        conversations: ConversationStore,
        usage: UsageStore,
        options: ImageOptions,
        work: ImageWork,
    ) -> None:
        self._api = api
        self._conversations = conversations
        self._usage = usage
        self.options = options
        self._jobs: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()
        self._queued: Counter[int] = Counter()
        self.work = work

    def request(
        self,
        prompt: str,
        *,
        model: str | None,
        size: str | None = None,
        quality: str | None = None,
        count: int = 1,
        editing: bool = False,
    ) -> ImageRequest:
        """Check a request before anything is sent; UserError says what does not fit."""
        name = model or self.options.default_model
        if name not in self.options.models and name != self.options.default_model:
            raise UserError(f"I don't know the image model {name!r}; pick one from the list.")
        spec = image_model(name)
        if editing and not spec.edits:
            raise UserError(f"{name} can't edit images; pick another model.")
        if size is not None and size not in spec.sizes:
            raise UserError(f"{name} makes images of {_listed(spec.sizes)}, not {size}.")
        if quality is not None and quality not in spec.qualities:
            offered = (
                f"takes the qualities {_listed(spec.qualities)}"
                if spec.qualities
                else ("has no quality setting")
            )
            raise UserError(f"{name} {offered}, so not {quality!r}.")
        if len(prompt) > spec.max_prompt_chars:
            raise UserError(
                f"{name} takes prompts of up to {spec.max_prompt_chars} characters; "
                f"yours has {len(prompt)}."
            )
        if not 1 <= count <= 4:
            raise UserError("You can ask for 1 to 4 images at a time.")
        return ImageRequest(prompt, spec, size, quality, count)

    @contextlib.asynccontextmanager
    async def job_of(self, user_id: int) -> AsyncIterator[None]:
        """One image job per person at a time: a second one waits for the first, a third is
        refused (images are slow and cost money)."""
        lock = self._jobs.setdefault(user_id, asyncio.Lock())
        if self._queued[user_id] >= _JOBS_PER_PERSON:
            raise UserError("You already have images being made; wait for them to finish.")
        self._queued[user_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._queued[user_id] -= 1
            if not self._queued[user_id]:
                del self._queued[user_id]

    async def generate(
        self, request: ImageRequest, *, user_id: int, place: Place
    ) -> list[MadeImage]:
        spec = request.model
        # Models that make one image per request are asked several times, side by side.
        batches = _batches(request.count, spec.per_request)
        results = await _all_or_none(
            [
                self._api.generate_images(
                    request.prompt,
                    model=spec.name,
                    n=n,
                    size=request.size,
                    quality=request.quality,
                    response_format="b64_json" if spec.response_format else None,
                    extra={"user": str(user_id)},
                    background=self.options.task_poll_every is not None,
                    poll_every=self.options.task_poll_every or 0,
                )
                for n in batches
            ]
        )
        images = await self._fetch(results)
        await self._record_usage(UsageKind.IMAGE, spec.name, len(images), user_id, place)
        return images

    async def edit(
        self,
        request: ImageRequest,
        image: CheckedImage,
        mask: CheckedImage | None,
        *,
        user_id: int,
        place: Place,
    ) -> list[MadeImage]:
        spec = request.model
        image, mask = await self.work.run(
            image.pixels + (mask.pixels if mask else 0),
            prepare_for_model,
            image,
            mask,
            square_png_max_bytes=spec.edit_square_png_bytes,
            max_bytes=self.options.max_image_bytes,
        )
        result = await self._api.edit_images(
            request.prompt,
            [ImageFile(image.data, image.filename, image.content_type)],
            model=spec.name,
            mask=ImageFile(mask.data, "mask.png", mask.content_type) if mask else None,
            n=request.count,
            size=request.size,
            extra={"response_format": "b64_json"} if spec.response_format else None,
        )
        images = await self._fetch([result])
        await self._record_usage(UsageKind.EDIT, spec.name, len(images), user_id, place)
        return images

    async def newest_image(self, channel_id: int) -> ImageRef | None:
        """The image an edit without an attachment refines: the newest of this conversation."""
        conversation = await self._conversations.find(channel_id)
        if conversation is None:
            return None
        return await self._conversations.newest_image(conversation.id)

    async def source_of(self, message_id: int) -> ImageSource | None:
        """How the images a message shows were made, if the bot made them."""
        found = await self._conversations.image_of_message(message_id)
        if found is None or found[0].prompt is None:
            return None
        image, turn = found
        return ImageSource(image.prompt or "", turn.model, turn.author_id)

    async def remember(
        self,
        place: Place,
        *,
        author_id: int,
        author_name: str,
        asked: str,
        request: ImageRequest,
        made: Sequence[MadeImage],
        shown: Sequence[ShownImage],
    ) -> None:
        """Record the request and its images, so chat knows of them and /edit can refine them."""
        conversation = await self._conversations.open(
            place.channel_id, guild_id=place.guild_id, kind=place.kind
        )
        question = question_text(author_name, asked)
        await self._conversations.append_turn(
            conversation.id,
            NewTurn(
                role="user",
                content=question,
                token_estimate=estimate_tokens(question),
                author_id=author_id,
                author_name=author_name,
            ),
        )
        revised = next((image.revised_prompt for image in made if image.revised_prompt), None)
        answer = (
            f"[{len(shown)} image(s) made with {request.model.name}: {revised or request.prompt}]"
        )
        refs = [
            ImageRef(
                image.channel_id,
                image.message_id,
                image.attachment_id,
                image.filename,
                image.content_type,
                prompt=request.prompt,
            )
            for image in shown
        ]
        await self._conversations.append_turn(
            conversation.id,
            NewTurn(
                role="assistant",
                content=answer,
                token_estimate=estimate_tokens(answer),
                # The asker, so that only they (or a moderator) may make them again.
                author_id=author_id,
                message_ids=sorted({ref.message_id for ref in refs}),
                images=refs,
                model=request.model.name,
            ),
        )

    async def _fetch(self, results: Sequence[ImageResult]) -> list[MadeImage]:
        made: list[GeneratedImage] = [image for result in results for image in result.images]
        if not made:
            raise UserError("The model returned no image; try again, or change the prompt.")
        datas = await _all_or_none(
            [
                self._api.fetch_image_bytes(image, max_bytes=self.options.max_image_bytes)
                for image in made
            ]
        )
        return [
            MadeImage(data, image.revised_prompt) for data, image in zip(datas, made, strict=True)
        ]

    async def _record_usage(
        self, kind: UsageKind, model: str, images: int, user_id: int, place: Place
    ) -> None:
        await self._usage.record(
            user_id=user_id,
            guild_id=place.guild_id,
            channel_id=place.channel_id,
            kind=kind,
            model=model,
            images=images,
        )


async def _all_or_none(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run side by side; if one fails, the others are cancelled rather than left to finish
    (and be paid for) unseen."""
    tasks = [asyncio.create_task(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _batches(count: int, per_request: int) -> list[int]:
    full, rest = divmod(count, per_request)
    return [per_request] * full + ([rest] if rest else [])


def _listed(values: Sequence[str]) -> str:
    return ", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0]
