"""Long-term memory: finished turns are embedded in the background; before an answer, the older
turns most like the question are recalled into the request; /recall and /forget search them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.admission import Admission, Admitted, Request, RequestKind
from bot.ai import BadRequest, EmbeddingResult
from bot.conversation.context import recall_note, spoken_text
from bot.conversation.tokens import estimate_tokens
from bot.db.models import UsageKind
from bot.db.repository import ConversationStore, StoredTurn
from bot.db.usage_store import UsageStore
from bot.db.vector_store import PAGE, NewVector, Unembedded, VectorStore
from bot.errors import UserError
from bot.memory._cache import VectorCache
from bot.places import Place
from bot.server_config import Memory as MemorySetting
from bot.server_config import ServerConfig

log = logging.getLogger(__name__)

MEMORY_OFF = (
    "Memory is off here, so there is nothing to search; /reset forgets the whole conversation."
)
NOTHING_ALIKE = "Nothing in this conversation's history is like that."
# Cosine similarity a turn must pass to be recalled or offered (text-embedding-3 puts related
# texts around 0.3-0.7, unrelated ones below 0.2).
MIN_SIMILARITY = 0.3
RECALLED_TURNS = 4
RECALL_FLOOR = 200  # tokens the recall budget has at least
FOUND_TURNS = 5  # by /recall
FORGET_MATCHES = 3  # by /forget, each with the other half of its exchange
# What one input may hold: OpenAI's limit is 8192 tokens, and a token is at least one byte.
_MAX_INPUT_BYTES = 8000
# What one request may hold in all (OpenAI refuses over 300,000 tokens), counted the same way.
_MAX_BATCH_BYTES = 250_000


class EmbeddingApi(Protocol):
    async def embed(
        self, inputs: str | Sequence[str], *, model: str, dimensions: int | None = None
    ) -> EmbeddingResult: ...


@dataclass(frozen=True)
class MemoryOptions:
    model: str
    dimensions: int
    # Conversations' matrices held in memory where the database cannot search vectors.
    cache_bytes: int = 256 * 2**20
    batch_size: int = 64  # texts in one embeddings request
    batch_delay: float = 0.5  # seconds a new turn waits for others to share its request
    recall_timeout: float = 2.0  # an answer waits this long at most for its question's vector
    retry_after: float = 5.0  # after a failure, doubled with each one, up to ten minutes


@dataclass(frozen=True)
class Found:
    turn: StoredTurn
    similarity: float


class Memory:
    def __init__(
        self,
        api: EmbeddingApi,
        admission: Admission,
        vectors: VectorStore,
        conversations: ConversationStore,
        usage: UsageStore,
        options: MemoryOptions,
        owns: Callable[[int | None], bool] = lambda _guild_id: True,
    ) -> None:
        self._api = api
        self._admission = admission
        self._vectors = vectors
        self._conversations = conversations
        self._usage = usage
        self.options = options
        self._owns = owns
        self._cache = VectorCache(options.dimensions, options.cache_bytes)
        # Conversations with new turns to embed: from which turn on.
        self._queued: dict[int, int] = {}
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()  # set whenever nothing is left to embed (tests wait on it)
        self.embedded = 0  # turns this process embedded
        # Turns the API refused to embed, left out until a restart; and whether it embedded
        # anything yet (until then a refusal may be of the model, not of a turn).
        self._refused: set[int] = set()
        self._api_works = False
        conversations.watchers.append(self)

    @property
    def _config(self) -> ServerConfig:
        return self._admission.config

    # Embedding, in the background.

    def remember(self, conversation_id: int, *, after: int) -> None:
        """Embed the conversation's finished turns newer than turn `after`, soon."""
        self._queued[conversation_id] = min(after, self._queued.get(conversation_id, after))
        self.idle.clear()
        self._wake.set()

    def answer_replaced(self, conversation_id: int, turn_id: int) -> None:
        """An answer's text was replaced (another alternative kept): its vector went with the
        old text, and the new one is embedded."""
        self._cache.remove(conversation_id, [turn_id])
        self.remember(conversation_id, after=turn_id - 1)

    def conversation_reset(self, conversation_id: int) -> None:
        """The conversation was reset: its vectors went with its turns."""
        self._cache.drop(conversation_id)

    def turns_deleted(self, conversation_id: int, turn_ids: Sequence[int]) -> None:
        """Turns were deleted (Regenerate, /forget, HISTORY_RETENTION_DAYS): their vectors
        went with them."""
        self._cache.remove(conversation_id, turn_ids)

    async def run(self) -> None:
        """The one worker of this process: embeds what `remember` queued, in batches, and first
        sweeps every turn left without a vector (by a restart, or a failure)."""
        sweep: int | None = 0  # the sweep's place; None: no sweep is due
        failures = 0
        while True:
            if not self._queued and sweep is None:
                self.idle.set()
                await self._wake.wait()
                await asyncio.sleep(self.options.batch_delay)  # others may come along
                self._wake.clear()
                # What woke it may have joined the batch before: then there is nothing to do.
                continue
            self._wake.clear()
            try:
                if self._queued:
                    turns = await self._take_queued()
                else:
                    assert sweep is not None  # else it waited above
                    turns = await self._vectors.unembedded(after=sweep)
                    sweep = turns[-1].turn_id if turns else None
                await self._embed(turns)
                failures = 0
            except Exception as exc:
                failures += 1
                pause = min(600.0, self.options.retry_after * 2 ** (failures - 1))
                # No text: what people wrote stays out of the logs.
                log.warning("Embedding turns failed (%s); trying again in %gs", _named(exc), pause)
                sweep = 0  # finds what failed, and anything queued meanwhile
                await asyncio.sleep(pause)

    async def _take_queued(self) -> list[Unembedded]:
        """The new turns of the conversations queued first, a batch's worth or all."""
        turns: list[Unembedded] = []
        while self._queued and len(turns) < self.options.batch_size:
            conversation_id = next(iter(self._queued))
            after = self._queued.pop(conversation_id)
            page = await self._vectors.unembedded(after=after, conversation_id=conversation_id)
            if len(page) == PAGE:  # more after these, for the next batch
                self.remember(conversation_id, after=page[-1].turn_id)
            turns += page
        return turns

    async def _embed(self, turns: Sequence[Unembedded]) -> None:
        # A batch's turns are mostly of a few places: each place's settings are read once.
        memory_on: dict[tuple[int, int | None], bool] = {}
        kept: list[Unembedded] = []
        for turn in turns:
            if turn.turn_id in self._refused:
                continue
            where = (turn.channel_id, turn.guild_id)
            if where not in memory_on:
                memory_on[where] = await self._memory_on(turn)
            if memory_on[where]:
                kept.append(turn)
        inputs = [(t, _input_text(spoken_text(t.content, t.author_name))) for t in kept]
        for batch in _batches(inputs, self.options.batch_size):
            await self._embed_batch(batch, whole=True)

    async def _embed_batch(
        self, batch: Sequence[tuple[Unembedded, str]], *, whole: bool = False
    ) -> int:
        """Embed a batch (`whole`: as made, not a half of one refused); returns how many of
        its turns were embedded."""
        turns = [turn for turn, _ in batch]
        texts = [text for _, text in batch]
        try:
            result = await self._embeddings(texts)
        except BadRequest as exc:
            if len(batch) > 1:
                # One turn may be refused: the halves find it, and the rest go on. If none
                # of them can be embedded, the fault is not the turns' (the model, say): it
                # is tried again later, as failures are.
                embedded = await self._embed_halves(batch)
                if embedded == 0 and whole:
                    self._refused.difference_update(turn.turn_id for turn in turns)
                    raise
                return embedded
            if self._api_works:
                self._refused.add(turns[0].turn_id)
                log.warning("Turn %d cannot be embedded (%s)", turns[0].turn_id, _named(exc))
            else:
                raise  # maybe the model or its settings: tried again later, as failures are
            return 0
        self._api_works = True
        # Paid for: recorded before anything else can fail, or a shutdown come.
        await self._record_batch(turns, texts, result.tokens)
        vectors = [
            NewVector(t.turn_id, t.conversation_id, vector, t.content)
            for t, vector in zip(turns, result.vectors, strict=True)
        ]
        stored = set(await self._vectors.add(vectors))  # not those of turns deleted meanwhile
        self.embedded += len(stored)
        for vector in vectors:
            if vector.turn_id in stored:
                self._cache.extend(vector.conversation_id, [(vector.turn_id, vector.vector)])
        return len(batch)

    async def _embed_halves(self, batch: Sequence[tuple[Unembedded, str]]) -> int:
        """Embed each half of a refused batch; returns how many turns were embedded."""
        half = len(batch) // 2
        embedded = 0
        for part in (batch[:half], batch[half:]):
            with contextlib.suppress(BadRequest):  # a half wholly refused: nothing of it
                embedded += await self._embed_batch(part)
        return embedded

    async def _memory_on(self, turn: Unembedded) -> bool:
        if not self._owns(turn.guild_id):
            return False
        place = Place(turn.channel_id, turn.guild_id, turn.kind, parent_id=turn.parent_id)
        settings = await self._config.for_place(place)
        return settings.memory is MemorySetting.ON

    async def _record_batch(
        self, batch: Sequence[Unembedded], texts: Sequence[str], tokens: int
    ) -> None:
        """A batch's tokens, shared out by length to the people who asked, where they asked."""
        weights = [estimate_tokens(text) for text in texts]
        weighed = sum(weights)
        shares: dict[tuple[int | None, int, int], int] = {}
        given = 0
        for number, (turn, weight) in enumerate(zip(batch, weights, strict=True)):
            last = number == len(batch) - 1
            share = tokens - given if last else tokens * weight // weighed
            given += share
            if turn.asker_id:  # an answer with no question before it is nobody's
                key = (turn.guild_id, turn.channel_id, turn.asker_id)
                shares[key] = shares.get(key, 0) + share
        for (guild_id, channel_id, user_id), share in shares.items():
            await self._record(user_id, guild_id, channel_id, share)

    async def _record(
        self, user_id: int, guild_id: int | None, channel_id: int, tokens: int
    ) -> None:
        await self._usage.record(
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            kind=UsageKind.EMBEDDING,
            model=self.options.model,
            prompt_tokens=tokens,
            at=self._admission.now(),
        )

    async def _embeddings(self, texts: Sequence[str]) -> _Embedded:
        import numpy as np

        result = await self._api.embed(
            list(texts), model=self.options.model, dimensions=self.options.dimensions
        )
        if len(result.vectors) != len(texts) or any(
            len(v) != self.options.dimensions for v in result.vectors
        ):
            raise ValueError("the embeddings reply does not match what was asked")
        matrix = np.asarray(result.vectors, dtype="<f4")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix /= np.where(norms == 0, 1, norms)
        tokens = result.usage.prompt_tokens if result.usage else sum(map(estimate_tokens, texts))
        return _Embedded([row.tobytes() for row in matrix], tokens)

    # Recalling before an answer.

    async def recall(
        self,
        conversation_id: int,
        question: str,
        history: Sequence[StoredTurn],
        *,
        budget: int,
        before: int | None,
        place: Place,
        author_id: int,
    ) -> tuple[list[StoredTurn], list[StoredTurn]]:
        """The older turns most like `question` that the history (`history`, the newest that
        fit `budget`, older than turn `before`) leaves out, and the history left beside them.
        They share the budget: the recalled ones take a fifth, at least RECALL_FLOOR."""
        recall_budget = min(budget, max(RECALL_FLOOR, budget // 5))
        window = _newest_within(history, budget - recall_budget)
        start = window[0].id if window else before
        if start is None and history:
            start = history[-1].id + 1
        try:
            if start is None or not await self._vectors.any_before(conversation_id, start):
                return [], list(history)
            async with asyncio.timeout(self.options.recall_timeout):
                embedded = await self._embeddings([_input_text(question)])
            await self._record(author_id, place.guild_id, place.channel_id, embedded.tokens)
            found = await self.nearest(
                conversation_id, embedded.vectors[0], before=start, limit=RECALLED_TURNS
            )
        except Exception as exc:
            # Recall helps an answer; it must never fail one.
            log.warning(
                "Answering in conversation %d without recall (%s)", conversation_id, _named(exc)
            )
            return [], list(history)
        chosen: list[StoredTurn] = []
        for match in found:
            trying = sorted([*chosen, match.turn], key=lambda turn: turn.id)
            if estimate_tokens(recall_note(trying)) <= recall_budget:
                chosen = trying
        if not chosen:
            return [], list(history)
        spent = estimate_tokens(recall_note(chosen))
        picked = {turn.id for turn in chosen}
        kept = [turn for turn in _newest_within(history, budget - spent) if turn.id not in picked]
        return chosen, kept

    async def nearest(
        self, conversation_id: int, vector: bytes, *, before: int | None, limit: int
    ) -> list[Found]:
        """The turns most like `vector`, above MIN_SIMILARITY, most alike first."""
        # More than asked for: some may be of turns deleted meanwhile (by another process).
        wanted = limit * 2 + 8
        if self._vectors.pgvector:
            matches = await self._vectors.nearest(
                conversation_id, vector, before=before, limit=wanted
            )
        else:
            matrix = self._cache.get(conversation_id)
            if matrix is None:
                matrix = self._cache.put(
                    conversation_id, await self._vectors.of_conversation(conversation_id)
                )
            elif await self._vectors.newest(conversation_id) > matrix.newest:
                # What other processes embedded meanwhile.
                newer = await self._vectors.of_conversation(conversation_id, after=matrix.newest)
                self._cache.extend(conversation_id, newer, read=True)
            matches = matrix.nearest(vector, before=before, limit=wanted)
        similar = {turn_id: s for turn_id, s in matches if s >= MIN_SIMILARITY}
        turns = [
            turn
            for turn in await self._conversations.get_turns(list(similar))
            if turn.conversation_id == conversation_id
        ]
        gone = set(similar) - {turn.id for turn in turns}
        if gone:  # deleted by another process: held no longer
            self._cache.remove(conversation_id, list(gone))
        found = sorted(
            (Found(turn, similar[turn.id]) for turn in turns), key=lambda f: -f.similarity
        )
        return found[:limit]

    # /recall and /forget.

    async def search(self, request: Request, text: str) -> tuple[Admitted, list[Found]]:
        """The five turns of the conversation where `request` is made most like `text`."""
        admitted, conversation_id = await self._searchable(request)
        embedded = await self._embeddings([_input_text(text)])
        place = admitted.request.place
        await self._record(request.author_id, place.guild_id, place.channel_id, embedded.tokens)
        found = await self.nearest(
            conversation_id, embedded.vectors[0], before=None, limit=FOUND_TURNS
        )
        if not found:
            raise UserError(NOTHING_ALIKE)
        return admitted, found

    async def to_forget(self, request: Request, text: str, *, moderator: bool) -> list[StoredTurn]:
        """The turns most like `text` that the person may make the bot forget: their questions
        with the answers to them (a `moderator`: anyone's), oldest first."""
        _, found = await self.search(request, text)
        chosen: dict[int, StoredTurn] = {}
        for match in found[:FORGET_MATCHES]:
            exchange = await self._conversations.exchange_of(match.turn)
            if moderator or _asked_by(exchange, request.author_id):
                chosen.update((turn.id, turn) for turn in exchange)
        if not chosen:
            raise UserError(
                "What is like that here was said by others; only someone who can manage "
                "messages can make me forget it."
            )
        return sorted(chosen.values(), key=lambda turn: turn.id)

    async def forget(self, request: Request, turn_ids: Sequence[int], *, moderator: bool) -> int:
        """Delete the turns offered by `to_forget` (checked again: time has passed); returns
        how many were deleted."""
        _, conversation_id = await self._searchable(request)
        turns = [
            t
            for t in await self._conversations.get_turns(turn_ids)
            if t.conversation_id == conversation_id
        ]
        if not moderator:
            exchanges = [await self._conversations.exchange_of(turn) for turn in turns]
            turns = [
                turn
                for turn, exchange in zip(turns, exchanges, strict=True)
                if _asked_by(exchange, request.author_id)
            ]
        await self._conversations.delete_turns([turn.id for turn in turns])
        log.info(
            "Forgot %d turns of conversation %d at the request of %d",
            len(turns),
            conversation_id,
            request.author_id,
        )
        return len(turns)

    async def _searchable(self, request: Request) -> tuple[Admitted, int]:
        admitted = await self._admission.admit(request)
        # /forget still finds what was embedded while memory was on: it deletes what was shared.
        if admitted.settings.memory is MemorySetting.OFF and request.kind is RequestKind.RECALL:
            raise UserError(MEMORY_OFF)
        place = admitted.place
        conversation = await self._conversations.find(place.channel_id, place.owner_id)
        if conversation is None:
            raise UserError(NOTHING_ALIKE)
        return admitted, conversation.id


@dataclass(frozen=True)
class _Embedded:
    vectors: list[bytes]  # float32, unit length
    tokens: int


def _asked_by(exchange: Sequence[StoredTurn], person: int) -> bool:
    return exchange[0].role == "user" and exchange[0].author_id == person


def _newest_within(history: Sequence[StoredTurn], budget: int) -> list[StoredTurn]:
    """The newest turns of `history` that fit `budget`, whole."""
    kept: list[StoredTurn] = []
    spent = 0
    for turn in reversed(history):
        if spent + turn.token_estimate > budget:
            break
        spent += turn.token_estimate
        kept.append(turn)
    return kept[::-1]


def _input_text(text: str) -> str:
    """`text` cut to what one embeddings input may hold."""
    encoded = text.encode()
    if len(encoded) <= _MAX_INPUT_BYTES:
        return text
    return encoded[:_MAX_INPUT_BYTES].decode(errors="ignore")  # whole characters


def _batches(
    inputs: Sequence[tuple[Unembedded, str]], size: int
) -> list[list[tuple[Unembedded, str]]]:
    """Turns with their texts, in requests of at most `size` inputs and _MAX_BATCH_BYTES."""
    batches: list[list[tuple[Unembedded, str]]] = []
    spent = 0
    for turn, text in inputs:
        cost = len(text.encode())
        if not batches or len(batches[-1]) >= size or spent + cost > _MAX_BATCH_BYTES:
            batches.append([])
            spent = 0
        batches[-1].append((turn, text))
        spent += cost
    return batches


def _named(exc: BaseException) -> str:
    """An error as the log may show it: its kind, and its message only for API errors (which
    carry no text of ours)."""
    from bot.ai import ApiError

    return f"{type(exc).__name__}: {exc}" if isinstance(exc, ApiError) else type(exc).__name__
