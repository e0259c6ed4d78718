"""Chat in Discord: /ask, /chat, /reset, mentions, replies, and the Stop and Regenerate buttons."""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import Request, RequestKind
from bot.conversation.context import Question, question_text
from bot.conversation.runs import INTERRUPTED, StopResult
from bot.conversation.service import Ask, ChatService, Interrupted
from bot.db.models import ConversationKind
from bot.db.repository import ImageRef
from bot.delivery.reply import interrupted
from bot.errors import UserError
from bot.images.files import prepare_for_vision
from bot.images.work import ImageWork
from bot.places import Place
from cogs.failures import tell_failure
from cogs.permissions import require, sending
from cogs.places import place_of
from cogs.sinks import (
    NO_MENTIONS,
    REGENERATE_PREFIX,
    STOP_PREFIX,
    ChannelSink,
    DiscordBudget,
    InteractionSink,
)

log = logging.getLogger(__name__)

_THREAD_NAME_LIMIT = 90
_STOP_REFUSALS = {
    StopResult.NOT_RUNNING: "This answer is no longer being written.",
    StopResult.NOT_ALLOWED: (
        "Only the person who asked, or someone who can manage messages, can stop it."
    ),
}


@dataclass(frozen=True)
class ChatSettings:
    """What the chat cog needs to know of the bot's settings."""

    models: Sequence[str]
    allow_direct_messages: bool


class ChatCog(commands.Cog):
    def __init__(
        self,
        bot: commands.AutoShardedBot,
        chat: ChatService,
        budget: DiscordBudget,
        settings: ChatSettings,
        image_work: ImageWork,
        *,
        interrupted: Sequence[Interrupted] = (),
    ) -> None:
        self.bot = bot
        self.chat = chat
        self.budget = budget
        self.settings = settings
        self.image_work = image_work
        # Threads known to be opened by /chat (or not), to spare a lookup per message.
        self._chat_threads: dict[int, bool] = {}
        self._warned_channels: set[int] = set()
        # Answers the last run left half written, marked as such once connected.
        self._interrupted = list(interrupted)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Direct messages are a setting: off, the commands work in servers only."""
        return interaction.guild is not None or self.settings.allow_direct_messages

    # Slash commands.

    @app_commands.command(name="ask", description="Ask the AI; the answer streams in here.")
    @app_commands.describe(
        prompt="Your question",
        model="The model to answer with",
        private="Answer only to you, and keep it out of the channel's history",
        image="An image for the model to look at",
    )
    async def ask(
        self,
        interaction: discord.Interaction,
        prompt: str,
        model: str | None = None,
        private: bool = False,
        image: discord.Attachment | None = None,
    ) -> None:
        author = interaction.user
        place = place_of(interaction.channel, interaction.guild_id)
        admitted = await self.chat.admit(
            Request(
                RequestKind.QUESTION,
                place,
                author.id,
                model=model,
                prompt_chars=len(prompt),
                images=1 if image else 0,
            )
        )
        sink = InteractionSink(interaction, self.budget, private=private)
        await interaction.response.defer(thinking=True, ephemeral=private)
        sink.acknowledged()
        image_urls, _ = await self._read_images([image] if image else [], None)
        text = question_text(author.display_name, prompt) + _image_note([image] if image else [])
        await self.chat.ask(
            Ask(
                admitted,
                place,
                author.display_name,
                Question(text, image_urls),
                private=private,
            ),
            sink,
        )

    @ask.autocomplete("model")
    async def _model_choices(
        self, _interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        typed = current.lower()
        matching = [name for name in self.settings.models if typed in name.lower()]
        return [app_commands.Choice(name=name, value=name) for name in matching[:25]]

    @app_commands.command(name="chat", description="Start a thread with the AI; talk there freely.")
    @app_commands.describe(prompt="What to talk about", model="The model to answer with")
    async def chat_thread(
        self, interaction: discord.Interaction, prompt: str, model: str | None = None
    ) -> None:
        author = interaction.user
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            raise UserError("/chat opens a thread, so it only works in a server's text channel.")
        admitted = await self.chat.admit(
            Request(
                RequestKind.THREAD,
                place_of(channel, channel.guild.id),
                author.id,
                model=model,
                prompt_chars=len(prompt),
            )
        )
        require(
            interaction,
            "create_public_threads",
            "send_messages_in_threads",
            "read_message_history",  # to see the later messages of the thread
            purpose="for /chat",
        )
        await interaction.response.send_message(
            f"💬 **{author.display_name}** started a conversation: {prompt[:1800]}",
            allowed_mentions=NO_MENTIONS,
        )
        starter = await interaction.original_response()
        thread = await starter.create_thread(name=_thread_name(prompt), auto_archive_duration=1440)
        self._chat_threads[thread.id] = True
        await self.chat.ask(
            Ask(
                admitted,
                Place(
                    thread.id,
                    channel.guild.id,
                    ConversationKind.THREAD,
                    opened_by_chat=True,
                    opened_by=author.id,
                ),
                author.display_name,
                Question(question_text(author.display_name, prompt)),
            ),
            ChannelSink(thread, thread.id, self.budget),
        )

    @app_commands.command(
        name="reset", description="Forget this channel's or thread's conversation."
    )
    async def reset(self, interaction: discord.Interaction) -> None:
        channel_id = interaction.channel_id
        if channel_id is None:
            raise UserError("There is no conversation here to forget.")
        # A channel's history is everyone's: forgetting it takes Manage Messages. A thread's
        # also lets Manage Threads; a /chat thread's also its opener. A direct message is theirs.
        in_thread = isinstance(interaction.channel, discord.Thread)
        permissions = interaction.permissions
        moderator = permissions.manage_messages or (in_thread and permissions.manage_threads)
        if interaction.guild is not None and not in_thread and not moderator:
            raise UserError(
                "Forgetting a channel's conversation takes the Manage Messages permission."
            )
        # Acknowledged before the database is asked: it may be busy for longer than Discord waits.
        await interaction.response.defer(thinking=True)
        opener_needed = interaction.guild is not None and not moderator
        if opener_needed and await self.chat.thread_opener(channel_id) != interaction.user.id:
            raise UserError(
                "Only the person who opened this thread with /chat, or someone who can "
                "manage messages or threads, can make me forget it."
            )
        forgotten = await self.chat.reset(channel_id)
        await interaction.edit_original_response(
            content=f"🧹 Forgot this conversation ({forgotten} messages)."
            if forgotten
            else "There was nothing to forget here.",
            allowed_mentions=NO_MENTIONS,
        )

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        pending, self._interrupted = self._interrupted, []
        for answer in pending:
            try:
                channel = self.bot.get_channel(answer.channel_id) or await self.bot.fetch_channel(
                    answer.channel_id
                )
                if not isinstance(channel, discord.abc.Messageable):
                    continue
                message = await channel.fetch_message(answer.message_id)
                await message.edit(content=interrupted(message.content, INTERRUPTED), view=None)
            except discord.HTTPException as exc:
                log.info("Could not mark an interrupted answer in %s: %s", answer.channel_id, exc)

    # Messages.

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.bot.user is None:
            return
        try:
            if await self._addressed_to_us(message) and self._may_answer_in(message.channel):
                await self._answer_message(message)
        except Exception as exc:
            doing = f"Answering message {message.id} in channel {message.channel.id}"
            await tell_failure(message, exc, doing=doing)

    async def _addressed_to_us(self, message: discord.Message) -> bool:
        me = self.bot.user
        assert me is not None
        if message.guild is None:
            return self.settings.allow_direct_messages
        if me in message.mentions:
            return True
        if not self.bot.intents.message_content:
            # Without the intent only mentions carry their text: the rest arrive empty.
            return False
        reference = message.reference
        resolved = reference.resolved if reference is not None else None
        if isinstance(resolved, discord.Message) and resolved.author.id == me.id:
            return True
        if isinstance(message.channel, discord.Thread):
            return await self._is_chat_thread(message.channel.id)
        return False

    def _may_answer_in(self, channel: discord.abc.MessageableChannel) -> bool:
        """Whether the bot can write here; if not, the admin learns why from the log, once."""
        if isinstance(channel, discord.DMChannel | discord.GroupChannel) or channel.guild is None:
            return True
        me = channel.guild.me
        permissions = channel.permissions_for(me)
        needed = {
            "Send Messages": permissions.send_messages,
            "Read Message History": permissions.read_message_history,
        }
        if isinstance(channel, discord.Thread):
            needed["Send Messages in Threads"] = permissions.send_messages_in_threads
        missing = [name for name, granted in needed.items() if not granted]
        if missing and channel.id not in self._warned_channels:
            self._warned_channels.add(channel.id)
            log.warning(
                "Mentioned in #%s (%s), but missing the permission(s) %s there: not answering",
                getattr(channel, "name", "?"),
                channel.id,
                ", ".join(missing),
            )
        return not missing

    async def _is_chat_thread(self, thread_id: int) -> bool:
        known = self._chat_threads.get(thread_id)
        if known is None:
            known = self._chat_threads[thread_id] = await self.chat.is_chat_thread(thread_id)
        return known

    async def _answer_message(self, message: discord.Message) -> None:
        me = self.bot.user
        assert me is not None
        text = _without_mention(message, me)
        # Every attachment is shown to the model, so each must be a picture: one not even
        # declared as one is refused at once, the others by what they hold, once admitted.
        images = list(message.attachments)
        for attachment in images:
            if not (attachment.content_type or "").startswith("image/"):
                raise UserError(
                    f"{attachment.filename} is not an image: I can only look at PNG, JPEG or "
                    "WebP images."
                )
        if not text and not images:
            raise UserError("Ask me something after the mention.")
        place = place_of(message.channel, message.guild.id if message.guild else None)
        admitted = await self.chat.admit(
            Request(
                RequestKind.QUESTION,
                place,
                message.author.id,
                prompt_chars=len(text),
                images=len(images),
            )
        )
        image_urls, image_refs = await self._read_images(images, message)
        quoted = None
        reference = message.reference
        if reference is not None and isinstance(reference.resolved, discord.Message):
            replied = reference.resolved
            if replied.author.id != me.id:
                quoted = (replied.author.display_name, replied.clean_content[:2000])
        author = message.author
        said = question_text(author.display_name, text, quoted) + _image_note(images)
        await self.chat.ask(
            Ask(
                admitted,
                place,
                author.display_name,
                Question(said, image_urls),
                message_id=message.id,
                images=image_refs,
            ),
            ChannelSink(message.channel, message.channel.id, self.budget, reference=message),
        )

    # Buttons.

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.component or interaction.data is None:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
        try:
            if custom_id.startswith(STOP_PREFIX):
                await self._press_stop(interaction, custom_id.removeprefix(STOP_PREFIX))
            elif custom_id.startswith(REGENERATE_PREFIX):
                await self._press_regenerate(interaction, custom_id.removeprefix(REGENERATE_PREFIX))
        except Exception as exc:
            await tell_failure(interaction, exc, doing=f"The button {custom_id}")

    async def _press_stop(self, interaction: discord.Interaction, key: str) -> None:
        result = self.chat.stop(
            key,
            user_id=interaction.user.id,
            can_manage=_can_manage_messages(interaction),
            by=interaction.user.display_name,
        )
        if result is StopResult.STOPPED:
            await interaction.response.defer()
        else:
            await interaction.response.send_message(_STOP_REFUSALS[result], ephemeral=True)

    async def _press_regenerate(self, interaction: discord.Interaction, turn: str) -> None:
        channel = interaction.channel
        if not turn.isdigit() or not isinstance(channel, discord.abc.Messageable):
            raise UserError("This button no longer works.")
        require(interaction, sending(channel), purpose="to write the new answer")
        # Reading the question's images again may outlast Discord's three seconds.
        await interaction.response.defer()
        ask = await self.chat.regeneration(
            int(turn),
            channel_id=interaction.channel_id or 0,
            user_id=interaction.user.id,
            can_manage=_can_manage_messages(interaction),
        )
        if ask.images:
            urls = await self._read_stored_images(channel, ask.images)
            ask = dataclasses.replace(ask, question=Question(ask.question.content, urls))
        # The old answer leaves the history, so its button goes too.
        await interaction.edit_original_response(view=None)
        sink = ChannelSink(channel, channel.id, self.budget, reference=interaction.message)
        await self.chat.ask(ask, sink)

    # Helpers.

    async def _read_stored_images(
        self, channel: discord.abc.Messageable, refs: Sequence[ImageRef]
    ) -> list[str]:
        """The images of an earlier question, read again through their messages (attachment
        URLs expire); those deleted meanwhile are left out."""
        urls: list[str] = []
        for ref in refs:
            try:
                message = await channel.fetch_message(ref.message_id)
            except discord.HTTPException:
                continue
            attachments = [a for a in message.attachments if a.id == ref.attachment_id]
            if attachments:
                found, _ = await self._read_images(attachments, None)
                urls += found
        return urls

    async def _read_images(
        self, attachments: list[discord.Attachment], message: discord.Message | None
    ) -> tuple[list[str], list[ImageRef]]:
        """Images become data: URLs: nothing for the API to fetch, nothing that expires. Each is
        checked by its content and made the size vision models work at, before any paid call."""
        urls: list[str] = []
        refs: list[ImageRef] = []
        work = self.image_work
        for attachment in attachments:
            checked = await work.read(attachment, min_side=1)  # a model can look at an icon
            shown = await work.run(
                checked.pixels, prepare_for_vision, checked, max_bytes=work.max_bytes
            )
            urls.append(f"data:{shown.content_type};base64,{base64.b64encode(shown.data).decode()}")
            if message is not None:
                refs.append(
                    ImageRef(
                        message.channel.id,
                        message.id,
                        attachment.id,
                        attachment.filename,
                        checked.content_type,
                    )
                )
        return urls, refs


def _without_mention(message: discord.Message, me: discord.ClientUser) -> str:
    """The message as people read it (mentions as names), without the mention of the bot."""
    text = message.clean_content
    names = {me.name, me.display_name}
    if message.guild is not None:
        names.add(message.guild.me.display_name)
    for name in names:
        text = text.replace(f"@{name}", "")
    return text.strip()


def _image_note(images: Sequence[discord.Attachment]) -> str:
    """History keeps text only: a note says which images the model was shown."""
    return "".join(f"\n[attached image: {image.filename}]" for image in images)


def _thread_name(prompt: str) -> str:
    name = " ".join(prompt.split())
    return name if len(name) <= _THREAD_NAME_LIMIT else name[: _THREAD_NAME_LIMIT - 1] + "…"


def _can_manage_messages(interaction: discord.Interaction) -> bool:
    return bool(interaction.permissions.manage_messages)
