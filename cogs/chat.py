"""Chat in Discord: /ask, /chat, /reset, mentions, replies, and the Stop and Regenerate buttons."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal
from weakref import WeakValueDictionary

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import Admitted, Ignored, Request, RequestKind, Via
from bot.conversation.context import Question, question_text
from bot.conversation.runs import INTERRUPTED, StopResult
from bot.conversation.service import Ask, ChatService, Interrupted
from bot.db.models import ConversationKind
from bot.db.repository import ImageRef
from bot.delivery.pacing import room_for
from bot.delivery.reply import interrupted
from bot.errors import UserError
from bot.images.files import prepare_for_vision
from bot.images.work import ImageWork
from bot.places import Place
from bot.server_config import ReplyMode
from cogs.failures import tell_failure
from cogs.permissions import require, sending
from cogs.places import person_of, place_of
from cogs.sinks import (
    NO_MENTIONS,
    PAGING_PREFIX,
    REGENERATE_JSON,
    REGENERATE_PREFIX,
    STOP_PREFIX,
    ChannelSink,
    DiscordBudget,
    InteractionSink,
    pressed_button,
)

log = logging.getLogger(__name__)

_THREAD_NAME_LIMIT = 90
_STOP_REFUSALS = {
    StopResult.NOT_RUNNING: "This answer is no longer being written.",
    StopResult.NOT_ALLOWED: (
        "Only the person who asked, or someone who can manage messages, can stop it."
    ),
}


class ChatCog(commands.Cog):
    def __init__(
        self,
        bot: commands.AutoShardedBot,
        chat: ChatService,
        budget: DiscordBudget,
        image_work: ImageWork,
        *,
        interrupted: Sequence[Interrupted] = (),
    ) -> None:
        self.bot = bot
        self.chat = chat
        self.budget = budget
        self.image_work = image_work
        # Threads known to be opened by /chat (or not), to spare a lookup per message.
        self._chat_threads: dict[int, bool] = {}
        # Per channel: the message being read until it is in line (see on_message).
        self._arrivals: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()
        self._warned_channels: set[int] = set()
        # Answers the last run left half written, marked as such once connected.
        self._interrupted = list(interrupted)

    # Slash commands.

    @app_commands.command(name="ask", description="Ask the AI; the answer streams in here.")
    @app_commands.describe(
        prompt="Your question",
        model="The model to answer with",
        private="Answer only to you, and keep it out of the channel's history",
        image="An image for the model to look at",
        alternatives="Several answers to page through and choose from",
        answer_format="Answer in plain text, or as a JSON object",
    )
    @app_commands.rename(answer_format="format")
    async def ask(
        self,
        interaction: discord.Interaction,
        prompt: str,
        model: str | None = None,
        private: bool = False,
        image: discord.Attachment | None = None,
        alternatives: app_commands.Range[int, 1, 4] = 1,
        answer_format: Literal["text", "json"] = "text",
    ) -> None:
        author = interaction.user
        sink = InteractionSink(interaction, self.budget, private=private)
        # Acknowledged first: admission reads the place's settings from the database.
        await interaction.response.defer(thinking=True, ephemeral=private)
        sink.acknowledged()
        admitted = await self.chat.admit(
            Request(
                RequestKind.QUESTION,
                place_of(interaction.channel, interaction.guild_id),
                person_of(author, interaction.permissions),
                model=model,
                prompt_chars=len(prompt),
                images=1 if image else 0,
            ),
            alternatives=alternatives,
        )
        image_urls, _ = await self._read_images([image] if image else [], None)
        text = question_text(author.display_name, prompt) + _image_note([image] if image else [])
        await self.chat.ask(
            Ask(
                admitted,
                admitted.place,
                author.display_name,
                Question(text, image_urls),
                private=private,
                alternatives=alternatives,
                json_format=answer_format == "json",
            ),
            sink,
        )

    @ask.autocomplete("model")
    async def _model_choices(
        self, _interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        typed = current.lower()
        matching = [name for name in self.chat.models if typed in name.lower()]
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
        require(
            interaction,
            "create_public_threads",
            "send_messages_in_threads",
            "read_message_history",  # to see the later messages of the thread
            purpose="for /chat",
        )
        await interaction.response.defer(thinking=True)
        admitted = await self.chat.admit(
            Request(
                RequestKind.THREAD,
                place_of(channel, channel.guild.id),
                person_of(author, interaction.permissions),
                model=model,
                prompt_chars=len(prompt),
            )
        )
        starter = await interaction.edit_original_response(
            content=f"💬 **{author.display_name}** started a conversation: {prompt[:1800]}",
            allowed_mentions=NO_MENTIONS,
        )
        await self._answer_in_thread(
            admitted,
            starter,
            name=prompt,
            author_name=author.display_name,
            question=Question(question_text(author.display_name, prompt)),
        )

    async def _answer_in_thread(
        self,
        admitted: Admitted,
        starter: discord.Message,
        *,
        name: str,
        author_name: str,
        question: Question,
        message_id: int | None = None,
        images: Sequence[ImageRef] = (),
    ) -> None:
        """Open a thread on `starter`, named after `name`, and answer `question` there; the
        thread then answers every message without a mention, as /chat threads do."""
        thread = await starter.create_thread(name=_thread_name(name), auto_archive_duration=1440)
        self._chat_threads[thread.id] = True
        place = Place(
            thread.id,
            thread.guild.id,
            ConversationKind.THREAD,
            opened_by_chat=True,
            opened_by=admitted.request.author_id,
            parent_id=starter.channel.id,
        )
        await self.chat.ask(
            Ask(admitted, place, author_name, question, message_id=message_id, images=images),
            ChannelSink(thread, thread.id, self.budget),
        )

    @app_commands.command(
        name="reset", description="Forget this channel's or thread's conversation."
    )
    async def reset(self, interaction: discord.Interaction) -> None:
        # A channel's history is everyone's: forgetting it takes Manage Messages. A thread's
        # also lets Manage Threads; a /chat thread's also its opener. A person's own
        # conversation, or a direct message, is theirs.
        in_thread = isinstance(interaction.channel, discord.Thread)
        permissions = interaction.permissions
        moderator = permissions.manage_messages or (in_thread and permissions.manage_threads)
        # Acknowledged before the database is asked: it may be busy for longer than Discord waits.
        await interaction.response.defer(thinking=True)
        request = Request(
            RequestKind.RESET,
            place_of(interaction.channel, interaction.guild_id),
            person_of(interaction.user, permissions),
        )
        forgotten, personal = await self.chat.reset(request, moderator=moderator)
        whose = "your conversation here" if personal else "this conversation"
        await interaction.edit_original_response(
            content=f"🧹 Forgot {whose} ({forgotten} messages)."
            if forgotten
            else "There was nothing to forget here.",
            allowed_mentions=NO_MENTIONS,
        )

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        pending, self._interrupted = self._interrupted, []
        bot_wide = (self.budget.bot,)
        # After a crash there may be many: within the bot's write limit, beside new answers.
        for answer in pending:
            try:
                channel = self.bot.get_channel(answer.channel_id)
                if channel is None:
                    async with room_for(bot_wide):
                        channel = await self.bot.fetch_channel(answer.channel_id)
                if not isinstance(channel, discord.abc.Messageable):
                    continue
                async with room_for(bot_wide):
                    message = await channel.fetch_message(answer.message_id)
                notice = interrupted(message.content, INTERRUPTED)
                async with room_for((self.budget.channel(answer.channel_id), self.budget.bot)):
                    await message.edit(content=notice, view=None)
            except discord.HTTPException as exc:
                log.info("Could not mark an interrupted answer in %s: %s", answer.channel_id, exc)

    # Messages.

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.bot.user is None:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return  # joins, pins, thread announcements
        # Messages of one channel are read one by one until each is in line for its answer:
        # two questions a moment apart are answered in the order they were asked.
        arrivals = self._arrivals.setdefault(message.channel.id, asyncio.Lock())
        in_line = asyncio.Event()
        async with arrivals:
            answering = asyncio.create_task(self._answer(message, in_line))
            lined_up = asyncio.create_task(in_line.wait())
            await asyncio.wait({answering, lined_up}, return_when=asyncio.FIRST_COMPLETED)
            lined_up.cancel()
        await answering

    async def _answer(self, message: discord.Message, in_line: asyncio.Event) -> None:
        via = await self._via(message)
        if via is None:
            return
        try:
            await self._answer_message(message, via, in_line)
        except Ignored:
            pass
        except Exception as exc:
            in_line.set()  # the next message need not wait for this one's reply
            doing = f"Answering message {message.id} in channel {message.channel.id}"
            await tell_failure(message, exc, doing=doing)

    async def _via(self, message: discord.Message) -> Via | None:
        """How the message reaches the bot; None: it cannot be for the bot anywhere."""
        me = self.bot.user
        assert me is not None
        if message.guild is None or me in message.mentions:
            return Via.MENTION
        if not self.bot.intents.message_content:
            # Without the intent only mentions carry their text: the rest arrive empty.
            return None
        reference = message.reference
        resolved = reference.resolved if reference is not None else None
        if isinstance(resolved, discord.Message) and resolved.author.id == me.id:
            return Via.MENTION
        if isinstance(message.channel, discord.Thread) and await self._is_chat_thread(
            message.channel.id
        ):
            return Via.MENTION
        return Via.MESSAGE  # answered where the reply mode is `all`

    def _may_answer_in(self, channel: discord.abc.MessageableChannel, *, threads: bool) -> bool:
        """Whether the bot can write here (in a new thread of it, with `threads`); if not,
        the admin learns why from the log, once."""
        if isinstance(channel, discord.DMChannel | discord.GroupChannel) or channel.guild is None:
            return True
        me = channel.guild.me
        permissions = channel.permissions_for(me)
        needed = {
            "Send Messages": permissions.send_messages,
            "Read Message History": permissions.read_message_history,
        }
        if threads:
            needed["Create Public Threads"] = permissions.create_public_threads
        if threads or isinstance(channel, discord.Thread):
            needed["Send Messages in Threads"] = permissions.send_messages_in_threads
        missing = [name for name, granted in needed.items() if not granted]
        if missing and channel.id not in self._warned_channels:
            self._warned_channels.add(channel.id)
            log.warning(
                "Asked in #%s (%s), but missing the permission(s) %s there: not answering",
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

    async def _answer_message(
        self, message: discord.Message, via: Via, in_line: asyncio.Event
    ) -> None:
        me = self.bot.user
        assert me is not None
        author = message.author
        text = _without_mention(message, me)
        images = list(message.attachments)
        place = place_of(message.channel, message.guild.id if message.guild else None)
        permissions = message.channel.permissions_for(author)  # type: ignore[arg-type]
        request = Request(
            RequestKind.QUESTION,
            place,
            person_of(author, permissions),
            via=via,
            prompt_chars=len(text),
            images=len(images),
        )
        try:
            admitted = await self.chat.admit(request)
        except (UserError, Ignored):
            raise
        except Exception:
            if via is not Via.MESSAGE:
                raise
            # Maybe not for the bot at all: chatter gets no warning when the database fails.
            log.warning(
                "Could not tell whether message %s is for the bot", message.id, exc_info=True
            )
            raise Ignored from None
        in_thread = (
            admitted.settings.reply_mode is ReplyMode.THREAD
            and place.kind is ConversationKind.CHANNEL
        )
        if in_thread:
            in_line.set()  # a thread of its own: nothing to keep in order with
        if not self._may_answer_in(message.channel, threads=in_thread):
            return
        # Every attachment is shown to the model, so each must be a picture: one not even
        # declared as one is refused at once, the others by what they hold.
        for attachment in images:
            if not (attachment.content_type or "").startswith("image/"):
                raise UserError(
                    f"{attachment.filename} is not an image: I can only look at PNG, JPEG or "
                    "WebP images."
                )
        if not text and not images:
            if via is Via.MESSAGE:
                raise Ignored  # a sticker, say, in a channel where every message is answered
            raise UserError("Ask me something after the mention.")
        image_urls, image_refs = await self._read_images(images, message)
        quoted = None
        reference = message.reference
        if reference is not None and isinstance(reference.resolved, discord.Message):
            replied = reference.resolved
            if replied.author.id != me.id:
                quoted = (replied.author.display_name, replied.clean_content[:2000])
        said = question_text(author.display_name, text, quoted) + _image_note(images)
        question = Question(said, image_urls)
        if in_thread:
            await self._answer_in_thread(
                admitted,
                message,
                name=text or "Images",
                author_name=author.display_name,
                question=question,
                message_id=message.id,
                images=image_refs,
            )
            return
        await self.chat.ask(
            Ask(
                admitted,
                admitted.place,
                author.display_name,
                question,
                message_id=message.id,
                images=image_refs,
                in_line=in_line,
            ),
            ChannelSink(message.channel, message.channel.id, self.budget, reference=message),
        )

    # Buttons.

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        custom_id = pressed_button(interaction)
        try:
            if custom_id.startswith(STOP_PREFIX):
                await self._press_stop(interaction, custom_id.removeprefix(STOP_PREFIX))
            elif custom_id.startswith(REGENERATE_PREFIX):
                await self._press_regenerate(interaction, custom_id.removeprefix(REGENERATE_PREFIX))
            elif custom_id.startswith(PAGING_PREFIX):
                await self._press_paging(interaction, custom_id.removeprefix(PAGING_PREFIX))
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

    async def _press_regenerate(self, interaction: discord.Interaction, rest: str) -> None:
        channel = interaction.channel
        # A text answer's button names the turn alone, as every one did before JSON answers.
        json_format = rest.endswith(REGENERATE_JSON)
        turn = rest.removesuffix(REGENERATE_JSON)
        if not turn.isdigit() or not isinstance(channel, discord.abc.Messageable):
            raise UserError("This button no longer works.")
        require(interaction, sending(channel), purpose="to write the new answer")
        # Reading the question's images again may outlast Discord's three seconds.
        await interaction.response.defer()
        ask = await self.chat.regeneration(
            int(turn),
            place=place_of(channel, interaction.guild_id),
            person=person_of(interaction.user, interaction.permissions),
            can_manage=_can_manage_messages(interaction),
            json_format=json_format,
        )
        if ask.images:
            urls = await self._read_stored_images(channel, ask.images)
            ask = dataclasses.replace(ask, question=Question(ask.question.content, urls))
        # The old answer leaves the history, so its button goes too.
        await interaction.edit_original_response(view=None)
        sink = ChannelSink(channel, channel.id, self.budget, reference=interaction.message)
        await self.chat.ask(ask, sink)

    async def _press_paging(self, interaction: discord.Interaction, rest: str) -> None:
        key, _, page_action = rest.partition(":")
        page, _, action = page_action.partition(":")
        if not page.isdigit():
            raise UserError("This button no longer works.")
        # Showing a long answer anew may outlast Discord's three seconds.
        await interaction.response.defer()
        await self.chat.turn_page(
            key,
            int(page),
            action,
            user_id=interaction.user.id,
            can_manage=_can_manage_messages(interaction),
        )

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
