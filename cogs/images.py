"""Images in Discord: /image and /edit, with progress while people wait, results attached."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError, sentence_for
from bot.images.files import CheckedImage, fit_for_upload, pixel_count
from bot.images.models import ImageModel, image_model
from bot.images.service import ImageRequest, ImageService, MadeImage, ShownImage
from cogs.failures import tell_failure
from cogs.permissions import require
from cogs.places import place_of
from cogs.sinks import NO_MENTIONS, DiscordLimits, token_expiry, token_refused

log = logging.getLogger(__name__)

AGAIN_PREFIX = "image:again:"


class ImagesCog(commands.Cog):
    def __init__(
        self, images: ImageService, limits: DiscordLimits, *, allow_direct_messages: bool
    ) -> None:
        self.images = images
        self.limits = limits
        self.allow_direct_messages = allow_direct_messages
        # The image jobs running now, ended with a sentence when the bot stops.
        self._jobs: set[asyncio.Task[Any]] = set()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Direct messages are a setting: off, the commands work in servers only."""
        return interaction.guild is not None or self.allow_direct_messages

    @app_commands.command(name="image", description="Make images from a description.")
    @app_commands.describe(
        prompt="What the image should show",
        model="The image model",
        size="Width x height (the choices follow the model)",
        quality="Detail, for models that offer it",
        count="How many images, 1 to 4",
    )
    async def image(
        self,
        interaction: discord.Interaction,
        prompt: str,
        model: str | None = None,
        size: str | None = None,
        quality: str | None = None,
        count: app_commands.Range[int, 1, 4] = 1,
    ) -> None:
        request = self.images.request(prompt, model=model, size=size, quality=quality, count=count)
        require(interaction, "attach_files", purpose="to deliver images")
        await self._make(interaction, request)

    @app_commands.command(
        name="edit", description="Edit an image: the one attached, or the newest here."
    )
    @app_commands.describe(
        prompt="What to change",
        image="The image to edit (leave out to edit the newest image of this conversation)",
        mask="A PNG the size of the image, transparent where the image should change",
        model="The image model",
        size="Width x height of the result",
    )
    async def edit(
        self,
        interaction: discord.Interaction,
        prompt: str,
        image: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        model: str | None = None,
        size: str | None = None,
    ) -> None:
        request = self.images.request(prompt, model=model, size=size, editing=True)
        # Without an attachment the image is read again from its message.
        reading = () if image is not None else ("read_message_history",)
        require(interaction, "attach_files", *reading, purpose="to edit images")
        async with (
            self._progress(interaction, request) as progress,
            self.images.job_of(interaction.user.id),
        ):
            source = await self._source_image(interaction, image)
            checked_mask = None
            if mask is not None:
                checked_mask = await self.images.work.read_mask(mask, source)
            made = await self.images.edit(
                request,
                source,
                checked_mask,
                user_id=interaction.user.id,
                place=place_of(interaction.channel, interaction.guild_id),
            )
            await self._deliver(interaction, progress, request, made, command="edit")

    @image.autocomplete("model")
    @edit.autocomplete("model")
    async def _model_choices(
        self, _interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _choices(self.images.options.models, current)

    @image.autocomplete("size")
    @edit.autocomplete("size")
    async def _size_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _choices(self._chosen_model(interaction).sizes, current)

    @image.autocomplete("quality")
    async def _quality_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _choices(self._chosen_model(interaction).qualities, current)

    def _chosen_model(self, interaction: discord.Interaction) -> ImageModel:
        name = getattr(interaction.namespace, "model", None) or self.images.options.default_model
        return image_model(str(name))

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.component or interaction.data is None:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
        if not custom_id.startswith(AGAIN_PREFIX) or not await self.interaction_check(interaction):
            return
        try:
            require(interaction, "attach_files", purpose="to deliver images")
            # Acknowledged before the database is asked, showing nothing yet: a refusal then
            # reaches only the person, and the images come in a new message.
            await interaction.response.defer()
            request = await self._request_again(interaction, custom_id.removeprefix(AGAIN_PREFIX))
        except Exception as exc:
            await tell_failure(interaction, exc, doing="Making images again")
            return
        await self._make(interaction, request)

    # The work.

    async def _make(self, interaction: discord.Interaction, request: ImageRequest) -> None:
        async with (
            self._progress(interaction, request) as progress,
            self.images.job_of(interaction.user.id),
        ):
            made = await self.images.generate(
                request,
                user_id=interaction.user.id,
                place=place_of(interaction.channel, interaction.guild_id),
            )
            await self._deliver(interaction, progress, request, made, command="image")

    async def _source_image(
        self, interaction: discord.Interaction, attachment: discord.Attachment | None
    ) -> CheckedImage:
        if attachment is None:
            attachment = await self._newest_image(interaction)
        return await self.images.work.read(attachment)

    async def _newest_image(self, interaction: discord.Interaction) -> discord.Attachment:
        """The newest image of this conversation, found again through its message, since
        Discord's attachment URLs expire."""
        channel = interaction.channel
        ref = await self.images.newest_image(interaction.channel_id or 0)
        if ref is None or not isinstance(channel, discord.abc.Messageable):
            raise UserError("There is no image in this conversation yet: attach one to edit.")
        try:
            message = await channel.fetch_message(ref.message_id)
        except discord.NotFound:
            raise UserError("The newest image here was deleted: attach one to edit.") from None
        for attachment in message.attachments:
            if attachment.id == ref.attachment_id:
                return attachment
        raise UserError("The newest image here is gone: attach one to edit.")

    async def _deliver(
        self,
        interaction: discord.Interaction,
        progress: _Progress,
        request: ImageRequest,
        made: Sequence[MadeImage],
        *,
        command: str,
    ) -> None:
        revised = next((image.revised_prompt for image in made if image.revised_prompt), None)
        content = _caption(interaction.user, request, revised)
        await progress.stop_clock()
        limit = interaction.filesize_limit
        while True:
            files = await self._files(made, limit)
            try:
                message = await progress.show(content=content, attachments=files)
                break
            except discord.HTTPException as exc:
                if exc.status != 413 or limit < 64 * 1024:
                    raise
                limit //= 2  # Discord counts the upload differently than we did: smaller
        progress.delivered = True
        shown = [
            ShownImage(
                message.channel.id,
                message.id,
                attachment.id,
                attachment.filename,
                attachment.content_type,
            )
            for attachment in message.attachments
        ]
        await self.images.remember(
            place_of(interaction.channel, interaction.guild_id),
            author_id=interaction.user.id,
            author_name=interaction.user.display_name,
            asked=f"/{command} {request.prompt}",
            request=request,
            made=made,
            shown=shown,
        )
        if command == "image":
            # The button comes once the images are remembered, so it works when it shows.
            await progress.show(view=_again_view(request))

    async def _files(self, made: Sequence[MadeImage], limit: int) -> list[discord.File]:
        """The images as files Discord takes: recompressed when over its upload limit."""
        files = []
        work = self.images.work
        for number, image in enumerate(made, start=1):
            pixels = await asyncio.to_thread(pixel_count, image.data)
            data, extension = await work.run(
                pixels, fit_for_upload, image.data, limit=limit, max_pixels=work.max_pixels
            )
            files.append(discord.File(io.BytesIO(data), filename=f"image-{number}.{extension}"))
        return files

    @contextlib.asynccontextmanager
    async def _progress(
        self, interaction: discord.Interaction, request: ImageRequest
    ) -> AsyncIterator[_Progress]:
        """A message that counts the seconds while the model works (often 30 to 120), and
        becomes the result, or the sentence saying why there is none."""
        what = f"🎨 Making {_images(request.count)} with {request.model.name}…"
        progress = await _Progress.open(interaction, self.limits, what)
        job = asyncio.current_task()
        if job is not None:
            self._jobs.add(job)
        try:
            yield progress
        except (Exception, asyncio.CancelledError) as exc:
            await progress.stop_clock()
            stopping = isinstance(exc, asyncio.CancelledError)
            if stopping:
                sentence = "The bot restarted before this was done; please ask again."
            else:
                doing = f"Making images ({request.model.name})"
                sentence = sentence_for(exc, doing=doing, log=log)
            if progress.delivered:
                # The images are there: they stay, whatever failed after them.
                log.warning("After delivering images: %s", sentence)
            else:
                with contextlib.suppress(discord.HTTPException):
                    await progress.show(content=f"⚠️ {sentence}", attachments=[])
            if stopping:
                raise
        finally:
            await progress.stop_clock()
            if job is not None:
                self._jobs.discard(job)

    async def cog_unload(self) -> None:
        """Jobs still running end with a sentence while Discord is still reachable."""
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=5)

    async def _request_again(self, interaction: discord.Interaction, encoded: str) -> ImageRequest:
        """The same request as the images under the button; the prompt is found through them."""
        count, size, quality = encoded.split(":")
        message = interaction.message
        source = await self.images.source_of(message.id) if message else None
        if source is None:
            raise UserError("I no longer know how these images were made.")
        # Images cost money: only the asker, or someone who can manage messages, repeats them.
        if source.author_id != interaction.user.id and not interaction.permissions.manage_messages:
            raise UserError("Only the person who asked, or a moderator, can make these again.")
        return self.images.request(
            source.prompt,
            model=source.model,
            size=size or None,
            quality=quality or None,
            count=int(count),
        )


class _Progress:
    """The public message of an image job: a clock while the model works, then the result.
    It is written through the interaction's token while that lives (15 minutes), then as the
    bot's own message in the channel. It is the interaction's response, or, when that was
    a silent acknowledgement (a button), a followup."""

    def __init__(
        self,
        interaction: discord.Interaction,
        limits: DiscordLimits,
        message_id: int,
        followup: discord.WebhookMessage | None = None,
    ) -> None:
        self._interaction = interaction
        self._expires = token_expiry(interaction, limits)
        self._message_id = message_id
        self._followup = followup
        self._clock: asyncio.Task[None] | None = None
        self.delivered = False

    @classmethod
    async def open(
        cls, interaction: discord.Interaction, limits: DiscordLimits, text: str
    ) -> _Progress:
        if interaction.response.is_done():
            followup = await interaction.followup.send(
                text, allowed_mentions=NO_MENTIONS, wait=True
            )
            progress = cls(interaction, limits, followup.id, followup)
        else:
            callback = await interaction.response.send_message(text, allowed_mentions=NO_MENTIONS)
            if callback.message_id is None:
                raise RuntimeError("Discord did not say which message answers the interaction")
            progress = cls(interaction, limits, callback.message_id)
        progress._clock = asyncio.create_task(progress._tick(text, limits.progress_interval))
        return progress

    async def _tick(self, text: str, interval: float) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(discord.HTTPException):
                await self.show(content=f"{text} {int(time.monotonic() - started)} s")

    async def stop_clock(self) -> None:
        """No tick may land after this: the next write is the result."""
        clock, self._clock = self._clock, None
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock

    async def show(self, **fields: Any) -> discord.Message:
        if discord.utils.utcnow() < self._expires:
            try:
                if self._followup is not None:
                    return await self._followup.edit(**fields)
                return await self._interaction.edit_original_response(**fields)
            except discord.HTTPException as exc:
                if not token_refused(exc):
                    raise
                log.info("Discord refused an interaction token; editing the message instead")
                self._expires = discord.utils.utcnow()
        channel = self._interaction.channel
        if isinstance(channel, discord.GroupChannel) or not isinstance(
            channel, discord.abc.Messageable
        ):
            raise UserError("I can no longer write in this channel.")
        return await channel.get_partial_message(self._message_id).edit(**fields)


def _choices(values: Sequence[str], current: str) -> list[app_commands.Choice[str]]:
    typed = current.lower()
    return [app_commands.Choice(name=v, value=v) for v in values if typed in v.lower()][:25]


def _again_view(request: ImageRequest) -> discord.ui.View:
    """A Regenerate button: the prompt and model are found again through the message's
    images; what else the request needs fits in the custom id."""
    view = discord.ui.View(timeout=None)
    encoded = f"{request.count}:{request.size or ''}:{request.quality or ''}"
    view.add_item(
        discord.ui.Button(label="Regenerate", emoji="🔁", custom_id=AGAIN_PREFIX + encoded)
    )
    view.stop()  # handled by the cog's listener, not kept in discord.py's view store
    return view


def _images(count: int) -> str:
    return "an image" if count == 1 else f"{count} images"


def _caption(user: discord.abc.User, request: ImageRequest, revised: str | None) -> str:
    details = " · ".join(
        part for part in (request.model.name, request.size, request.quality) if part
    )
    caption = f"**{user.display_name}**: {request.prompt[:1500]}\n-# {details}"
    if revised and revised != request.prompt:
        caption += f"\n-# Revised prompt: {revised[:300]}"
    return caption[:2000]
