from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator

import pytest

from bot.delivery.pacing import PacedMessage, Window, WriteScheduler, reply_received, room_for


def test_window_counts_a_sliding_period() -> None:
    window = Window(3, 1.0, reserve=1)
    assert window.free_at(0.0, urgent=False) == 0.0
    window.record(0.0)
    window.record(0.2)
    # Two of three used: routine writes must leave the last slot to urgent ones.
    assert window.free_at(0.3, urgent=False) == pytest.approx(1.0)
    assert window.free_at(0.3, urgent=True) == 0.3
    window.record(0.3)
    assert window.free_at(0.4, urgent=True) == pytest.approx(1.0)
    assert window.free_at(1.1, urgent=False) == pytest.approx(1.2)
    assert window.routine_interval == pytest.approx(0.5)


def test_a_write_holds_its_slot_until_a_period_after_it_ended() -> None:
    # Discord counts a write when it arrives, at some moment before its reply.
    window = Window(2, 1.0, reserve=0)
    window.start()
    window.start()
    assert window.free_at(0.5, urgent=True) == math.inf  # both in flight: not known yet
    window.end(0.7)
    assert window.free_at(0.8, urgent=True) == pytest.approx(1.7)
    window.end(0.9)
    assert window.free_at(1.8, urgent=True) == 1.8
    assert window.free_at(1.8, urgent=True, spare=1) == pytest.approx(1.9)


def test_window_needs_a_routine_slot() -> None:
    with pytest.raises(ValueError):
        Window(1, 1.0, reserve=1)
    with pytest.raises(ValueError):
        Window(2, 1.0, reserve=1, slack=1.0)


def test_slack_slows_the_routine_pace_but_keeps_every_slot() -> None:
    window = Window(5, 5.0, reserve=0, slack=0.6)
    assert window.routine_interval == pytest.approx(5.0 / 4.4)
    for start in (0.0, 1.0, 2.0, 3.0):
        window.record(start)
    assert window.free_at(3.5, urgent=False) == 3.5  # the fifth slot is not held back


@pytest.fixture
async def scheduler() -> AsyncIterator[WriteScheduler]:
    scheduler = WriteScheduler()
    task = asyncio.create_task(scheduler.run())
    yield scheduler
    task.cancel()


class Recorder:
    """A message whose writes record the newest text at the moment they start."""

    def __init__(self, scheduler: WriteScheduler, windows: list[Window], delay: float = 0.0):
        self.text = ""
        self.writes: list[tuple[float, str]] = []
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0
        self.message = PacedMessage(scheduler, self.write, lambda: windows)
        scheduler.add(self.message)

    async def write(self) -> None:
        self.writes.append((time.monotonic(), self.text))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)  # the time a write takes
        self.in_flight -= 1

    def set(self, text: str, *, urgent: bool = False) -> None:
        self.text = text
        self.message.mark(urgent=urgent)


async def test_updates_are_paced_and_always_newest(scheduler: WriteScheduler) -> None:
    window = Window(5, 0.5)
    recorder = Recorder(scheduler, [window])
    for n in range(60):
        recorder.set(f"text {n}", urgent=n == 59)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(recorder.message.settled(), 2)

    times = [t for t, _ in recorder.writes]
    # First write at once, before the next update; the last one carries the final text.
    assert recorder.writes[0][1] == "text 0"
    assert recorder.writes[-1][1] == "text 59"
    # Never more than five writes in any half second.
    for i in range(len(times) - 5):
        assert times[i + 5] - times[i] >= 0.5
    # No stale write: each write shows newer text than the one before.
    numbers = [int(text.split()[1]) for _, text in recorder.writes]
    assert numbers == sorted(set(numbers))
    # Routine writes keep to the even pace (0.5 s / 4 routine slots) rather than bursting
    # (the first update comes a little early or late, by phase; the last one is urgent).
    gaps = [b - a for a, b in itertools.pairwise(times[1:-1])]
    assert min(gaps) >= 0.12


async def test_writes_of_one_message_never_overlap(scheduler: WriteScheduler) -> None:
    recorder = Recorder(scheduler, [Window(50, 0.1)], delay=0.05)
    for n in range(10):
        recorder.set(str(n), urgent=True)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(recorder.message.settled(), 2)
    assert recorder.most_in_flight == 1
    assert len(recorder.writes) > 1  # marked while a write was in flight: it waited for it
    assert recorder.writes[-1][1] == "9"


async def test_shared_window_is_fair_and_urgent_writes_go_first(scheduler: WriteScheduler) -> None:
    shared = Window(10, 0.5, reserve=2)
    recorders = [Recorder(scheduler, [shared]) for _ in range(6)]
    for n in range(100):  # about a second of updates, more than the window allows
        for recorder in recorders:
            recorder.set(f"{n}")
        await asyncio.sleep(0.01)
    # Everyone got written, in turns; then a final write goes ahead of the routine ones
    # waiting for the same window.
    counts = [len(r.writes) for r in recorders]
    assert min(counts) >= max(counts) - 2, counts
    for recorder in recorders[1:]:
        recorder.set("routine")
    recorders[0].set("final", urgent=True)
    settled = (recorder.message.settled() for recorder in recorders)
    await asyncio.wait_for(asyncio.gather(*settled), 2)
    final_at, final = recorders[0].writes[-1]
    assert final == "final"
    assert all(final_at <= r.writes[-1][0] for r in recorders[1:])
    assert all(r.writes[-1][1] == "routine" for r in recorders[1:])


async def test_slow_writes_hold_their_slots_until_they_end(scheduler: WriteScheduler) -> None:
    recorder = Recorder(scheduler, [Window(1, 0.2, reserve=0)], delay=0.15)
    for n in range(40):
        recorder.set(str(n), urgent=True)
        await asyncio.sleep(0.02)
    await asyncio.wait_for(recorder.message.settled(), 2)
    starts = [t for t, _ in recorder.writes]
    assert len(starts) >= 3
    # Each write waits for the one before to end and then for the period: 0.35 s, not 0.2 s.
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.34


async def test_writers_share_a_window_and_leave_room_for_urgent_writes(
    scheduler: WriteScheduler,
) -> None:
    # Room for 8 writes a second, 4 of them routine (slack 2 of 4): four streaming messages
    # get one routine write a second each, rather than filling the window by turns.
    shared = Window(4, 0.5, reserve=0, slack=2.0)
    recorders = [Recorder(scheduler, [shared]) for _ in range(4)]
    for n in range(250):
        for recorder in recorders:
            recorder.set(str(n))
        await asyncio.sleep(0.01)
    for recorder in recorders:
        starts = [t for t, _ in recorder.writes]
        assert len(starts) >= 3
        assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.8, starts
    marked = time.monotonic()
    recorders[0].set("final", urgent=True)
    await asyncio.wait_for(recorders[0].message.settled(), 1)
    assert recorders[0].writes[-1][0] - marked < 0.1  # a slot was free for it


async def test_a_slot_frees_a_period_after_the_reply(scheduler: WriteScheduler) -> None:
    # discord.py returns a request that spent its bucket only when the bucket resets: the
    # window counts from the reply, not from then.
    shared = Window(1, 0.2, reserve=0)
    starts: list[float] = []

    async def write_then_wait() -> None:
        starts.append(time.monotonic())
        reply_received()
        await asyncio.sleep(0.5)

    async def write() -> None:
        starts.append(time.monotonic())

    slow = PacedMessage(scheduler, write_then_wait, lambda: [shared])
    quick = PacedMessage(scheduler, write, lambda: [shared])
    scheduler.add(slow)
    scheduler.add(quick)
    slow.mark(urgent=True)
    await asyncio.sleep(0.01)
    quick.mark(urgent=True)
    await asyncio.wait_for(quick.settled(), 1)
    assert 0.19 <= starts[1] - starts[0] < 0.4


async def test_a_continuation_waits_for_the_message_above(scheduler: WriteScheduler) -> None:
    window = Window(5, 1.0)
    written: list[str] = []
    first_started, first_may_end = asyncio.Event(), asyncio.Event()

    async def write_first() -> None:
        written.append("first starts")
        first_started.set()
        await first_may_end.wait()
        written.append("first ends")

    async def write(name: str) -> None:
        written.append(name)

    first = PacedMessage(scheduler, write_first, lambda: [window])
    second = PacedMessage(scheduler, lambda: write("second"), lambda: [window], after=first)
    elsewhere = PacedMessage(scheduler, lambda: write("elsewhere"), lambda: [window])
    for message in (first, second, elsewhere):
        scheduler.add(message)
    second.mark(urgent=True)
    elsewhere.mark(urgent=True)
    # A write marked after it has gone out: the scheduler has looked at the continuation.
    await asyncio.wait_for(elsewhere.settled(), 1)
    assert written == ["elsewhere"]  # the message above does not exist yet
    first.mark(urgent=True)
    await asyncio.wait_for(first_started.wait(), 1)
    first_may_end.set()
    await asyncio.wait_for(second.settled(), 1)
    assert written == ["elsewhere", "first starts", "first ends", "second"]


async def test_every_request_of_a_write_counts(scheduler: WriteScheduler) -> None:
    # discord.py tries a write again after a 429 or a 500, inside the same write: Discord
    # receives both requests.
    window = Window(2, 10.0, reserve=0)

    async def refused_then_retried() -> None:
        reply_received()  # the 429
        reply_received()  # the request tried again

    message = PacedMessage(scheduler, refused_then_retried, lambda: [window])
    scheduler.add(message)
    message.mark(urgent=True)
    await asyncio.wait_for(message.settled(), 1)
    assert window.free_at(time.monotonic(), urgent=True) > time.monotonic()


async def test_a_task_started_by_a_write_leaves_its_slot_held(scheduler: WriteScheduler) -> None:
    # A task made during the write copies the write's context; its requests are its own.
    window = Window(1, 10.0, reserve=0)
    while_writing: list[float] = []

    async def elsewhere() -> None:
        reply_received()

    async def write() -> None:
        await asyncio.create_task(elsewhere())
        while_writing.append(window.free_at(time.monotonic(), urgent=True))

    message = PacedMessage(scheduler, write, lambda: [window])
    scheduler.add(message)
    message.mark(urgent=True)
    await asyncio.wait_for(message.settled(), 1)
    assert while_writing == [math.inf]  # still in flight until its own reply or its end


async def test_a_write_made_outside_the_scheduler_does_not_stall_it(
    scheduler: WriteScheduler,
) -> None:
    # The only slot is held by a request in flight that the scheduler did not start: it
    # cannot know when that one frees the slot, and must not wait for ever.
    window = Window(1, 0.05, reserve=0)
    written = asyncio.Event()

    async def write() -> None:
        written.set()

    message = PacedMessage(scheduler, write, lambda: [window])
    scheduler.add(message)
    async with room_for([window]):
        message.mark(urgent=True)
        for _ in range(20):  # the scheduler looks while the slot is in flight
            await asyncio.sleep(0)
        assert not written.is_set()
    await asyncio.wait_for(written.wait(), 1)
