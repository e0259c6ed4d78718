"""Generating and editing images: the whole job, from admission to the images remembered in the
conversation, shown through an ImageSink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar
from weakref import WeakValueDictionary

from bot.admission import RESTARTING, Admission, Admitted, Hold, Person, Request, RequestKind
from bot.ai import GeneratedImage, ImageFile, ImageResult
from bot.conversation.context import question_text
from bot.conversation.tokens import estimate_tokens
from bot.db.models import UsageKind
from bot.db.repository import ConversationStore, ImageRef, NewTurn
from bot.db.usage_store import UsageStore
from bot.errors import UserError, sentence_for
from bot.images.delivery import Delivery, ImageSink, MadeImage, Repeat
from bot.images.files import prepare_for_model
from bot.images.models import ImageModel, image_model
from bot.images.work import Attachment, ImageWork
from bot.places import Place

log = logging.getLogger(__name__)

# Image jobs one person may have running or waiting.
_JOBS_PER_PERSON = 2
T = TypeVar("T")


class ImageApi(Protocol):
    """What making images needs of the API client."""

    async def generate_images(
        self,
        prompt: str,
        *,
        model: str,
        n: int = 1,
        size: str | None = None,
        quality: str | None = None,
        response_format: str | None = None,
        extra: Mapping[str, Any] | None = None,
        background: bool = False,
        poll_every: float = 3.0,
    ) -> ImageResult: ...

    async def edit_images(
        self,
        prompt: str,
        images: Sequence[ImageFile],
        *,
        model: str,
        mask: ImageFile | None = None,
        n: int = 1,
        size: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ImageResult: ...

    async def fetch_image_bytes(self, image: GeneratedImage, *, max_bytes: int) -> bytes: ...


@dataclass(frozen=True)
class ImageOptions:
    # Generations as tasks polled this often (None: one request held open until done).
    task_poll_every: float | None = None


@dataclass(frozen=True)
class ImageRequest:
    """An admitted request, checked against what its model takes; only `admit` makes one."""

    admitted: Admitted
    prompt: str
    model: ImageModel
    size: str | None
    quality: str | None
    count: int

    @property
    def kind(self) -> RequestKind:
        return self.admitted.request.kind

    @property
    def author_id(self) -> int:
        return self.admitted.request.author_id

    @property
    def place(self) -> Place:
        """Where its conversation is (a person's own one with `history personal`)."""
        return self.admitted.place

    @property
    def repeat(self) -> Repeat:
        return Repeat(self.count, self.size, self.quality)


class ImageService:
    def __init__(
        self,
        api: ImageApi,
        admission: Admission,
        conversations: ConversationStore,
        usage: UsageStore,
        options: ImageOptions,
        work: ImageWork,
    ) -> None:
        self._api = api
        self._admission = admission
        self._conversations = conversations
        self._usage = usage
        self.options = options
        self.work = work
        self._jobs: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()
        self._queued: Counter[int] = Counter()
        # The jobs running now, ended with a sentence when the bot stops.
        self._running: set[asyncio.Task[Any]] = set()
        # Of those, the ones waiting for the person's earlier job, and those of them told
        # that the bot is restarting.
        self._waiting: set[asyncio.Task[Any]] = set()
        self._refused: set[asyncio.Task[Any]] = set()
        self._closing = False

    @property
    def jobs_running_or_waiting(self) -> int:
        """Jobs running now, or waiting for the person's previous one."""
        return len(self._running)

    @property
    def jobs_running(self) -> int:
        """Jobs running now, not waiting."""
        return len(self._running - self._waiting)

    @property
    def models(self) -> Sequence[str]:
        return self._admission.config.catalog.image_models

    async def model_at(self, place: Place) -> str:
        """The image model used at `place` when none is picked."""
        return (await self._admission.config.for_place(place)).image_model

    # Admitting.

    async def admit(
        self,
        request: Request,
        prompt: str,
        *,
        size: str | None = None,
        quality: str | None = None,
        count: int = 1,
    ) -> ImageRequest:
        """Admit a request (see bot.admission) and check it against what its model takes,
        before anything is sent; UserError says what does not fit."""
        admitted = await self._admission.admit(replace(request, count=count))
        name = admitted.model
        spec = image_model(name)
        if request.kind is RequestKind.EDIT and not spec.edits:
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
        return ImageRequest(admitted, prompt, spec, size, quality, count)

    async def admit_again(
        self,
        message_id: int | None,
        place: Place,
        person: Person,
        repeat: Repeat,
        *,
        moderator: bool,
    ) -> ImageRequest:
        """The request that made the images of message `message_id`, made again by
        `person`; the prompt and model are found through the images."""
        found = await self._conversations.image_of_message(message_id) if message_id else None
        image, turn = found or (None, None)
        if image is None or image.prompt is None or turn is None:
            raise UserError("I no longer know how these images were made.")
        # Images cost money: only the asker, or someone who can manage messages, repeats them.
        if turn.author_id != person.id and not moderator:
            raise UserError("Only the person who asked, or a moderator, can make these again.")
        # Made again into the conversation the images are in, whatever the settings are now.
        conversation = await self._conversations.get_conversation(turn.conversation_id)
        place = replace(place, owner_id=conversation.owner_id)
        return await self.admit(
            Request(RequestKind.IMAGE, place, person, model=turn.model, again=True),
            image.prompt,
            size=repeat.size,
            quality=repeat.quality,
            count=repeat.count,
        )

    # The job.

    async def make(
        self,
        request: ImageRequest,
        sink: ImageSink,
        *,
        author_name: str,
        image: Attachment | None = None,
        mask: Attachment | None = None,
    ) -> None:
        """Make the images `request` asks for, after the person's previous job, and show them
        through `sink`; whatever happens, it ends with the images or a sentence. An edit
        changes `image` (None: this conversation's newest), where `mask` lets it."""
        spec = request.model
        await sink.start(f"🎨 Making {_images(request.count)} with {spec.name}…")
        job = asyncio.current_task()
        if job is not None:
            self._running.add(job)
        delivered = False
        try:
            async with self.job_of(request.author_id):
                made, warning = await self._held(request, sink, image, mask)
                revised = next((m.revised_prompt for m in made if m.revised_prompt), None)
                caption = _caption(author_name, request, revised, warning)
                shown = await sink.deliver(Delivery(caption, made, self.work))
                delivered = True
                await self._remember(request, author_name, revised, shown)
                if request.kind is RequestKind.IMAGE:
                    # The button comes once the images are remembered, so it works when it shows.
                    await sink.offer_again(request.repeat)
        except (Exception, asyncio.CancelledError) as exc:
            stopping = isinstance(exc, asyncio.CancelledError)
            if stopping:
                sentence = RESTARTING
            else:
                sentence = sentence_for(exc, doing=f"Making images ({spec.name})", log=log)
            if delivered:
                # The images are there: they stay, whatever failed after them.
                log.warning("After delivering images: %s", sentence)
            else:
                await sink.fail(sentence)
            if stopping:
                raise
        finally:
            if job is not None:
                self._running.discard(job)

    def begin_shutdown(self) -> None:
        """Start no more jobs: those waiting for the person's earlier one end at once with
        the restart sentence; the jobs running go on (until `shutdown`)."""
        self._closing = True
        for job in self._waiting:
            self._refused.add(job)
            job.cancel()

    async def jobs_ended(self) -> None:
        """Wait until every job has ended."""
        if self._running:
            await asyncio.wait(self._running)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Jobs still running end with their sentence while the person can still be told,
        waiting at most `grace` seconds."""
        jobs = [job for job in self._running if not job.cancelling()]  # not ended already
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=grace)

    @contextlib.asynccontextmanager
    async def job_of(self, user_id: int) -> AsyncIterator[None]:
        """One image job per person at a time: a second one waits for the first, a third is
        refused (images are slow and cost money)."""
        lock = self._jobs.setdefault(user_id, asyncio.Lock())
        if self._queued[user_id] >= _JOBS_PER_PERSON:
            raise UserError("You already have images being made; wait for them to finish.")
        self._queued[user_id] += 1
        try:
            await self._wait_for(lock)
            try:
                if self._closing:
                    raise UserError(RESTARTING)
                yield
            finally:
                lock.release()
        finally:
            self._queued[user_id] -= 1
            if not self._queued[user_id]:
                del self._queued[user_id]

    async def _wait_for(self, lock: asyncio.Lock) -> None:
        """Take the person's lock; a job that waits for it is told so if the bot begins to
        shut down meanwhile."""
        job = asyncio.current_task()
        if job is None or not lock.locked():
            await lock.acquire()
            return
        self._waiting.add(job)
        try:
            await lock.acquire()
        except asyncio.CancelledError:
            if job not in self._refused:
                raise
            job.uncancel()
            raise UserError(RESTARTING) from None
        finally:
            self._waiting.discard(job)
            self._refused.discard(job)

    async def _held(
        self,
        request: ImageRequest,
        sink: ImageSink,
        image: Attachment | None,
        mask: Attachment | None,
    ) -> tuple[list[MadeImage], str | None]:
        """Make the images, held against the budgets first: the hold ends in their recorded
        usage, or is let go if nothing was made. Also the sentence for a person who has just
        passed 80% of their cap on images."""
        hold = await self._admission.hold(request.admitted, images=request.count)
        try:
            if request.kind is RequestKind.EDIT:
                made = await self._edit(request, sink, image, mask, hold)
            else:
                made = await self._generate(request, hold)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._admission.release(hold)
            raise
        return made, self._admission.warning(request.admitted, hold, tokens=0, images=len(made))

    async def _generate(self, request: ImageRequest, hold: Hold) -> list[MadeImage]:
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
                    extra={"user": str(request.author_id)},
                    background=self.options.task_poll_every is not None,
                    poll_every=self.options.task_poll_every or 0,
                )
                for n in batches
            ]
        )
        # Paid for once the API answers: counted before they are fetched, which may fail.
        await self._record_usage(UsageKind.IMAGE, request, _made(results), hold)
        return await self._fetch(results)

    async def _edit(
        self,
        request: ImageRequest,
        sink: ImageSink,
        image: Attachment | None,
        mask: Attachment | None,
        hold: Hold,
    ) -> list[MadeImage]:
        spec = request.model
        if image is None:
            image = await self._newest_image(request.place, sink)
        source = await self.work.read(image)
        checked_mask = await self.work.read_mask(mask, source) if mask is not None else None
        prepared, prepared_mask = await self.work.run(
            source.pixels + (checked_mask.pixels if checked_mask else 0),
            prepare_for_model,
            source,
            checked_mask,
            square_png_max_bytes=spec.edit_square_png_bytes,
            max_bytes=self.work.max_bytes,
        )
        result = await self._api.edit_images(
            request.prompt,
            [ImageFile(prepared.data, prepared.filename, prepared.content_type)],
            model=spec.name,
            mask=(
                ImageFile(prepared_mask.data, "mask.png", prepared_mask.content_type)
                if prepared_mask
                else None
            ),
            n=request.count,
            size=request.size,
            extra={"response_format": "b64_json"} if spec.response_format else None,
        )
        await self._record_usage(UsageKind.EDIT, request, _made([result]), hold)
        images = await self._fetch([result])
        return images

    async def _newest_image(self, place: Place, sink: ImageSink) -> Attachment:
        """The image an edit without an attachment refines: the newest of this conversation,
        found again through its message, since attachment URLs expire."""
        conversation = await self._conversations.find(place.channel_id, place.owner_id)
        ref = (
            await self._conversations.newest_image(conversation.id)
            if conversation is not None
            else None
        )
        if ref is None:
            raise UserError("There is no image in this conversation yet: attach one to edit.")
        attachments = await sink.attachments_of(ref.message_id)
        if attachments is None:
            raise UserError("The newest image here was deleted: attach one to edit.")
        found = attachments.get(ref.attachment_id)
        if found is None:
            raise UserError("The newest image here is gone: attach one to edit.")
        return found

    async def _remember(
        self,
        request: ImageRequest,
        author_name: str,
        revised: str | None,
        shown: Sequence[ImageRef],
    ) -> None:
        """Record the request and its images, so chat knows of them and /edit can refine them."""
        place = request.place
        conversation = await self._conversations.open(
            place.channel_id,
            guild_id=place.guild_id,
            kind=place.kind,
            owner_id=place.owner_id,
            parent_id=place.parent_id,
        )
        question = question_text(author_name, f"/{request.kind.value} {request.prompt}")
        await self._conversations.append_turn(
            conversation.id,
            NewTurn(
                role="user",
                content=question,
                token_estimate=estimate_tokens(question),
                author_id=request.author_id,
                author_name=author_name,
            ),
        )
        answer = (
            f"[{len(shown)} image(s) made with {request.model.name}: {revised or request.prompt}]"
        )
        refs = [replace(ref, prompt=request.prompt) for ref in shown]
        await self._conversations.append_turn(
            conversation.id,
            NewTurn(
                role="assistant",
                content=answer,
                token_estimate=estimate_tokens(answer),
                # The asker, so that only they (or a moderator) may make them again.
                author_id=request.author_id,
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
            [self._api.fetch_image_bytes(image, max_bytes=self.work.max_bytes) for image in made]
        )
        return [
            MadeImage(data, image.revised_prompt) for data, image in zip(datas, made, strict=True)
        ]

    async def _record_usage(
        self, kind: UsageKind, request: ImageRequest, images: int, hold: Hold
    ) -> None:
        await self._usage.record(
            user_id=request.author_id,
            guild_id=request.place.guild_id,
            channel_id=request.place.channel_id,
            kind=kind,
            model=request.model.name,
            images=images,
            reservation_id=hold.id,
            at=self._admission.now(),
        )


def _made(results: Sequence[ImageResult]) -> int:
    return sum(len(result.images) for result in results)


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


def _images(count: int) -> str:
    return "an image" if count == 1 else f"{count} images"


def _caption(
    author_name: str, request: ImageRequest, revised: str | None, warning: str | None = None
) -> str:
    details = " · ".join(
        part for part in (request.model.name, request.size, request.quality) if part
    )
    caption = f"**{author_name}**: {request.prompt[:1500]}\n-# {details}"
    if warning:  # before the revised prompt: it is what may not be cut off
        caption += f"\n-# {warning}"
    if revised and revised != request.prompt:
        caption += f"\n-# Revised prompt: {revised[:300]}"
    return caption[:2000]
