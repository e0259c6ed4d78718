"""Images in Discord: /image and /edit, with progress while people wait, results attached."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import Request, RequestKind
from bot.db.repository import ImageRef
from bot.errors import UserError
from bot.images.delivery import Delivery, Repeat
from bot.images.models import ImageModel, image_model
from bot.images.service import ImageRequest, ImageService
from bot.images.work import Attachment
from cogs.failures import tell_failure
from cogs.permissions import require
from cogs.places import person_of, place_of
from cogs.sinks import NO_MENTIONS, DiscordLimits, pressed_button, token_expiry, token_refused

log = logging.getLogger(__name__)

AGAIN_PREFIX = "image:again:"


class ImagesCog(commands.Cog):
    def __init__(self, images: ImageService, limits: DiscordLimits) -> None:
        self.images = images
        self.limits = limits

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
        require(interaction, "attach_files", purpose="to deliver images")
        # Acknowledged first: admission reads the place's settings from the database.
        await interaction.response.defer(thinking=True)
        request = await self.images.admit(
            _request(interaction, RequestKind.IMAGE, model),
            prompt,
            size=size,
            quality=quality,
            count=count,
        )
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
        # Without an attachment the image is read again from its message.
        reading = () if image is not None else ("read_message_history",)
        require(interaction, "attach_files", *reading, purpose="to edit images")
        await interaction.response.defer(thinking=True)
        request = await self.images.admit(
            _request(interaction, RequestKind.EDIT, model), prompt, size=size
        )
        await self._make(interaction, request, image=image, mask=mask)

    @image.autocomplete("model")
    @edit.autocomplete("model")
    async def _model_choices(
        self, _interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _choices(self.images.models, current)

    @image.autocomplete("size")
    @edit.autocomplete("size")
    async def _size_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _choices((await self._chosen_model(interaction)).sizes, current)

    @image.autocomplete("quality")
    async def _quality_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _choices((await self._chosen_model(interaction)).qualities, current)

    async def _chosen_model(self, interaction: discord.Interaction) -> ImageModel:
        """The model typed so far, else the one used here."""
        name = getattr(interaction.namespace, "model", None) or await self.images.model_at(
            place_of(interaction.channel, interaction.guild_id)
        )
        return image_model(str(name))

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        custom_id = pressed_button(interaction)
        if not custom_id.startswith(AGAIN_PREFIX):
            return
        try:
            require(interaction, "attach_files", purpose="to deliver images")
            # Acknowledged before the database is asked, showing nothing yet: a refusal then
            # reaches only the person, and the images come in a new message.
            await interaction.response.defer()
            request = await self.images.admit_again(
                interaction.message.id if interaction.message else None,
                place_of(interaction.channel, interaction.guild_id),
                person_of(interaction.user, interaction.permissions),
                _repeat_of(custom_id.removeprefix(AGAIN_PREFIX)),
                moderator=interaction.permissions.manage_messages,
            )
        except Exception as exc:
            await tell_failure(interaction, exc, doing="Making images again")
            return
        await self._make(interaction, request)

    async def _make(
        self,
        interaction: discord.Interaction,
        request: ImageRequest,
        *,
        image: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
    ) -> None:
        progress = _Progress(interaction, self.limits)
        try:
            await self.images.make(
                request,
                progress,
                author_name=interaction.user.display_name,
                image=image,
                mask=mask,
            )
        finally:
            await progress.stop_clock()

    async def cog_unload(self) -> None:
        await self.images.shutdown()


class _Progress:
    """The public message of an image job (an ImageSink): a clock while the model works, then
    the result. It is written through the interaction's token while that lives (15 minutes),
    then as the bot's own message in the channel. It is the interaction's response, or, when
    that was a silent acknowledgement (a button), a followup."""

    def __init__(self, interaction: discord.Interaction, limits: DiscordLimits) -> None:
        self._interaction = interaction
        self._limits = limits
        self._expires = token_expiry(interaction, limits)
        self._message_id = 0
        self._followup: discord.WebhookMessage | None = None
        self._clock: asyncio.Task[None] | None = None

    async def start(self, text: str) -> None:
        interaction = self._interaction
        if interaction.response.is_done():
            self._followup = await interaction.followup.send(
                text, allowed_mentions=NO_MENTIONS, wait=True
            )
            self._message_id = self._followup.id
        else:
            callback = await interaction.response.send_message(text, allowed_mentions=NO_MENTIONS)
            if callback.message_id is None:
                raise RuntimeError("Discord did not say which message answers the interaction")
            self._message_id = callback.message_id
        self._clock = asyncio.create_task(self._tick(text, self._limits.progress_interval))

    async def attachments_of(self, message_id: int) -> Mapping[int, Attachment] | None:
        channel = self._interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            return None
        try:
            message = await channel.fetch_message(message_id)
        except discord.NotFound:
            return None
        return {attachment.id: attachment for attachment in message.attachments}

    async def deliver(self, delivery: Delivery) -> list[ImageRef]:
        await self.stop_clock()
        limit = self._interaction.filesize_limit
        while True:
            files = [
                discord.File(io.BytesIO(file.data), filename=file.filename)
                for file in await delivery.files(limit)
            ]
            try:
                message = await self._show(content=delivery.caption, attachments=files)
                break
            except discord.HTTPException as exc:
                if exc.status != 413 or limit < 64 * 1024:
                    raise
                limit //= 2  # Discord counts the upload differently than we did: smaller
        return [
            ImageRef(
                message.channel.id,
                message.id,
                attachment.id,
                attachment.filename,
                attachment.content_type,
            )
            for attachment in message.attachments
        ]

    async def fail(self, sentence: str) -> None:
        await self.stop_clock()
        with contextlib.suppress(discord.HTTPException):
            await self._show(content=f"⚠️ {sentence}", attachments=[])

    async def offer_again(self, repeat: Repeat) -> None:
        await self._show(view=_again_view(repeat))

    async def _tick(self, text: str, interval: float) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(discord.HTTPException):
                await self._show(content=f"{text} {int(time.monotonic() - started)} s")

    async def stop_clock(self) -> None:
        """No tick may land after this: the next write is the result."""
        clock, self._clock = self._clock, None
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock

    async def _show(self, **fields: Any) -> discord.Message:
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


def _request(interaction: discord.Interaction, kind: RequestKind, model: str | None) -> Request:
    return Request(
        kind,
        place_of(interaction.channel, interaction.guild_id),
        person_of(interaction.user, interaction.permissions),
        model=model,
    )


def _choices(values: Sequence[str], current: str) -> list[app_commands.Choice[str]]:
    typed = current.lower()
    return [app_commands.Choice(name=v, value=v) for v in values if typed in v.lower()][:25]


def _again_view(repeat: Repeat) -> discord.ui.View:
    """A Regenerate button: the prompt and model are found again through the message's
    images; what else the request needs fits in the custom id."""
    view = discord.ui.View(timeout=None)
    encoded = f"{repeat.count}:{repeat.size or ''}:{repeat.quality or ''}"
    view.add_item(
        discord.ui.Button(label="Regenerate", emoji="🔁", custom_id=AGAIN_PREFIX + encoded)
    )
    view.stop()  # handled by the cog's listener, not kept in discord.py's view store
    return view


def _repeat_of(encoded: str) -> Repeat:
    count, size, quality = encoded.split(":")
    return Repeat(int(count), size or None, quality or None)
