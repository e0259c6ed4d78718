"""The bot-wide pixel budget of image work: threads blocked on events, no sleeping."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.images.work import ImageWork

WAIT = 5.0


def work(budget: int = 100) -> ImageWork:
    return ImageWork(max_bytes=1024, max_pixels=budget, budget_pixels=budget)


class Job:
    """Work that says when it starts and ends only when let go."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.started = threading.Event()
        self.go = threading.Event()

    def __call__(self) -> str:
        self.log.append(f"{self.name} starts")
        self.started.set()
        assert self.go.wait(WAIT)
        self.log.append(f"{self.name} ends")
        return self.name


async def started(job: Job) -> None:
    assert await asyncio.to_thread(job.started.wait, WAIT)


async def settle() -> None:
    """Let every task run until it waits: admission happens without any thread."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_jobs_that_do_not_fit_together_wait_their_turn() -> None:
    pool, log = work(100), list[str]()
    first, second = Job("first", log), Job("second", log)
    running = asyncio.create_task(pool.run(60, first))
    await started(first)
    waiting = asyncio.create_task(pool.run(60, second))
    await settle()
    assert not second.started.is_set()
    first.go.set()
    second.go.set()
    assert [*await asyncio.wait_for(asyncio.gather(running, waiting), WAIT)] == ["first", "second"]
    assert log == ["first starts", "first ends", "second starts", "second ends"]


async def test_small_jobs_run_side_by_side() -> None:
    pool = work(100)
    both = threading.Barrier(2, timeout=WAIT)  # broken unless both run at once
    results = await asyncio.gather(pool.run(40, both.wait), pool.run(40, both.wait))
    assert sorted(results) == [0, 1]


async def test_a_job_larger_than_the_budget_runs_alone() -> None:
    pool, log = work(100), list[str]()
    large, small = Job("large", log), Job("small", log)
    running = asyncio.create_task(pool.run(500, large))
    await started(large)
    waiting = asyncio.create_task(pool.run(1, small))
    await settle()
    assert not small.started.is_set()
    large.go.set()
    small.go.set()
    await asyncio.wait_for(asyncio.gather(running, waiting), WAIT)
    assert log == ["large starts", "large ends", "small starts", "small ends"]


async def test_a_job_given_up_keeps_its_pixels_until_its_thread_ends() -> None:
    pool, log = work(100), list[str]()
    abandoned, queued, next_one = Job("abandoned", log), Job("queued", log), Job("next", log)
    running = asyncio.create_task(pool.run(80, abandoned))
    await started(abandoned)
    gave_up = asyncio.create_task(pool.run(80, queued))
    after = asyncio.create_task(pool.run(80, next_one))
    await settle()
    gave_up.cancel()  # while waiting: those behind it keep their place
    running.cancel()  # while its thread runs: the thread still holds its pixels
    await settle()
    assert not next_one.started.is_set()
    abandoned.go.set()
    next_one.go.set()
    assert await asyncio.wait_for(after, WAIT) == "next"
    assert log == ["abandoned starts", "abandoned ends", "next starts", "next ends"]
    for task in (running, gave_up):
        with pytest.raises(asyncio.CancelledError):
            await task
