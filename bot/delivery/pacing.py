"""Pacing writes to Discord: every live message at its own pace, the whole bot within its limits.

Discord limits sends and edits per channel (about 5 per 5 s), per interaction token (5 per 2 s)
and per bot (50 per second, interaction routes exempt). A streamed answer wants to show new text
as often as those limits allow, but a write that Discord refuses costs a 429 and a wait, and a
queue of stale edits shows old text late. So:

- A `PacedMessage` never queues text: it is only marked dirty, and its writer reads the newest
  text when the write actually starts.
- One `WriteScheduler` for the whole bot starts writes when every `Window` they count against has
  room. Urgent writes (a message's first text, its final text) are due at once and may use the
  last slot of a window; routine updates are due at their pace and leave that slot free. What is
  due goes least recently written first.
- A window shared by several streaming messages (the bot-wide one) gives each its fair share of
  routine pace, a little under the limit, so that first and final texts find room.
- A write holds its slots from its start until a period after Discord's reply, so that however
  long writes travel, Discord never counts more than the limit.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_GOLDEN = 0.6180339887498949
# Seconds between looks at windows full of writes in flight, outside the scheduler.
_LOOK_AGAIN = 0.05
# Slots an idle write leaves free in each window it counts against.
_IDLE_SPARE = 2


class Window:
    """At most `limit` writes in any `period` seconds, counted as a sliding window.

    Discord counts a write when it arrives, which is some moment between when it was sent and
    when its reply came back. So a write holds its slot from its start until `period` seconds
    after it ended: then no window of the server's, sliding or fixed, can count more than
    `limit`, however long writes travel or wait on a busy machine. `reserve` slots are left to
    urgent writes. `slack` (a fraction of a slot) slows the routine pace without keeping a
    whole slot empty: an urgent write then seldom finds the window full, and never waits long.
    """

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        reserve: int = 1,
        slack: float = 0.0,
        lend_reserve: bool = False,
    ) -> None:
        if not 0 <= reserve < limit or not 0 <= slack < limit - reserve:
            raise ValueError("reserve and slack must leave room for routine writes")
        self.limit = limit
        self.period = period
        self.reserve = reserve
        self.slack = slack
        # A busy shared window lends its reserve to routine writes while no urgent one waits:
        # a slot kept empty helps nobody, and an urgent write gets the next slot that frees.
        self.lend_reserve = lend_reserve
        self._in_flight = 0
        self._frees: list[float] = []  # when each ended write's slot frees, soonest first

    @property
    def routine_interval(self) -> float:
        """The even spacing at which routine writes never exhaust the window."""
        return self.period / (self.limit - self.reserve - self.slack)

    def free_at(
        self, now: float, *, urgent: bool, urgent_waiting: bool = True, spare: int = 0
    ) -> float:
        """When a write may start (infinity: once a write in flight ends). `spare`: slots to
        leave free besides the reserve, for writes that may wait for a quiet moment."""
        freed = bisect.bisect_right(self._frees, now)
        if freed:
            del self._frees[:freed]
        lent = self.lend_reserve and not urgent_waiting
        allowed = self.limit if urgent or lent else self.limit - self.reserve
        allowed = max(allowed - spare, 1)
        held = self._in_flight + len(self._frees)
        if held < allowed:
            return now
        # Ended writes free their slots before any write still in flight can.
        index = held - allowed
        return self._frees[index] if index < len(self._frees) else math.inf

    def idle(self, now: float) -> bool:
        """Nothing in flight and no slot held: the same as a new window."""
        return self._in_flight == 0 and (not self._frees or self._frees[-1] <= now)

    def start(self) -> None:
        self._in_flight += 1

    def end(self, now: float) -> None:
        self._in_flight -= 1
        self.record(now)

    def record(self, now: float) -> None:
        """A write that ended at `now` (started and ended outside the scheduler)."""
        bisect.insort(self._frees, now + self.period)


class _Hold:
    """A write's slots in its windows, until Discord first answers it (or the write ends).

    Made in the write's own task: a task the write starts copies the context, but its
    requests are not the write's and must not free the write's slots early."""

    def __init__(self, windows: Sequence[Window], scheduler: WriteScheduler) -> None:
        self._windows = windows
        self._scheduler = scheduler
        self._task = asyncio.current_task()
        self._held = True

    def replied(self) -> None:
        if asyncio.current_task() is not self._task:
            return
        if self._held:
            self.release()
            return
        # Another request of the same write (discord.py trying again after a 429 or a 500,
        # a message sent anew without its reply): Discord counts it too.
        now = self._scheduler.clock()
        for window in self._windows:
            window.record(now)

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        now = self._scheduler.clock()
        for window in self._windows:
            window.end(now)
        self._scheduler.wake()


_hold: contextvars.ContextVar[_Hold | None] = contextvars.ContextVar("_hold", default=None)


def reply_received() -> None:
    """Called by the HTTP client when a reply comes, in the task that made the request.

    A write's slots count from Discord's reply rather than from when the write returns:
    discord.py returns a request that spent its bucket only once the bucket has reset, which
    may be seconds later, and meanwhile the bot-wide window would stay needlessly full."""
    hold = _hold.get()
    if hold is not None:
        hold.replied()


@contextlib.asynccontextmanager
async def room_for(
    windows: Sequence[Window], *, clock: Clock = time.monotonic
) -> AsyncIterator[None]:
    """Wait until a request made outside the scheduler (tidying up, never urgent) fits every
    window, and hold its slots there as the scheduler's writes hold theirs, until a period
    after it ends: so that the scheduler's writes and it keep within the limits together."""
    while True:
        now = clock()
        start_at = max(
            (window.free_at(now, urgent=False, spare=_IDLE_SPARE) for window in windows),
            default=now,
        )
        if start_at <= now:
            break
        # A slot held by a write in flight frees when that write ends: look again soon.
        await asyncio.sleep(min(start_at - now, _LOOK_AGAIN))
    for window in windows:
        window.start()
    try:
        yield
    finally:
        ended = clock()
        for window in windows:
            window.end(ended)


class PacedMessage:
    """One Discord message kept up to date by the scheduler.

    `write` is called with `urgent` telling whether this was a first or final write; it must read
    the newest state itself. Writes of one message never overlap.
    """

    def __init__(
        self,
        scheduler: WriteScheduler,
        write: Callable[[], Awaitable[None]],
        windows: Callable[[], Sequence[Window]],
        *,
        after: PacedMessage | None = None,
        idle: bool = False,
    ) -> None:
        self._scheduler = scheduler
        self._write = write
        self.windows = windows
        self._after = after  # a continuation waits until the message above it exists
        # An idle write (tidying up, not new text) is never urgent and waits for a quiet
        # moment, so that it never delays anyone's answer.
        self.idle = idle
        self.dirty = False
        self.urgent = False
        self.dirty_since = 0.0
        self.last_start = -math.inf
        self.writes = 0
        self.in_flight = False
        self.phase = 0.0  # in [0, 1): spreads the messages' write times apart
        self._idle = asyncio.Event()
        self._idle.set()

    def mark(self, *, urgent: bool = False) -> None:
        """The text changed: write it when the limits allow (urgent: as soon as they allow)."""
        first_mark = not self.dirty
        if first_mark:
            self.dirty = True
            self.dirty_since = self._scheduler.clock()
            self._idle.clear()
        if urgent and not self.urgent:
            self.urgent = True
        elif not first_mark:
            return  # already waiting with the same priority: nothing new to schedule
        self._scheduler.wake()

    @property
    def ready(self) -> bool:
        return self.dirty and not self.in_flight and (self._after is None or self._after.writes > 0)

    @property
    def urgent_now(self) -> bool:
        """A message's first text is as urgent as its last."""
        first = not self.idle and self.writes == 0 and not self.in_flight
        return self.urgent or first

    async def settled(self) -> None:
        """Wait until everything marked so far has been written."""
        await self._idle.wait()

    async def _run_write(self, windows: Sequence[Window]) -> None:
        hold = _Hold(windows, self._scheduler)
        _hold.set(hold)  # in this write's own task
        try:
            await self._write()
        except Exception:
            log.exception("Writing a message failed")
        finally:
            hold.release()
            self.writes += 1
            self.in_flight = False
            if not self.dirty:
                self._idle.set()
            self._scheduler.wake()


class WriteScheduler:
    """Starts the writes of every live message, within the bot-wide limits."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._messages: set[PacedMessage] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._added = 0

    def add(self, message: PacedMessage) -> None:
        # Answers that start together would otherwise update together, in bursts that fill the
        # bot-wide window and make the last of each burst (and any final text) wait. A
        # golden-ratio sequence gives every new message a phase well apart from the others'.
        self._added += 1
        message.phase = (self._added * _GOLDEN) % 1.0
        self._messages.add(message)

    def discard(self, message: PacedMessage) -> None:
        self._messages.discard(message)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Runs until cancelled; the owner starts it once and cancels it at shutdown."""
        try:
            while True:
                self._wake.clear()
                delay = self._start_ready_writes(self.clock())
                if delay is None:
                    await self._wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_ready_writes(self, now: float) -> float | None:
        """Start every write allowed now; return how long until the next one may be."""
        waiting = [message for message in self._messages if message.ready]
        # A window's routine pace is shared by the messages writing through it: each gets its
        # fair share, so that routine updates leave room for first and final texts.
        writers = Counter(
            window
            for message in self._messages
            if message.dirty or message.in_flight
            for window in message.windows()
        )
        due = {message: self._due(message, now, writers) for message in waiting}
        # Everything due, urgent or at its pace, least recently written first (so a message's
        # first text goes before anyone's last, and the longest-waiting text goes next: a
        # burst of final texts does not hold back the updates of answers still streaming).
        waiting.sort(key=lambda m: (due[m] > now, m.last_start, m.dirty_since))
        next_start = math.inf
        urgent_waiting = False
        for message in waiting:
            start_at = self._free_at(message, now, urgent_waiting, due[message])
            urgent_waiting = urgent_waiting or (message.urgent_now and start_at > now)
            if start_at > now:
                next_start = min(next_start, start_at)
                continue
            self._start(message, now)
        if next_start == math.inf:
            # Nothing waits (None: until woken), or only for slots of writes in flight: the
            # scheduler's own wake it as they end, requests made outside it (`room_for`) do
            # not, so look again soon.
            return _LOOK_AGAIN if any(not m.in_flight for m in waiting) else None
        return max(next_start - now, 0.001)

    def _due(self, message: PacedMessage, now: float, writers: Counter[Window]) -> float:
        """When a write is due: urgent ones now, routine ones at the pace of their windows."""
        if message.urgent_now:
            return now
        pace = max(
            (window.routine_interval * max(writers[window], 1) for window in message.windows()),
            default=0.0,
        )
        # The first update comes a little early or late, by phase; later ones keep a pace
        # slightly longer than the windows need, so the phases stay apart.
        stretch = 0.9 + 0.1 * message.phase if message.writes == 1 else 1 + 0.02 * message.phase
        return message.last_start + pace * stretch

    def _free_at(
        self, message: PacedMessage, now: float, urgent_waiting: bool, due: float
    ) -> float:
        """When the write may start: when due and every window it counts against has room."""
        start_at = due
        for window in message.windows():
            start_at = max(
                start_at,
                window.free_at(
                    now,
                    urgent=message.urgent_now,
                    urgent_waiting=urgent_waiting,
                    spare=_IDLE_SPARE if message.idle else 0,
                ),
            )
        return start_at

    def _start(self, message: PacedMessage, now: float) -> None:
        windows = message.windows()
        for window in windows:
            window.start()
        message.dirty = False
        message.urgent = False
        message.in_flight = True
        message.last_start = now
        task = asyncio.create_task(message._run_write(windows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
