"""What the bot counts and times, for Prometheus: one registry for the whole process.

Each metric is recorded where its event happens, through the objects and functions below; the
monitoring server (bot.monitoring) adds the gauges it reads from the running bot at scrape time.
"""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from bot.ai.errors import KNOWN_CODES

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

ANSWERS = Counter(
    "bot_answers",
    "Questions by how their answer ended: complete, stopped, failed, interrupted, or refused "
    "before any paid call.",
    ["outcome"],
    registry=REGISTRY,
)
API_FIRST_TOKEN = Histogram(
    "bot_api_first_token_seconds",
    "From sending a streamed request to the API until its first token (retries included).",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)
FIRST_TEXT = Histogram(
    "bot_first_text_seconds",
    "From a question reaching the answer service until the first words of its answer show in "
    "Discord.",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)
ANSWER = Histogram(
    "bot_answer_seconds",
    "From a question reaching the answer service until its answer is finished in Discord.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
DISCORD_RATE_LIMITS = Counter(
    "bot_discord_rate_limits",
    "Discord's 429 replies, by X-RateLimit-Scope (user, global, shared; unknown without one).",
    ["scope"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "bot_api_errors",
    "Failed API calls (after retries), by the API's error code if the bot knows it, else the "
    "HTTP status (http_502), else the kind of failure (ApiTimeout, ServiceUnavailable).",
    ["code"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "bot_tokens",
    "Tokens the API reported (or the bot estimated for answers cut short), by model and kind "
    "(prompt or completion).",
    ["model", "kind"],
    registry=REGISTRY,
)
IMAGES = Counter(
    "bot_images",
    "Images the API made, by model.",
    ["model"],
    registry=REGISTRY,
)
DATABASE_CALLS = Histogram(
    "bot_database_call_seconds",
    "How long each database statement took.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)

_SCOPES = frozenset({"user", "global", "shared"})


def count_api_error(code: str | None, status: int | None, kind: str) -> None:
    """One failed API call: its error code, else its HTTP status, else `kind` (what failed
    without a reply, e.g. ApiTimeout or ServiceUnavailable for a dropped connection). Only the
    codes the bot knows become labels: the upstream may send any string, and each would be a
    series of its own."""
    code = (code or "").strip().lower()
    if code in KNOWN_CODES:
        label = code
    elif status is not None and 100 <= status <= 599:
        label = f"http_{status}"
    else:
        label = kind
    API_ERRORS.labels(code=label).inc()


def count_usage(model: str, *, prompt_tokens: int, completion_tokens: int, images: int) -> None:
    if prompt_tokens:
        TOKENS.labels(model=model, kind="prompt").inc(prompt_tokens)
    if completion_tokens:
        TOKENS.labels(model=model, kind="completion").inc(completion_tokens)
    if images:
        IMAGES.labels(model=model).inc(images)


def discord_trace() -> aiohttp.TraceConfig:
    """For discord.py's `http_trace`: counts Discord's 429s by their scope."""
    trace = aiohttp.TraceConfig()

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        if params.response.status == 429:
            scope = params.response.headers.get("X-RateLimit-Scope", "").lower()
            DISCORD_RATE_LIMITS.labels(scope=scope if scope in _SCOPES else "unknown").inc()

    trace.on_request_end.append(on_request_end)
    return trace
