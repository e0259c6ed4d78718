"""How quickly streamed answers become visible in Discord, with the fakes in another process.

    python -m bench.chat [--people 50] [--ask] [--json] [--timeout SECONDS]
    python -m bench.chat --people 20,50,100,200

N people mention the bot at once, each in a channel of their own (default 50; with --ask, N
/ask commands, default 1). The fake API answers each with 800 characters in 4-character chunks,
30 a second, after 300 ms; the fake Discord enforces Discord's rate limits (50 writes a second
for the bot, 5 in 5 s per channel). The bot runs in this process; the fakes run in two child
processes. Prints each figure next to its target. With several N, each N runs in a fresh
process of its own (so that peak memory is that N's) and the figures come as one row per N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.fakes import ROOT, get_json, post_json, running_bot, running_fakes
from tests.fakes.api import make_text

TEXT_LENGTH = 800
CHUNK_SIZE = 4
CHUNKS_PER_SECOND = 30.0
FIRST_BYTE_DELAY = 0.3
CURSOR = " ▌"
STATUS_PREFIX = "⏳"
STREAMS_TIMEOUT = 30.0  # for the API to finish every stream
# After that, for Discord to show every complete answer: longer with more people, as the last
# final texts queue for the bot-wide limit.
COMPLETE_TIMEOUT = 10.0
COMPLETE_TIMEOUT_PER_PERSON = 0.05
POLL_INTERVAL = 0.5
QUESTION = "question for channel "  # then the channel's id
SETTLE = 1.0  # after the last answer is complete, so that late writes are counted too
# The routes that write a message (sends, edits, interaction responses and follow-ups).
# Discord's limits, which the fake Discord is told to keep (its defaults, named to be sure).
BOT_WRITES_PER_SECOND = 50
CHANNEL_WRITES = 5
CHANNEL_WRITES_PERIOD = 5.0
GAP_TARGET_FACTOR = 1.25
PROMPT_PEOPLE = 50  # up to this many people at once, first and final texts come promptly
WRITE_ROUTES = {
    "POST /channels/{channel_id}/messages",
    "PATCH /channels/{channel_id}/messages/{message_id}",
    "POST /interactions/{interaction_id}/{token}/callback",
    "POST /webhooks/{application_id}/{token}",
    "PATCH /webhooks/{application_id}/{token}/messages/{message_id}",
}

Json = dict[str, Any]


# --- figures -------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One conversation's answer as Discord showed it (times are time.time() seconds)."""

    channel_id: str
    first_visible: float | None = None
    complete: float | None = None
    correct: bool = False
    longest_gaps: list[float] = field(default_factory=list)  # one per message
    text_ages: list[float] = field(default_factory=list)  # per update, estimated
    shrinking_updates: int = 0  # updates showing less text than the one before
    first_token: float | None = None
    last_token: float | None = None


def _answer_text(content: str) -> str:
    """The answer text a version shows: no cursor, no status line."""
    if content.startswith(STATUS_PREFIX):
        return ""
    return content.removesuffix(CURSOR).strip()


def _available_at(first_token: float, shown_chars: int) -> float:
    """When the fake API had sent the first `shown_chars` characters (its pacing is exact)."""
    chunks = max(1, math.ceil(shown_chars / CHUNK_SIZE))
    return first_token + (chunks - 1) / CHUNKS_PER_SECOND


def _read_answer(channel_id: str, messages: list[Json], expected: str) -> Answer:
    answer = Answer(channel_id)
    finals: list[str] = []
    done_times: list[float] = []
    for message in messages:
        versions: list[Json] = message["versions"]
        final = str(versions[-1]["content"])
        finals.append(final)
        times: list[float] = []
        previous = 0
        for version in versions:
            text = _answer_text(str(version["content"]))
            if not text:
                continue
            if len(text) < previous:
                answer.shrinking_updates += 1
            previous = len(text)
            times.append(float(version["t"]))
            if version["content"] == final:
                break
        if not times:
            continue
        if answer.first_visible is None or times[0] < answer.first_visible:
            answer.first_visible = times[0]
        done_times.append(times[-1])
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        answer.longest_gaps.append(max(gaps, default=0.0))
    joined = "".join("".join(final.split()) for final in finals)
    answer.correct = bool(finals) and joined == "".join(expected.split())
    if answer.correct and done_times:
        answer.complete = max(done_times)
    return answer


def _add_text_ages(answer: Answer, messages: list[Json]) -> None:
    """How old the shown text was at each update: now minus when the API had sent it."""
    if answer.first_token is None:
        return
    shown_before = 0
    for message in messages:
        length = 0
        for version in message["versions"]:
            text = _answer_text(str(version["content"]))
            if text:
                length = len(text)
                available = _available_at(answer.first_token, shown_before + length)
                answer.text_ages.append(float(version["t"]) - available)
        shown_before += length


def _percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (so p95 of 50 values is the 48th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _spread(values: Sequence[float]) -> Json:
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    return {
        "p50": statistics.median(values),
        "p95": _percentile(values, 0.95),
        "max": max(values),
        "n": len(values),
    }


@dataclass
class Target:
    label: str
    text: str
    passed: bool


def gap_target(people: int) -> float:
    """The p95 longest gap allowed: 1.25 times the floor Discord's limits set when every answer
    is updated in turn, each channel at most once a second and the bot 50 times a second."""
    floor = max(CHANNEL_WRITES_PERIOD / CHANNEL_WRITES, people / BOT_WRITES_PER_SECOND)
    return GAP_TARGET_FACTOR * floor


def _targets(figures: Json, ask: bool) -> list[Target]:
    first, last, gaps = figures["first_visible_s"], figures["complete_s"], figures["gap_s"]
    n, done = figures["people"], figures["complete_answers"]
    limited = figures["rate_limited_429"]

    def within(spread: Json, key: str, limit: float) -> bool:
        value = spread[key]
        return value is not None and bool(value <= limit) and done == n

    if ask:
        return [
            Target("first visible", "every answer <= 50 ms", within(first, "max", 0.050)),
            Target("complete", "every answer <= 300 ms", within(last, "max", 0.300)),
            Target("gap between updates", "none > 1 s", within(gaps, "max", 1.0)),
            Target("429s", "0", limited == 0),
        ]
    gap_limit = gap_target(n)
    targets = [
        Target("answers complete", f"all {n}", done == n),
        Target("429s", "0", limited == 0),
        Target("gap between updates", f"p95 <= {gap_limit:.2f} s", within(gaps, "p95", gap_limit)),
    ]
    if n <= PROMPT_PEOPLE:
        # With more people, first and final texts queue for the bot-wide limit: no target.
        targets += [
            Target("first visible", "p50 <= 300 ms", within(first, "p50", 0.300)),
            Target("complete", "p50 < 500 ms", within(last, "p50", 0.500)),
        ]
    return targets


def _channel_asked(text: str | None) -> str | None:
    """The channel whose question a request's last message carries."""
    if text is None or QUESTION not in text:
        return None
    return text.rsplit(QUESTION, 1)[1].split()[0]


# --- the run -------------------------------------------------------------------------------------


async def _poll(check: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
    """Call `check` (a coroutine function) until `done` holds for its result."""
    while True:
        result = await check()
        if done(result):
            return result
        await asyncio.sleep(POLL_INTERVAL)


async def _run(people: int, ask: bool, seconds: float) -> Json:
    api_args = (
        "--text-length",
        str(TEXT_LENGTH),
        "--chunk-size",
        str(CHUNK_SIZE),
        "--chunks-per-second",
        str(CHUNKS_PER_SECOND),
        "--first-byte-delay",
        str(FIRST_BYTE_DELAY),
    )
    discord_args = (
        "--channels",
        str(people),
        "--users",
        str(people),
        "--set",
        f"global_limit={BOT_WRITES_PER_SECOND}",
        "--set",
        "global_window=1.0",
        "--set",
        f"channel_message_limit={CHANNEL_WRITES}",
        "--set",
        f"channel_message_window={CHANNEL_WRITES_PERIOD}",
    )
    async with (
        asyncio.timeout(seconds),
        running_fakes(api_args, discord_args) as fakes,
        contextlib.AsyncExitStack() as stack,
    ):
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        await stack.enter_async_context(
            running_bot(fakes, Path(folder) / "bench.db", max_concurrent_requests=max(people, 16))
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        return await _measure(
            session,
            people,
            ask,
            fakes.api_url,
            fakes.control,
            fakes.channels(people),
            fakes.people(people),
        )


async def _measure(
    session: aiohttp.ClientSession,
    n: int,
    ask: bool,
    api_url: str,
    control: str,
    channel_ids: list[str],
    users: list[str],
) -> Json:
    await post_json(session, f"{control}/reset", {})  # forget the start-up requests
    await post_json(session, f"{api_url}/_fake/reset", {})
    cpu_before = time.process_time()

    async def send(channel_id: str, user_id: str) -> float:
        question = f"{QUESTION}{channel_id}"
        body: Json
        if ask:
            body = {"name": "ask", "options": {"prompt": question}, "user_id": user_id}
            route = "commands"
        else:
            body = {"author_id": user_id, "content": question, "mention_bot": True}
            route = "messages"
        body["channel_id"] = channel_id
        return float((await post_json(session, f"{control}/{route}", body))["created"])

    sent = await asyncio.gather(*(send(c, u) for c, u in zip(channel_ids, users, strict=True)))
    expected = make_text(TEXT_LENGTH)

    def streams_done(result: Json) -> bool:
        streams = result["streams"]
        return len(streams) >= n and all(s["completed"] for s in streams)

    # Bounded waits: an answer that never comes is reported as incomplete, not waited for.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STREAMS_TIMEOUT):
            await _poll(lambda: get_json(session, f"{api_url}/_fake/streams"), streams_done)
    streams: list[Json] = (await get_json(session, f"{api_url}/_fake/streams"))["streams"]

    def answers_of(state: Json) -> dict[str, list[Json]]:
        by_channel: dict[str, list[Json]] = {c: [] for c in channel_ids}
        for message in state["messages"]:
            if message["author_bot"] and message["channel_id"] in by_channel:
                by_channel[message["channel_id"]].append(message)
        return by_channel

    # Asks only for the messages changed since the last look, so that looking costs the fake
    # and this process (the bot's) little, however many answers there are.
    latest: dict[str, Json] = {}
    since: float | None = None

    async def all_complete() -> bool:
        nonlocal since
        query = "" if since is None else f"?since={since!r}"
        state: Json = await get_json(session, f"{control}/state{query}")
        since = float(state["now"])
        latest.update((message["id"], message) for message in state["messages"])
        answers = answers_of({"messages": sorted(latest.values(), key=lambda m: int(m["id"]))})
        return all(_read_answer(c, answers[c], expected).complete for c in channel_ids)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(COMPLETE_TIMEOUT + COMPLETE_TIMEOUT_PER_PERSON * n):
            await _poll(all_complete, bool)
    answered_cpu = time.process_time() - cpu_before
    await asyncio.sleep(SETTLE)
    state: Json = await get_json(session, f"{control}/state")
    requests: list[Json] = await get_json(session, f"{control}/requests")

    messages = answers_of(state)
    answers = [_read_answer(c, messages[c], expected) for c in channel_ids]
    # Each stream is matched with its answer by the question it was asked.
    chat_streams = [s for s in streams if s["first_chunk_at"] is not None]
    stream_of = {_channel_asked(s.get("last_message")): s for s in chat_streams}
    for answer in answers:
        stream = stream_of.get(answer.channel_id)
        if stream is not None and answer.first_visible is not None:
            answer.first_token = float(stream["first_chunk_at"])
            answer.last_token = float(stream["last_chunk_at"])
            _add_text_ages(answer, messages[answer.channel_id])

    writes = [r for r in requests if r["route"] in WRITE_ROUTES]
    first_delays = [
        a.first_visible - a.first_token
        for a in answers
        if a.first_visible is not None and a.first_token is not None
    ]
    complete_delays = [
        a.complete - a.last_token
        for a in answers
        if a.complete is not None and a.last_token is not None
    ]
    interactions: list[Json] = state["interactions"]
    acks = [float(i["ack_latency"]) for i in interactions if i["ack_latency"] is not None]
    return {
        "mode": "ask" if ask else "mentions",
        "people": n,
        "questions_sent_within_s": max(sent) - min(sent),
        "api_streams": len(streams),
        "complete_answers": sum(1 for a in answers if a.complete is not None),
        # How long the bot took to ask the API, and the API to stream (its own pace: 6.6 s).
        "asked_api_s": _spread([float(s["received_at"]) - min(sent) for s in streams]),
        "stream_s": _spread(
            [float(s["last_chunk_at"]) - float(s["first_chunk_at"]) for s in chat_streams]
        ),
        "first_visible_s": _spread(first_delays),
        "complete_s": _spread(complete_delays),
        "gap_s": _spread([gap for a in answers for gap in a.longest_gaps]),
        "text_age_s": _spread([age for a in answers for age in a.text_ages]),
        "shrinking_updates": sum(a.shrinking_updates for a in answers),
        "discord_writes": len(writes),
        "discord_writes_per_answer": len(writes) / n,
        "discord_requests": len(requests),
        "requests_by_route": state["requests_by_route"],
        "rate_limited_429": int(state["rate_limited"]),
        "rate_limited_by": dict(
            Counter(f"{r['route']} ({r['scope']})" for r in requests if r["rate_limited"])
        ),
        "interaction_ack_s": max(acks) if acks else None,
        "cpu_s_answering": answered_cpu,
        "wall_s_to_last_complete": max(
            (a.complete for a in answers if a.complete is not None), default=math.nan
        )
        - min(sent),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --- output --------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _report(figures: Json, targets: list[Target]) -> str:
    verdict = {t.label: ("PASS" if t.passed else "FAIL", t.text) for t in targets}
    rows: list[tuple[str, str]] = []

    def spread_rows(label: str, spread: Json, keys: Sequence[str]) -> None:
        values = ", ".join(f"{key} {_ms(spread[key])}" for key in keys)
        rows.append((label, f"{values} (n={spread['n']})"))

    n = figures["people"]
    rows.append(("answers complete", f"{figures['complete_answers']} of {n}"))
    by = ", ".join(f"{count} {what}" for what, count in figures["rate_limited_by"].items())
    rows.append(("429s", f"{figures['rate_limited_429']}{f' ({by})' if by else ''}"))
    spread_rows("API asked after", figures["asked_api_s"], ("p50", "p95", "max"))
    spread_rows("API streams lasted", figures["stream_s"], ("p50", "p95", "max"))
    spread_rows("first visible", figures["first_visible_s"], ("p50", "p95", "max"))
    spread_rows("complete", figures["complete_s"], ("p50", "p95", "max"))
    spread_rows("gap between updates", figures["gap_s"], ("p50", "p95", "max"))
    writes = f"{figures['discord_writes']} ({figures['discord_writes_per_answer']:.1f} per answer)"
    rows.append(("writes to Discord", writes))
    rows.append(
        (
            "age of shown text (est.)",
            ", ".join(f"{key} {_ms(figures['text_age_s'][key])}" for key in ("p50", "p95", "max")),
        )
    )
    rows.append(("updates that shrank text", str(figures["shrinking_updates"])))
    rows.append(("questions sent within", _ms(figures["questions_sent_within_s"])))
    if figures["interaction_ack_s"] is not None:
        rows.append(("interaction ack (max)", _ms(figures["interaction_ack_s"])))
    rows.append(
        (
            "CPU, bot process",
            f"{figures['cpu_s_answering']:.2f} s answering, "
            f"{figures['cpu_s_total']:.2f} s whole run",
        )
    )
    last = figures["wall_s_to_last_complete"]
    rows.append(("first asked to last done", f"{last:.2f} s"))
    rows.append(("peak memory, bot process", f"{figures['peak_rss_mb']:.0f} MB"))

    mode = "/ask" if figures["mode"] == "ask" else "mentions"
    lines = [
        f"{n} concurrent {mode}, {TEXT_LENGTH} chars at "
        f"{CHUNK_SIZE * CHUNKS_PER_SECOND:.0f} chars/s after {_ms(FIRST_BYTE_DELAY)}"
    ]
    lines.append(f"{'figure':<26} {'value':<48} {'target':<24} result")
    for label, value in rows:
        result, target = verdict.get(label, ("", ""))
        lines.append(f"{label:<26} {value:<48} {target:<24} {result}".rstrip())
    passed = all(t.passed for t in targets)
    lines.append(f"overall: {'PASS' if passed else 'FAIL'}")
    return "\n".join(lines)


def _row(people: int, figures: Json | None) -> str:
    """One line of the table that several N give."""
    if figures is None:
        return f"{people:>6}  no figures: the run did not finish (its error is above)"
    targets = _targets(figures, figures["mode"] == "ask")
    gap, complete = figures["gap_s"]["p95"], figures["complete_s"]["p50"]
    complete_target = "< 0.50" if people <= PROMPT_PEOPLE else "-"
    cells = [
        f"{people:>6}",
        f"{figures['complete_answers']:>4}/{people:<4}",
        f"{figures['rate_limited_429']:>4}",
        f"{'-' if gap is None else f'{gap:.2f}':>7} <= {gap_target(people):<5.2f}",
        f"{'-' if complete is None else f'{complete:.2f}':>7} {complete_target:<6}",
        f"{figures['cpu_s_answering']:>6.1f} {figures['cpu_s_total']:>6.1f}",
        f"{figures['peak_rss_mb']:>6.0f}",
        "PASS" if all(t.passed for t in targets) else "FAIL",
    ]
    return "  ".join(cells)


TABLE_HEADER = (
    "people  complete   429s  gap p95 s (target)  done p50 s      CPU s (all)  RSS MB  result\n"
    "                                             after last token"
)


def _run_each(people: list[int], ask: bool, timeout: float | None) -> int:
    """Runs each N in a fresh process, so that its peak memory and CPU are that N's alone."""
    print(TABLE_HEADER, flush=True)
    passed = True
    for n in people:
        command = [sys.executable, "-m", "bench.chat", "--people", str(n), "--json"]
        command += ["--ask"] if ask else []
        command += [] if timeout is None else ["--timeout", str(timeout)]
        child = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
        print(_row(n, _figures_of(child)), flush=True)
        passed = passed and child.returncode == 0
    return 0 if passed else 1


def _figures_of(child: subprocess.CompletedProcess[str]) -> Json | None:
    """The figures a run printed; None if it printed none (it timed out, or crashed: exit
    code 1 like a failed target, with its traceback on stderr)."""
    if child.returncode not in (0, 1):
        return None
    try:
        figures: Json = json.loads(child.stdout)
    except json.JSONDecodeError:
        return None
    return figures


def _people(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("one or more positive counts, such as 20,50,100,200")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chat",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--people", type=_people, help="people asking at once: N, or N,N,... for a table"
    )
    parser.add_argument("--ask", action="store_true", help="/ask commands instead of mentions")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--timeout", type=float, help="seconds for the whole run (default 60, plus 0.2 a person)"
    )
    args = parser.parse_args(argv)
    people: list[int] = args.people or [1 if args.ask else 50]
    if len(people) > 1:
        if args.json:
            parser.error("--json takes one N")
        return _run_each(people, args.ask, args.timeout)
    n = people[0]
    timeout: float = args.timeout or 60.0 + 0.2 * n
    try:
        figures = asyncio.run(_run(n, args.ask, timeout))
    except TimeoutError:
        print(f"the run did not finish within {timeout:g} s", file=sys.stderr)
        return 2
    figures["cpu_s_total"] = time.process_time()
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    targets = _targets(figures, args.ask)
    if args.json:
        figures["targets"] = [t.__dict__ for t in targets]
        print(json.dumps(figures, indent=2))
    else:
        print(_report(figures, targets))
    return 0 if all(t.passed for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
