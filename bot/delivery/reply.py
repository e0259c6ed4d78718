"""A streamed answer shown in Discord: split into messages, paced, finished with the full text."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bot.delivery.pacing import PacedMessage, Window, WriteScheduler
from bot.delivery.splitting import MESSAGE_LIMIT, split_message

log = logging.getLogger(__name__)

# Shown at the end of an answer while it is still being written.
CURSOR = " ▌"
# Room kept in every piece for the cursor, so that the pieces of the final text are the
# pieces shown while streaming and finished messages are not edited again.
_RESERVE = len(CURSOR)


@dataclass(frozen=True)
class Paging:
    """Previous, Next and Keep under one of several answers: set `key`, page `page` shown."""

    key: str
    page: int


@dataclass(frozen=True)
class Controls:
    """The buttons under a message: Stop while streaming; when finished, Regenerate, and
    the paging of alternatives."""

    stop_key: str | None = None
    regenerate_turn: int | None = None
    regenerate_json: bool = False  # the answer was asked for in JSON: so is its new one
    paging: Paging | None = None


NO_CONTROLS = Controls()


@dataclass(frozen=True)
class AttachedFile:
    filename: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Shown:
    content: str
    controls: Controls = NO_CONTROLS
    file: AttachedFile | None = None


ANSWER_FILENAME = "answer.md"


def interrupted(content: str, notice: str) -> str:
    """What a message left mid-answer by a crash should show: its text, and why it ends
    (the text shortened if both would not fit in one message)."""
    ending = f"\n\n-# {notice}"
    text = content.removesuffix(CURSOR)[: MESSAGE_LIMIT - len(ending) - 1]
    return text + ending


class MessageGone(Exception):
    """The message being written was deleted: the answer should stop."""


class ReplySink(Protocol):
    """Where an answer appears; the Discord side implements it."""

    def windows(self) -> Sequence[Window]:
        """The rate limits the next write counts against."""
        ...

    async def show(self, index: int, shown: Shown) -> None:
        """Send message number `index` of the answer if it is new, else edit it.

        Raises MessageGone when the message was deleted.
        """
        ...

    def message_ids(self) -> list[int]:
        """The Discord ids of the messages shown so far."""
        ...

    async def clear_controls(self, message_id: int) -> None:
        """Remove the buttons of an earlier message in the same place."""
        ...

    async def remove(self, index: int) -> None:
        """Delete message number `index` of the answer (shown anew, a shorter answer needs
        fewer messages); one deleted already needs nothing."""
        ...

    def deadline(self) -> datetime | None:
        """When the answer must be finished by, if the place it is shown in expires."""
        ...

    def can_attach_files(self) -> bool:
        """Whether a message here may carry a file."""
        ...


@dataclass(frozen=True)
class _Final:
    """How a finished answer is shown: its pieces, and what the last one carries."""

    pieces: list[str]
    controls: Controls
    file: AttachedFile | None


class StreamingReply:
    def __init__(
        self,
        sink: ReplySink,
        scheduler: WriteScheduler,
        *,
        stop_key: str | None = None,
        on_gone: Callable[[], None] = lambda: None,
        on_new_message: Callable[[], None] = lambda: None,
        max_messages: int | None = None,
    ) -> None:
        self._sink = sink
        # Past this many messages the answer comes whole as a file on the last one.
        self._max_messages = max_messages
        self._scheduler = scheduler
        self._stop_key = stop_key
        self._on_gone = on_gone
        self._on_new_message = on_new_message
        self._text = ""
        self._status = ""
        self._final: _Final | None = None
        self._messages: list[PacedMessage] = []
        self._shown: list[Shown | None] = []
        self.gone = False
        self.finished = False
        self._opened_at = time.monotonic()
        # Seconds from opening until the answer's first words were visible (not a status).
        self.time_to_text: float | None = None

    # What the caller says.

    def status(self, text: str) -> None:
        """A line shown until the first words arrive, e.g. that the answer is queued."""
        if not self._text and self._final is None and text != self._status:
            self._status = text
            self._message(0).mark(urgent=not self._shown_any)

    def update(self, text: str) -> None:
        """The answer so far; the newest is shown as soon as the limits allow."""
        if text == self._text or self._final is not None:
            return
        first_words = not self._text
        self._text = text
        self._message(len(self._messages) - 1 if self._messages else 0).mark(urgent=first_words)

    async def finish(
        self, text: str, *, notice: str | None = None, controls: Controls = NO_CONTROLS
    ) -> None:
        """Show the complete answer (and a notice under it) now, and wait until it is visible.
        Called again, it shows the answer anew (e.g. with another notice)."""
        if self.finished:  # its messages left the scheduler when it first finished
            for message in self._messages:
                self._scheduler.add(message)
        full = text if notice is None else f"{text}\n\n-# {notice}" if text else notice
        self._text = text
        pieces = split_message(full, reserve=_RESERVE) or [""]
        file = None
        if self._max_messages is not None and len(pieces) > self._max_messages:
            attach = self._sink.can_attach_files()
            pieces = self._capped(text, notice, self._max_messages, attach=attach)
            file = AttachedFile(ANSWER_FILENAME, text.encode()) if attach else None
        self._final = _Final(pieces, controls, file)
        # Messages past the last piece go: an answer shown anew may be shorter.
        for index in range(max(len(pieces), len(self._shown))):
            if index >= len(self._shown) or self._render(index, pieces) != self._shown[index]:
                self._message(index).mark(urgent=True)
        await asyncio.gather(*(message.settled() for message in self._messages))
        for message in self._messages:
            self._scheduler.discard(message)
        self.finished = True

    @property
    def age(self) -> float:
        """Seconds since it was opened."""
        return time.monotonic() - self._opened_at

    # How it is shown.

    @property
    def _shown_any(self) -> bool:
        return any(shown is not None for shown in self._shown)

    def _message(self, index: int) -> PacedMessage:
        while len(self._messages) <= index:
            position = len(self._messages)
            message = PacedMessage(
                self._scheduler,
                lambda position=position: self._write(position),  # type: ignore[misc]
                self._sink.windows,
                after=self._messages[-1] if self._messages else None,
            )
            self._messages.append(message)
            self._shown.append(None)
            self._scheduler.add(message)
        return self._messages[index]

    def _pieces(self) -> list[str]:
        if self._final is not None:
            return self._final.pieces
        if not self._text:
            return [self._status]
        # What does not fit in the messages allowed waits for the end, and the file.
        return split_message(self._text, reserve=_RESERVE)[: self._max_messages]

    @staticmethod
    def _capped(text: str, notice: str | None, max_messages: int, *, attach: bool) -> list[str]:
        """The messages allowed, as they were streamed, the last one ending with the notices."""
        notices = [notice] if notice else []
        notices.append(
            f"The answer fills more than {max_messages} message{'s' if max_messages > 1 else ''}: "
            + (
                f"all of it is in the attached {ANSWER_FILENAME}."
                if attach
                else "it was cut short here, as I may not attach files in this channel."
            )
        )
        ending = "\n" + "".join(f"\n-# {line}" for line in notices)
        pieces = split_message(text, reserve=_RESERVE)[:max_messages]
        if len(pieces[-1]) + len(ending) > MESSAGE_LIMIT:
            pieces[-1] = split_message(pieces[-1], MESSAGE_LIMIT - len(ending))[0]
        pieces[-1] += ending
        return pieces

    def _render(self, index: int, pieces: list[str]) -> Shown | None:
        if index >= len(pieces):
            return None
        piece = pieces[index]
        last = index == len(pieces) - 1
        if self._final is not None:
            if not last:
                return Shown(piece)
            return Shown(piece, self._final.controls, self._final.file)
        if not last:
            return Shown(piece)
        if not self._text:
            return Shown(piece, Controls(stop_key=self._stop_key))
        # The splitter closes a code block still open at the end, so the cursor sits outside it.
        return Shown(piece + CURSOR, Controls(stop_key=self._stop_key))

    async def _write(self, index: int) -> None:
        if self.gone:
            return
        pieces = self._pieces()
        # The text outgrew the messages we have: the next ones follow this one.
        for new_index in range(len(self._messages), len(pieces)):
            self._message(new_index).mark(urgent=True)
        shown = self._render(index, pieces)
        if shown == self._shown[index]:
            return
        # Decided now: the text may come while a status is being written.
        shows_text = bool(self._text)
        try:
            if shown is None:
                if self._final is not None:  # only a finished answer gives messages up
                    await self._sink.remove(index)
                    self._shown[index] = None
                return
            await self._sink.show(index, shown)
        except MessageGone:
            self.gone = True
            self._on_gone()
            return
        if shows_text and self.time_to_text is None:
            self.time_to_text = time.monotonic() - self._opened_at
        new = self._shown[index] is None
        self._shown[index] = shown
        if new:
            self._on_new_message()


class Replies:
    """Makes the bot's streamed replies, every one paced by the one scheduler."""

    def __init__(self, scheduler: WriteScheduler) -> None:
        self._scheduler = scheduler
        self._retiring: set[asyncio.Task[None]] = set()

    def open(
        self,
        sink: ReplySink,
        *,
        stop_key: str | None = None,
        on_gone: Callable[[], None] = lambda: None,
        on_new_message: Callable[[], None] = lambda: None,
        max_messages: int | None = None,
    ) -> StreamingReply:
        return StreamingReply(
            sink,
            self._scheduler,
            stop_key=stop_key,
            on_gone=on_gone,
            on_new_message=on_new_message,
            max_messages=max_messages,
        )

    def retire_controls(self, sink: ReplySink, message_id: int) -> None:
        """Remove an earlier message's buttons at the pace of routine writes, aside: it is
        cosmetic, so nobody waits for it (and shutdown does not either)."""
        edit = PacedMessage(self._scheduler, lambda: sink.clear_controls(message_id), sink.windows)
        self._scheduler.add(edit)
        edit.mark()

        async def forget() -> None:
            try:
                await edit.settled()
            finally:
                self._scheduler.discard(edit)

        task = asyncio.create_task(forget())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def close(self) -> None:
        for task in self._retiring:
            task.cancel()
