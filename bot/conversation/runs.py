"""The answers being written and those waiting for their turn: queues, Stop and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakValueDictionary

from bot.admission import RESTARTING
from bot.ai import TextStream
from bot.db.models import TurnStatus
from bot.errors import UserError

INTERRUPTED = "The bot restarted before this answer finished."

# Questions one person may have waiting or being answered at once.
_MAX_QUESTIONS_PER_PERSON = 3


class StopKind(enum.Enum):
    PRESSED = "pressed"  # someone pressed Stop
    SHUTDOWN = "shutdown"  # the bot is stopping
    RESTARTING = "restarting"  # the bot is stopping, and it was not asked upstream yet
    DELETED = "deleted"  # the answer's message was deleted


@dataclass(frozen=True)
class StopReason:
    kind: StopKind
    by: str | None = None  # who pressed Stop

    @property
    def notice(self) -> str | None:
        """What the answer ends with (nothing for a deleted one: nobody would read it)."""
        if self.kind in (StopKind.SHUTDOWN, StopKind.RESTARTING):
            return RESTARTING  # asking again after the restart gets a whole answer
        if self.kind is StopKind.DELETED:
            return None
        return f"Stopped by {self.by}." if self.by else "Stopped."


SHUTDOWN = StopReason(StopKind.SHUTDOWN)
RESTART = StopReason(StopKind.RESTARTING)
DELETED = StopReason(StopKind.DELETED)


class StopResult(enum.Enum):
    STOPPED = "stopped"
    NOT_RUNNING = "not running"
    NOT_ALLOWED = "not allowed"


@dataclass
class Run:
    """One question from the moment it is asked until its answer is finished."""

    author_id: int
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # what the Stop button names
    stop_reason: StopReason | None = None
    # What Stop cancels: the wait for the turn, then the stream (never the bookkeeping between).
    task: asyncio.Task[Any] | None = None
    text: str = ""
    # With alternatives: the other answers' texts, by choice, and why each answer ended.
    others: dict[int, str] = field(default_factory=dict)
    finish_reasons: Mapping[int, str] = field(default_factory=dict)
    upstream: TextStream | None = None  # the request for its answer, once made
    answer_turn: int | None = None
    ids_stored: asyncio.Task[None] | None = None  # the newest write of its message ids
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Its turn came and the API has a place for it: no longer queued.
    answering: bool = False
    # How its answer ended, once the stream did.
    status: TurnStatus | None = None

    @property
    def accepted(self) -> bool:
        """The API took its request: it is paid for, text or not (a model may think first)."""
        return self.upstream is not None and self.upstream.accepted

    def cancel(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.task is not None:
            self.task.cancel()


class Runs:
    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        # One lock per conversation keeps its answers in order; one per person keeps each
        # person to one answer at a time. Unused locks disappear with their last waiter.
        self._conversations: WeakValueDictionary[Hashable, asyncio.Lock] = WeakValueDictionary()
        self._people: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()
        self._closing = False

    def refuse_if_busy(self, author_id: int) -> None:
        """Refuse a question from someone who has too many waiting already."""
        waiting = sum(run.author_id == author_id for run in self._runs.values())
        if waiting >= _MAX_QUESTIONS_PER_PERSON:
            raise UserError(
                "You already have questions waiting for answers; wait for them or press Stop."
            )

    def counts(self) -> tuple[int, int]:
        """How many questions wait for their turn or for the API, and how many are answered."""
        answering = sum(run.answering for run in self._runs.values())
        return len(self._runs) - answering, answering

    def start(self, author_id: int) -> Run:
        if self._closing:  # admitted a moment before the bot began to shut down
            raise UserError(RESTARTING)
        run = Run(author_id)
        self._runs[run.key] = run
        return run

    def end(self, run: Run) -> None:
        del self._runs[run.key]
        run.done.set()

    @contextlib.asynccontextmanager
    async def turn(
        self, run: Run, conversation: Hashable, *, on_wait: Callable[[], None]
    ) -> AsyncIterator[None]:
        """Wait until the person's earlier question and the conversation's earlier questions
        are answered (`on_wait` says so first, if there is a wait)."""
        person = self._people.setdefault(run.author_id, asyncio.Lock())
        in_order = self._conversations.setdefault(conversation, asyncio.Lock())
        if person.locked() or in_order.locked():
            on_wait()
        async with person, in_order:
            # Its turn has come: from here on Stop cancels only the stream, never the
            # bookkeeping around it, or a question could be stored without its answer.
            run.task = None
            yield

    @contextlib.asynccontextmanager
    async def in_order(self, conversation: Hashable) -> AsyncIterator[None]:
        """Wait until the conversation's earlier questions are answered, and keep its later
        ones waiting meanwhile: for a change to its history made outside an answer."""
        async with self._conversations.setdefault(conversation, asyncio.Lock()):
            yield

    def stop(self, key: str, *, user_id: int, can_manage: bool, by: str) -> StopResult:
        run = self._runs.get(key)
        if run is None:
            return StopResult.NOT_RUNNING
        if run.author_id != user_id and not can_manage:
            return StopResult.NOT_ALLOWED
        run.cancel(StopReason(StopKind.PRESSED, by))
        return StopResult.STOPPED

    async def wait_until_done(self, key: str) -> None:
        """Wait until run `key` is finished, if it still runs."""
        run = self._runs.get(key)
        if run is not None:
            await run.done.wait()

    async def wait_until_stored(self, answer_turn: int) -> None:
        """Wait until the answer stored as `answer_turn` is written and stored, if it still is
        being written."""
        for run in list(self._runs.values()):
            if run.answer_turn == answer_turn:
                await run.done.wait()

    @property
    def upstream(self) -> int:
        """The runs whose answers were asked for upstream and are still being written."""
        return sum(run.upstream is not None for run in self._runs.values())

    def close(self) -> None:
        """Start no more runs, and end those not asked upstream yet with the restart
        sentence; the others go on."""
        self._closing = True
        for run in self._runs.values():
            if run.upstream is None:
                run.cancel(RESTART)

    async def ended(self) -> None:
        """Wait until every run has ended."""
        for run in list(self._runs.values()):
            await run.done.wait()

    async def shutdown(self, grace: float) -> None:
        """End every run with the shutdown notice, waiting at most `grace` seconds."""
        runs = list(self._runs.values())
        for run in runs:
            run.cancel(SHUTDOWN)
        waiters = [asyncio.create_task(run.done.wait()) for run in runs]
        if waiters:
            await asyncio.wait(waiters, timeout=grace)
            for waiter in waiters:
                waiter.cancel()


class Slots:
    """The requests allowed upstream at once.

    A question with n alternatives may run as n requests, so it takes n slots together: all
    at once, never some while it waits for the rest (two such waits could hold each other up
    for ever). First come, first served: a large request is not passed over by small ones.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def busy(self, count: int) -> bool:
        """Whether taking `count` slots now would wait."""
        return bool(self._waiting) or self._free < count

    @contextlib.asynccontextmanager
    async def take(self, count: int) -> AsyncIterator[None]:
        if count > self.total:
            raise ValueError(f"{count} slots would never be free at once (of {self.total})")
        if self.busy(count):
            granted = asyncio.get_running_loop().create_future()
            waiter = (count, granted)
            self._waiting.append(waiter)
            try:
                await granted
            except asyncio.CancelledError:
                if granted.cancelled():
                    with contextlib.suppress(ValueError):
                        self._waiting.remove(waiter)
                    self._grant()  # those behind it may fit now
                else:
                    self._give_back(count)  # granted just as it was cancelled
                raise
        else:
            self._free -= count
        try:
            yield
        finally:
            self._give_back(count)

    def _give_back(self, count: int) -> None:
        self._free += count
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self._free:
            count, granted = self._waiting.popleft()
            if not granted.done():  # a cancelled waiter takes nothing
                self._free -= count
                granted.set_result(None)
