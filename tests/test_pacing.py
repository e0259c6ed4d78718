from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from bot.delivery.pacing import PacedMessage, Window, WriteScheduler


def test_window_counts_a_sliding_period() -> None:
    window = Window(3, 1.0, reserve=1)
    assert window.free_at(0.0, urgent=False) == 0.0
    window.take(0.0)
    window.take(0.2)
    # Two of three used: routine writes must leave the last slot to urgent ones.
    assert window.free_at(0.3, urgent=False) == pytest.approx(1.0)
    assert window.free_at(0.3, urgent=True) == 0.3
    window.take(0.3)
    assert window.free_at(0.4, urgent=True) == pytest.approx(1.0)
    assert window.free_at(1.1, urgent=False) == pytest.approx(1.2)
    assert window.routine_interval == pytest.approx(0.5)


def test_window_needs_a_routine_slot() -> None:
    with pytest.raises(ValueError):
        Window(1, 1.0, reserve=1)
    with pytest.raises(ValueError):
        Window(2, 1.0, reserve=1, slack=1.0)


def test_slack_slows_the_routine_pace_but_keeps_every_slot() -> None:
    window = Window(5, 5.0, reserve=0, slack=0.6)
    assert window.routine_interval == pytest.approx(5.0 / 4.4)
    for start in (0.0, 1.0, 2.0, 3.0):
        window.take(start)
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
        self.message = PacedMessage(scheduler, self.write, lambda: windows)
        scheduler.add(self.message)

    async def write(self) -> None:
        self.writes.append((time.monotonic(), self.text))
        await asyncio.sleep(self.delay)

    def set(self, text: str, *, urgent: bool = False) -> None:
        self.text = text
        self.message.mark(urgent=urgent)


async def test_updates_are_paced_and_always_newest(scheduler: WriteScheduler) -> None:
    window = Window(5, 0.5)
    recorder = Recorder(scheduler, [window])
    started = time.monotonic()
    for n in range(60):
        recorder.set(f"text {n}", urgent=n == 59)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(recorder.message.settled(), 2)

    times = [t for t, _ in recorder.writes]
    # First write at once; the last one carries the final text.
    assert times[0] - started < 0.05
    assert recorder.writes[-1][1] == "text 59"
    # Never more than five writes in any half second.
    for i in range(len(times) - 5):
        assert times[i + 5] - times[i] >= 0.5
    # No stale write: each write shows newer text than the one before.
    numbers = [int(text.split()[1]) for _, text in recorder.writes]
    assert numbers == sorted(set(numbers))
    # Routine writes keep to the even pace (0.5 s / 4 routine slots) rather than bursting.
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]  # the last one is urgent
    assert min(gaps) >= 0.12


async def test_writes_of_one_message_never_overlap(scheduler: WriteScheduler) -> None:
    recorder = Recorder(scheduler, [Window(50, 0.1)], delay=0.05)
    for n in range(10):
        recorder.set(str(n), urgent=True)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(recorder.message.settled(), 2)
    times = [t for t, _ in recorder.writes]
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(times))
    assert recorder.writes[-1][1] == "9"


async def test_shared_window_is_fair_and_urgent_writes_go_first(scheduler: WriteScheduler) -> None:
    shared = Window(10, 0.5, reserve=2)
    recorders = [Recorder(scheduler, [shared]) for _ in range(6)]
    deadline = time.monotonic() + 1.0
    n = 0
    while time.monotonic() < deadline:
        for recorder in recorders:
            recorder.set(f"{n}")
        n += 1
        await asyncio.sleep(0.01)
    # Everyone got written, in turns; then a final write goes straight through.
    counts = [len(r.writes) for r in recorders]
    assert min(counts) >= max(counts) - 2, counts
    before = time.monotonic()
    recorders[0].set("final", urgent=True)
    await asyncio.wait_for(recorders[0].message.settled(), 1)
    assert recorders[0].writes[-1][1] == "final"
    assert recorders[0].writes[-1][0] - before < 0.3


async def test_a_continuation_waits_for_the_message_above(scheduler: WriteScheduler) -> None:
    window = Window(5, 1.0)
    first = Recorder(scheduler, [window], delay=0.05)
    second_written: list[float] = []

    async def write_second() -> None:
        second_written.append(time.monotonic())

    second = PacedMessage(scheduler, write_second, lambda: [window], after=first.message)
    scheduler.add(second)
    second.mark(urgent=True)
    await asyncio.sleep(0.05)
    assert second_written == []  # the message above does not exist yet
    first.set("one", urgent=True)
    await asyncio.wait_for(second.settled(), 1)
    # The first write takes 50 ms; the continuation starts only after it finished.
    assert second_written[0] - first.writes[0][0] >= 0.045
