"""A long run under faults: every question answered or told why, nothing lost, memory flat.

    python -m bench.soak [--people 100] [--questions 10] [--pause 15] [--seed 1] [--json]
                         [--api-faults 0.05] [--discord-faults 0.02] [--tracemalloc]

Each of N people (default 100) asks Q questions (default 10) by mentioning the bot in a channel
of their own, each question after the answer to the one before is finished and a random pause
of up to twice `--pause` seconds, so that every conversation's history grows. Meanwhile 5% of
the API's requests fail (a 500, a 429, a stream dropped mid-answer or a malformed stream line,
evenly), 2% of Discord's message writes are answered 429 (scope shared) or 500, and the gateway
drops every 30 s (resumable). The bot runs in this process, with its database in a temporary
SQLite file; the fakes run in two child processes. Memory is this process's resident set after
a full garbage collection (Linux' /proc/self/statm), taken when the 20th and the 100th
percent of the questions are settled; with --tracemalloc it is the memory Python allocated,
and the lines whose allocations grew most between the two are printed (the run is slower).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.fakes import get_json, post_json, running_bot, running_fakes
from tests.fakes.api import make_text

RECONNECT_EVERY = 30.0
CHUNK_SIZE = 4
CHUNKS_PER_SECOND = 30.0
FIRST_BYTE_DELAY = 0.2
QUESTION_FILLER = 200  # characters after each question's number: the echo takes about 2 s
CURSOR = " ▌"
STATUS_PREFIXES = ("⏳", "💭")  # queued or waiting; the model thinking
REFUSAL_PREFIX = "⚠️"
NOTICE = "\n\n-# "
MARKER = "soak-question"  # in every question, to find question text where it must not be
ANSWER_TIMEOUT = 120.0  # for one answer to settle; past it the question counts as lost
POLL_INTERVAL = 0.25
SINCE_OVERLAP = 2.0  # seconds each poll looks back, so that no change falls between two polls
IDLE_TIMEOUT = 30.0  # for the number of tasks to come back to its idle level
MEMORY_GROWTH_LIMIT = 0.10
DURATION_LIMIT = 600.0

Json = dict[str, Any]


# --- what Discord shows --------------------------------------------------------------------------


def _newest(message: Json) -> Json:
    version: Json = message["versions"][-1]
    return version


def is_final(message: Json) -> bool:
    """Whether a reply is finished: no Stop button, no cursor, no status line."""
    version = _newest(message)
    content = str(version["content"])
    return (
        bool(content.strip())
        and "Stop" not in version["buttons"]
        and not content.endswith(CURSOR)
        and not content.startswith(STATUS_PREFIXES)
    )


def shown_answer(content: str) -> str:
    """The answer a final reply shows, without the notices under it."""
    return content.split(NOTICE, 1)[0]


class Screen:
    """Each unfinished reply of the bot as Discord shows it (its newest version), by the
    message it answers, polled from the fake. Finished replies are forgotten, so that this
    process's memory is the bot's."""

    def __init__(self, session: aiohttp.ClientSession, control: str) -> None:
        self._replies: dict[str, Json] = {}
        self._finished: set[str] = set()
        self._session = session
        self._control = control
        self._changed = asyncio.Event()

    async def watch(self) -> None:
        since: float | None = None
        while True:
            query = "latest=1" if since is None else f"latest=1&since={since}"
            state: Json = await get_json(self._session, f"{self._control}/state?{query}")
            for message in state["messages"]:
                question_id = message["reference_id"]
                if message["author_bot"] and question_id and question_id not in self._finished:
                    self._replies[str(question_id)] = message
            since = float(state["now"]) - SINCE_OVERLAP
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
            await asyncio.sleep(POLL_INTERVAL)

    async def settled(self, question_id: str) -> None:
        """Wait until the reply to `question_id` is finished."""
        while True:
            reply = self._replies.get(question_id)
            if reply is not None and is_final(reply):
                del self._replies[question_id]
                self._finished.add(question_id)
                return
            await self._changed.wait()


# --- the process's figures -----------------------------------------------------------------------


def memory_after_gc() -> int:
    """Bytes in use after a full garbage collection: those Python allocated while tracemalloc
    traces, else the process's resident set."""
    gc.collect()
    if tracemalloc.is_tracing():
        return tracemalloc.get_traced_memory()[0]
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def tasks_back_to(idle: int, within: float) -> int:
    """The number of tasks once it is back to `idle` (or, after `within` seconds, as it is)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        count = len(asyncio.all_tasks())
        if count <= idle or loop.time() >= deadline:
            return count
        await asyncio.sleep(0.1)


class LogTally(logging.Handler):
    """Counts log records by level, keeps the first errors, and finds question text in logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.by_level: Counter[str] = Counter()
        self.errors: list[str] = []
        self.with_question_text = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.by_level[record.levelname] += 1
        text = self.format(record)
        if MARKER in text:
            self.with_question_text += 1
        if record.levelno >= logging.ERROR and len(self.errors) < 5:
            self.errors.append(text[:400])


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Question:
    channel_id: str
    content: str
    message_id: str = ""
    reply: Json | None = None  # the reply as Discord shows it at the end


@dataclass
class Tally:
    """What the people saw while asking."""

    total: int
    settled: int = 0
    memory: dict[int, int] = field(default_factory=dict)  # settled questions -> bytes
    snapshots: list[tracemalloc.Snapshot] = field(default_factory=list)
    first_asked: float | None = None
    last_settled: float | None = None

    def note_settled(self) -> None:
        self.settled += 1
        self.last_settled = time.monotonic()
        if self.settled in (self.total // 5, self.total):
            self.memory[self.settled] = memory_after_gc()
            if tracemalloc.is_tracing():
                self.snapshots.append(tracemalloc.take_snapshot())

    def grown_most(self, count: int = 10) -> list[str]:
        """Where allocations grew most between the two snapshots."""
        if len(self.snapshots) < 2:
            return []
        early, late = self.snapshots[0], self.snapshots[-1]
        grown = [stat for stat in late.compare_to(early, "lineno") if stat.size_diff > 0]
        return [str(stat) for stat in grown[:count]]


async def _ask_in_turn(
    session: aiohttp.ClientSession,
    control: str,
    screen: Screen,
    tally: Tally,
    questions: list[Question],
    author_id: str,
    pause: Callable[[], float],
) -> None:
    for index, question in enumerate(questions):
        if index:
            await asyncio.sleep(pause())
        body = {
            "channel_id": question.channel_id,
            "author_id": author_id,
            "content": question.content,
            "mention_bot": True,
        }
        if tally.first_asked is None:
            tally.first_asked = time.monotonic()
        question.message_id = str((await post_json(session, f"{control}/messages", body))["id"])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await screen.settled(question.message_id)
        tally.note_settled()


async def _drop_gateway_every(
    session: aiohttp.ClientSession, control: str, drops: list[float]
) -> None:
    while True:
        await asyncio.sleep(RECONNECT_EVERY)
        await post_json(session, f"{control}/drop_gateway", {"code": 4000, "resumable": True})
        drops.append(time.monotonic())


async def _run(args: argparse.Namespace) -> Json:
    n = args.people
    api_args = (
        "--chunk-size",
        str(CHUNK_SIZE),
        "--chunks-per-second",
        str(CHUNKS_PER_SECOND),
        "--first-byte-delay",
        str(FIRST_BYTE_DELAY),
        "--fault-rate",
        str(args.api_faults),
        "--fault-seed",
        str(args.seed),
    )
    discord_args = (
        "--channels",
        str(n),
        "--users",
        str(n),
        "--set",
        f"write_fault_rate={args.discord_faults}",
        "--set",
        f"write_fault_seed={args.seed}",
    )
    async with (
        asyncio.timeout(args.timeout),
        running_fakes(api_args, discord_args) as fakes,
        contextlib.AsyncExitStack() as stack,
    ):
        database = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "soak.db"
        await stack.enter_async_context(
            running_bot(fakes, database, max_concurrent_requests=max(n, 16))
        )
        async with aiohttp.ClientSession() as session:
            figures = await _soak(
                session, args, fakes.api_url, fakes.discord, fakes.channels(n), fakes.people(n)
            )
        # Read while the bot still runs: what it does on closing must not hide what it left.
        figures.update(_check_database(database, figures.pop("questions")))
        return figures


async def _soak(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    api_url: str,
    info: Json,
    channel_ids: list[str],
    users: list[str],
) -> Json:
    control: str = info["control_base"]
    await post_json(session, f"{control}/reset", {})  # forget the start-up requests
    await post_json(session, f"{api_url}/_fake/reset", {})
    rng = random.Random(args.seed)
    asked = {
        channel_id: [
            Question(
                channel_id,
                f"{MARKER} {number + 1} of {person}: {make_text(QUESTION_FILLER)}",
            )
            for number in range(args.questions)
        ]
        for person, channel_id in enumerate(channel_ids)
    }
    tally = Tally(total=len(channel_ids) * args.questions)
    screen = Screen(session, control)
    drops: list[float] = []

    tasks_idle = len(asyncio.all_tasks())
    if args.tracemalloc:
        tracemalloc.start()
    memory_idle = memory_after_gc()
    watcher = asyncio.create_task(screen.watch())
    dropper = asyncio.create_task(_drop_gateway_every(session, control, drops))
    try:
        await asyncio.gather(
            *(
                _ask_in_turn(
                    session,
                    control,
                    screen,
                    tally,
                    asked[channel_id],
                    author_id,
                    lambda: rng.uniform(0, 2 * args.pause),
                )
                for channel_id, author_id in zip(channel_ids, users, strict=True)
            )
        )
    finally:
        for background in (watcher, dropper):
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
        tracemalloc.stop()
    tasks_after = await tasks_back_to(tasks_idle, IDLE_TIMEOUT)

    # The final look, also at replies that settled after their question's wait ended.
    state: Json = await get_json(session, f"{control}/state?latest=1")
    replies = {
        str(m["reference_id"]): m
        for m in state["messages"]
        if m["author_bot"] and m["reference_id"] is not None
    }
    questions = [question for channel in asked.values() for question in channel]
    for question in questions:
        question.reply = replies.get(question.message_id)
    faults: Json = await get_json(session, f"{api_url}/_fake/faults")
    first, last = tally.first_asked or 0.0, tally.last_settled or 0.0
    return {
        "people": len(channel_ids),
        "questions_each": args.questions,
        "questions": questions,
        "api_fault_rate": args.api_faults,
        "discord_fault_rate": args.discord_faults,
        "api_faults": faults["injected"],
        "discord_write_faults": state["write_faults"],
        "discord_own_429s": state["rate_limited"],
        "gateway_drops": len(drops),
        "resumes": state["resume_count"],
        "identifies": state["identify_count"],
        "memory_measure": "tracemalloc" if args.tracemalloc else "RSS after gc",
        "memory_idle_mb": memory_idle / 2**20,
        "memory_mb": {str(k): v / 2**20 for k, v in tally.memory.items()},
        "memory_grown_most": tally.grown_most(),
        "tasks_idle": tasks_idle,
        "tasks_after": tasks_after,
        "duration_s": last - first,
    }


# --- the checks ----------------------------------------------------------------------------------


def _stored_turns(database: Path) -> dict[str, list[tuple[str, list[int], str, str]]]:
    """Each channel's turns in order: (role, message ids, content, status)."""
    turns: dict[str, list[tuple[str, list[int], str, str]]] = {}
    with contextlib.closing(sqlite3.connect(database)) as db:
        rows = db.execute(
            "SELECT c.channel_id, t.role, t.message_ids, t.content, t.status FROM turns t"
            " JOIN conversations c ON c.id = t.conversation_id ORDER BY t.id"
        )
        for channel_id, role, message_ids, content, status in rows:
            ids = [int(i) for i in json.loads(message_ids or "[]")]
            turns.setdefault(str(channel_id), []).append((role, ids, content, status))
    return turns


def _expected_turns(question: Question) -> list[tuple[str, list[int], str]]:
    """The turns a question should leave: none when refused, else it and the answer shown."""
    reply = question.reply
    if reply is None:
        return [("user", [int(question.message_id)], "")]  # lost: cannot match what is stored
    content = str(_newest(reply)["content"])
    if content.startswith(REFUSAL_PREFIX):
        return []
    return [
        ("user", [int(question.message_id)], ""),
        ("assistant", [int(reply["id"])], shown_answer(content)),
    ]


def _check_database(database: Path, questions: list[Question]) -> Json:
    outcomes: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    notices: Counter[str] = Counter()
    unfinished: list[str] = []
    for question in questions:
        if question.reply is None:
            outcomes["no reply"] += 1
            unfinished.append(f"{question.message_id}: no reply")
            continue
        content = str(_newest(question.reply)["content"])
        if not is_final(question.reply):
            outcomes["unfinished"] += 1
            unfinished.append(f"{question.message_id}: {content[-60:]!r}")
        elif content.startswith(REFUSAL_PREFIX):
            outcomes["refused"] += 1
            refusals[content.removeprefix(REFUSAL_PREFIX).strip()] += 1
        elif NOTICE in content:
            outcomes["answered with a notice"] += 1
            notices[content.split(NOTICE, 1)[1]] += 1
        else:
            outcomes["answered"] += 1

    stored = _stored_turns(database)
    statuses = Counter(status for turns in stored.values() for *_, status in turns)
    mismatched: list[str] = []
    by_channel: dict[str, list[Question]] = {}
    for question in questions:
        by_channel.setdefault(question.channel_id, []).append(question)
    for channel_id, asked in by_channel.items():
        expected = [turn for question in asked for turn in _expected_turns(question)]
        got = stored.get(channel_id, [])
        # A question's text is what was asked; only the answers' texts are compared.
        same = len(got) == len(expected) and all(
            (role, ids) == (want_role, want_ids) and (role == "user" or content == want)
            for (role, ids, content, _), (want_role, want_ids, want) in zip(
                got, expected, strict=True
            )
        )
        if not same:
            mismatched.append(channel_id)
    return {
        "outcomes": dict(outcomes),
        "refusals": dict(refusals),
        "notices": dict(notices),
        "unfinished_examples": unfinished[:5],
        "turn_statuses": dict(statuses),
        "conversations_mismatched": mismatched,
    }


@dataclass
class Check:
    label: str
    value: str
    passed: bool


def _checks(figures: Json) -> list[Check]:
    outcomes: Json = figures["outcomes"]
    total = figures["people"] * figures["questions_each"]
    told = sum(outcomes.get(k, 0) for k in ("answered", "answered with a notice", "refused"))
    in_progress = figures["turn_statuses"].get("in_progress", 0)
    mismatched = figures["conversations_mismatched"]
    memory: Json = figures["memory_mb"]
    early, late = memory.get(str(total // 5)), memory.get(str(total))
    growth = (late - early) / early if early and late else None
    grew = "-" if growth is None else f"{early:.1f} -> {late:.1f} MB ({growth:+.1%})"
    tasks = f"{figures['tasks_idle']} idle, {figures['tasks_after']} after"
    return [
        Check("answered or told why", f"{told} of {total}", told == total),
        Check("turns left in_progress", str(in_progress), in_progress == 0),
        Check(
            "stored once, in order",
            f"{len(mismatched)} of {figures['people']} conversations differ",
            not mismatched,
        ),
        Check(
            f"memory, answer {total // 5} -> {total}",
            grew,
            growth is not None and growth < MEMORY_GROWTH_LIMIT,
        ),
        Check("asyncio tasks", tasks, figures["tasks_after"] <= figures["tasks_idle"]),
        Check(
            "duration",
            f"{figures['duration_s']:.0f} s",
            figures["duration_s"] <= DURATION_LIMIT,
        ),
        Check(
            "question text in the log",
            str(figures["log_question_text"]),
            figures["log_question_text"] == 0,
        ),
    ]


def _report(figures: Json, checks: list[Check]) -> str:
    lines = [
        f"{figures['people']} people x {figures['questions_each']} questions; API faults "
        f"{figures['api_fault_rate']:.0%}, Discord write faults "
        f"{figures['discord_fault_rate']:.0%}, gateway drop "
        f"every {RECONNECT_EVERY:g} s"
    ]
    for check in checks:
        lines.append(f"{'PASS' if check.passed else 'FAIL'}  {check.label:<28} {check.value}")

    def counts(counter: Json) -> str:
        return ", ".join(f"{key}: {value}" for key, value in sorted(counter.items())) or "none"

    lines += [
        f"outcomes: {counts(figures['outcomes'])}",
        f"refusals by reason: {counts(figures['refusals'])}",
        f"notices under answers: {counts(figures['notices'])}",
        f"stored turns by status: {counts(figures['turn_statuses'])}",
        f"API faults injected: {counts(figures['api_faults'])}",
        f"Discord writes answered 429/500: {counts(figures['discord_write_faults'])}; "
        f"429s of Discord's own limits: {figures['discord_own_429s']}",
        f"gateway drops {figures['gateway_drops']}, resumes {figures['resumes']}, "
        f"identifies {figures['identifies']}",
        f"memory ({figures['memory_measure']}): idle {figures['memory_idle_mb']:.1f} MB, "
        + ", ".join(f"at {k}: {v:.1f} MB" for k, v in figures["memory_mb"].items()),
        f"tasks: idle {figures['tasks_idle']}, after {figures['tasks_after']}",
        f"first question to last answer: {figures['duration_s']:.1f} s",
        f"log: {counts(figures['log_levels'])}",
    ]
    lines += [f"  grew: {line}" for line in figures["memory_grown_most"]]
    lines += [f"  unfinished: {example}" for example in figures["unfinished_examples"]]
    lines += [
        f"  conversation differs: {channel}" for channel in figures["conversations_mismatched"][:5]
    ]
    lines += [f"  error logged: {error}" for error in figures["log_errors"]]
    lines.append(f"overall: {'PASS' if all(c.passed for c in checks) else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--people", type=int, default=100, help="each in a channel of their own")
    parser.add_argument("--questions", type=int, default=10, help="asked by each person")
    parser.add_argument("--pause", type=float, default=15.0, help="mean seconds between questions")
    parser.add_argument("--seed", type=int, default=1, help="the faults' and pauses' seed")
    parser.add_argument(
        "--api-faults", type=float, default=0.05, help="share of API requests that fail"
    )
    parser.add_argument(
        "--discord-faults", type=float, default=0.02, help="share of Discord writes that fail"
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="measure memory with tracemalloc"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    tally = LogTally()
    logging.basicConfig(level=logging.INFO, handlers=[tally])
    try:
        figures = asyncio.run(_run(args))
    except TimeoutError:
        print(f"the run did not finish within {args.timeout:g} s", file=sys.stderr)
        return 2
    figures["log_levels"] = dict(tally.by_level)
    figures["log_errors"] = tally.errors
    figures["log_question_text"] = tally.with_question_text
    checks = _checks(figures)
    if args.json:
        figures["checks"] = [c.__dict__ for c in checks]
        print(json.dumps(figures, indent=2))
    else:
        print(_report(figures, checks))
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
