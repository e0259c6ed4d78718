"""Long-term memory through its ports: the chat service with a scripted chat stream, the real
API client against the fake API's embeddings, and a real database (each kind, and on
PostgreSQL both searches: pgvector's where it is installed, and the bot's own)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.admission import Person, Request, RequestKind
from bot.ai import NO_RETRY, ApiClient, BadRequest, EmbeddingResult
from bot.db.config_store import BudgetRule
from bot.db.models import BudgetScope, ConversationKind, Period, UsageKind
from bot.db.repository import ConversationStore, NewTurn
from bot.db.usage_store import UsageStore
from bot.db.vector_store import VectorStore
from bot.errors import UserError
from bot.memory import MEMORY_OFF, Memory, MemoryOptions
from bot.memory._memory import EmbeddingApi
from bot.places import Place
from bot.server_config import Scope, Setting
from tests.fakes.api import Fail, FakeApi, Hang
from tests.helpers import WAIT, ChatRig, MemorySink, admission_on, chat_rig

CHANNEL = Place(10, 1, ConversationKind.CHANNEL)
FACT = "person1: the secret code for the vault is purple elephant"
QUESTION = "what was the secret code for the vault?"

pytestmark = pytest.mark.timeout(30)


@dataclass
class Rig:
    chat: ChatRig
    memory: Memory
    api: FakeApi
    sessions: async_sessionmaker[AsyncSession]

    async def embedded(self) -> None:
        """Wait until the worker has nothing left to embed."""
        await asyncio.sleep(0)  # let a `remember` just made reach the worker
        async with asyncio.timeout(10):
            await self.memory.idle.wait()

    def another_process(self) -> Memory:
        """Memory as another process on the same database has it: its cache its own."""
        return Memory(
            self.memory._api,
            admission_on(self.sessions),
            self.memory._vectors,
            ConversationStore(self.sessions),
            UsageStore(self.sessions),
            self.memory.options,
        )

    async def vectors(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(text("SELECT count(*) FROM turn_vectors")) or 0)


@pytest.fixture(params=["database", "bot"])
async def rig(
    request: pytest.FixtureRequest, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Rig]:
    """`database`: pgvector searches, where PostgreSQL has it; `bot`: numpy in the bot."""
    async with FakeApi.running() as api, aiohttp.ClientSession() as session:
        vectors = VectorStore(sessions, model="text-embedding-3-small", dimensions=256)
        await vectors.prepare()
        if request.param == "database" and not vectors.pgvector:
            pytest.skip("this database does not search vectors itself")
        vectors.pgvector = request.param == "database"
        client = ApiClient(session, base_url=api.url, token=api.token, retry=NO_RETRY)
        admission = admission_on(sessions)
        conversations, usage = ConversationStore(sessions), UsageStore(sessions)
        options = MemoryOptions(
            "text-embedding-3-small", 256, batch_delay=0.01, retry_after=0.05, recall_timeout=0.5
        )
        memory = Memory(client, admission, vectors, conversations, usage, options)
        worker = asyncio.create_task(memory.run())
        # Its first sweep finds nothing: a test's turns are embedded as it queues them, not
        # as a sweep running meanwhile happens to find them.
        await asyncio.wait_for(memory.idle.wait(), WAIT)
        try:
            async with chat_rig(
                conversations, usage, admission, memory=memory, history_token_budget=400
            ) as chat:
                yield Rig(chat, memory, api, sessions)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


async def long_conversation(rig: Rig, turns: int = 300) -> int:
    """A conversation of `turns` turns whose third states FACT, queued for embedding as
    answers queue theirs; returns its id."""
    store = rig.chat.conversations
    conversation = await store.open(10, guild_id=1, kind=ConversationKind.CHANNEL)
    for n in range(1, turns + 1):
        if n % 2:
            said = FACT if n == 3 else f"person1: message {n} about the weather today"
            turn = NewTurn("user", said, 25, author_id=1, author_name="person1")
        else:
            turn = NewTurn("assistant", f"Noted {n}, sunny and mild.", 12)
        await store.append_turn(conversation.id, turn)
    rig.memory.remember(conversation.id, after=0)
    return conversation.id


async def answer(rig: Rig, question: str, number: int) -> list[tuple[str, str]]:
    """Ask `question`, answer it, and return the messages the model was sent (role, text)."""
    asking = rig.chat.ask(question, MemorySink())
    stream = await rig.chat.api.stream(number)
    stream.send("Answered.")
    stream.end()
    await asyncio.wait_for(asking, WAIT)
    return [(str(m["role"]), str(m["content"])) for m in stream.messages]


def recalled(sent: list[tuple[str, str]]) -> bool:
    return any(text_.startswith("Earlier in this conversation") for _, text_ in sent)


async def test_a_fact_from_turn_3_of_300_comes_back_into_the_request(rig: Rig) -> None:
    await long_conversation(rig)
    await rig.embedded()
    assert await rig.vectors() == 300
    embedding_requests = rig.api.requests_to("/embeddings")
    assert [len(r.json["input"]) for r in embedding_requests] == [64, 64, 64, 64, 44]

    sent = await answer(rig, QUESTION, 1)
    assert [role for role, _ in sent].count("system") == 1
    # People's old words come on their side of the conversation, never with the system's weight.
    role, note = sent[1]
    assert role == "user" and note.startswith("Earlier in this conversation")
    assert "person1: the secret code for the vault is purple elephant" in note
    assert not any(FACT in text_ for _, text_ in sent[2:])
    assert "message 299" in sent[-2][1] or "message 299" in sent[-3][1]

    # The question and its answer are embedded in turn; the question's vector is paid for.
    await rig.embedded()
    assert await rig.vectors() == 302
    async with rig.sessions() as session:
        kinds = await session.scalars(
            text("SELECT kind FROM usage_records WHERE kind = :kind"),
            {"kind": UsageKind.EMBEDDING.value},
        )
        assert len(kinds.all()) == 5 + 1 + 1  # the sweep's batches, the question, the new pair


async def test_memory_off_neither_recalls_nor_embeds(rig: Rig) -> None:
    await long_conversation(rig, 100)
    await rig.embedded()
    await rig.chat.config.change(CHANNEL, Setting.MEMORY, "off", Scope.CHANNEL, by=1)
    requests = len(rig.api.requests)

    assert not recalled(await answer(rig, QUESTION, 1))
    await rig.embedded()
    assert len(rig.api.requests) == requests  # not even the question was embedded
    assert await rig.vectors() == 100

    person = Person(1)
    with pytest.raises(UserError, match=MEMORY_OFF):
        await rig.memory.search(Request(RequestKind.RECALL, CHANNEL, person), "secret code")
    # What was shared while it was on can still be taken back.
    forget = Request(RequestKind.FORGET, CHANNEL, person)
    offered = await rig.memory.to_forget(forget, "secret code vault", moderator=False)
    assert FACT in [turn.content for turn in offered]


async def test_a_spent_budget_stops_recall_but_not_forget(rig: Rig) -> None:
    await long_conversation(rig, 20)
    await rig.embedded()  # paid for by person 1, beyond this cap
    cap = BudgetRule(BudgetScope.PERSON, Period.DAY, tokens=10, images=None)
    await rig.chat.config.set_budget(1, cap, by=9)
    with pytest.raises(UserError, match="tokens"):  # /recall embeds a question, paid
        await rig.memory.search(Request(RequestKind.RECALL, CHANNEL, Person(1)), QUESTION)

    forget = Request(RequestKind.FORGET, CHANNEL, Person(1))
    offered = await rig.memory.to_forget(forget, "secret code vault", moderator=False)
    ids = [turn.id for turn in offered]
    assert await rig.memory.forget(forget, ids, moderator=False) == len(ids) > 0


async def test_reset_removes_the_vectors(rig: Rig) -> None:
    await long_conversation(rig, 20)
    await rig.embedded()
    found = await rig.memory.search(Request(RequestKind.RECALL, CHANNEL, Person(1)), QUESTION)
    assert found[1][0].turn.content == FACT  # the conversation's matrix is now held

    request = Request(RequestKind.RESET, CHANNEL, Person(1))
    assert await rig.chat.service.reset(request, moderator=True) == (20, False)
    assert await rig.vectors() == 0
    with pytest.raises(UserError, match="Nothing in this conversation"):
        await rig.memory.search(Request(RequestKind.RECALL, CHANNEL, Person(1)), QUESTION)


async def test_forget_removes_a_persons_own_exchange(rig: Rig) -> None:
    conversation_id = await long_conversation(rig, 20)
    await rig.embedded()
    recall = Request(RequestKind.FORGET, CHANNEL, Person(2))
    with pytest.raises(UserError, match="said by others"):
        await rig.memory.to_forget(recall, "secret code vault purple elephant", moderator=False)

    own = Request(RequestKind.FORGET, CHANNEL, Person(1))
    offered = await rig.memory.to_forget(own, "secret code vault purple elephant", moderator=False)
    assert [turn.content for turn in offered][:2] == [FACT, "Noted 4, sunny and mild."]
    # Someone else pressing it (the button is the person's own) deletes nothing.
    ids = [turn.id for turn in offered]
    assert await rig.memory.forget(recall, ids, moderator=False) == 0
    assert await rig.memory.forget(own, ids, moderator=False) == len(ids)

    turns = await rig.chat.conversations.newest_turns(conversation_id, token_budget=10**6)
    assert FACT not in [turn.content for turn in turns]
    assert await rig.vectors() == 20 - len(ids)
    sent = await answer(rig, QUESTION, 1)
    assert not any("purple elephant" in text_ for _, text_ in sent)


async def test_a_failed_embedding_is_tried_again_and_logs_no_text(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.api.script_embeddings(Fail(500, "server_error"))
    with caplog.at_level(logging.WARNING, logger="bot.memory"):
        await long_conversation(rig, 4)
        await rig.embedded()
    assert await rig.vectors() == 4
    assert "Embedding turns failed" in caplog.text
    assert "purple" not in caplog.text


async def test_a_slow_question_embedding_answers_without_recall(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await long_conversation(rig, 100)
    await rig.embedded()
    rig.api.script_embeddings(Hang(5))
    with caplog.at_level(logging.WARNING, logger="bot.memory"):
        sent = await answer(rig, QUESTION, 1)
    assert not recalled(sent)
    assert "without recall" in caplog.text and "secret" not in caplog.text


async def test_new_turns_of_several_conversations_share_a_request(rig: Rig) -> None:
    store = rig.chat.conversations
    conversations = []
    for channel in (20, 21):
        conversation = await store.open(channel, guild_id=1, kind=ConversationKind.CHANNEL)
        for role, said in (("user", "person1: hello there"), ("assistant", "Hi.")):
            await store.append_turn(conversation.id, NewTurn(role, said, 5, author_id=1))
        conversations.append(conversation.id)
    # Both queued before the worker wakes: answers finishing within its batch delay.
    for conversation_id in conversations:
        rig.memory.remember(conversation_id, after=0)
    await rig.embedded()
    assert [len(r.json["input"]) for r in rig.api.requests_to("/embeddings")] == [4]


async def test_turns_queued_while_a_batch_is_read_are_embedded_without_a_failure(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A conversation queued while the worker reads its batch joins that batch: the worker,
    woken by it, then finds nothing left to do, and waits again."""
    store = rig.chat.conversations
    first, second = [
        (await store.open(channel, guild_id=1, kind=ConversationKind.CHANNEL)).id
        for channel in (30, 31)
    ]
    for conversation_id in (first, second):
        await store.append_turn(conversation_id, NewTurn("user", "person1: hi", 5, author_id=1))
    vectors = rig.memory._vectors
    unembedded = vectors.unembedded

    async def reading(**where: Any) -> Any:
        if where.get("conversation_id") == first:
            rig.memory.remember(second, after=0)  # comes while the batch is read
        return await unembedded(**where)

    vectors.unembedded = reading  # type: ignore[method-assign]
    rig.memory.remember(first, after=0)
    # Until the worker has taken the wake-up the second conversation gave it, and is idle
    # (no event tells that: it is the moment the worker goes back to waiting).
    async with asyncio.timeout(WAIT):
        while rig.memory._wake.is_set() or not rig.memory.idle.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await rig.vectors() == 2
    assert not [r for r in caplog.records if "Embedding turns failed" in r.getMessage()]


async def conversation_of(rig: Rig, *said: tuple[str, str]) -> int:
    """A conversation of turns (role, text), queued for embedding; returns its id."""
    store = rig.chat.conversations
    conversation = await store.open(10, guild_id=1, kind=ConversationKind.CHANNEL)
    for role, text_ in said:
        author = 1 if role == "user" else None
        name = "person1" if role == "user" else None
        turn = NewTurn(role, text_, 5, author_id=author, author_name=name)
        await store.append_turn(conversation.id, turn)
    rig.memory.remember(conversation.id, after=0)
    return conversation.id


async def test_an_answer_too_long_for_one_input_is_cut_and_blocks_nothing(rig: Rig) -> None:
    # One token a character to the API: under the bot's own estimate, over the API's limit.
    long_answer = "a," * 10_000
    hellos = [("user", f"person1: hello {n}") for n in range(10)]
    await conversation_of(rig, ("user", "person1: list them"), ("assistant", long_answer), *hellos)
    await rig.embedded()
    assert await rig.vectors() == 12
    sent = [text_ for r in rig.api.requests_to("/embeddings") for text_ in r.json["input"]]
    assert max(len(text_.encode()) for text_ in sent) == 8000


class Refusing:
    """The API client, refusing as the API does any request with an input it cannot embed."""

    def __init__(self, client: EmbeddingApi, refused: str) -> None:
        self.client, self.refused, self.requests = client, refused, 0

    async def embed(
        self, inputs: str | Sequence[str], *, model: str, dimensions: int | None = None
    ) -> EmbeddingResult:
        self.requests += 1
        if any(self.refused in text_ for text_ in inputs):
            raise BadRequest("'$.input' is invalid.", status=400)
        return await self.client.embed(inputs, model=model, dimensions=dimensions)


async def test_a_turn_the_api_refuses_is_left_out_and_the_rest_embedded(rig: Rig) -> None:
    refusing = Refusing(rig.memory._api, refused="unembeddable")
    rig.memory._api = refusing
    said = [("user", f"person1: hello {n}") for n in range(10)]
    said[3] = ("user", "person1: unembeddable")
    conversation_id = await conversation_of(rig, *said)
    await rig.embedded()
    assert await rig.vectors() == 9
    assert refusing.requests == 9  # halved until the one refused is alone, and no more
    # Later turns are embedded without it.
    await rig.chat.conversations.append_turn(
        conversation_id, NewTurn("assistant", "Hello to you.", 5)
    )
    rig.memory.remember(conversation_id, after=0)
    await rig.embedded()
    assert await rig.vectors() == 10
    assert refusing.requests == 9 + 1


class Deleting:
    """The API client, while whose first request a turn is deleted (Regenerate pressed)."""

    def __init__(self, client: EmbeddingApi, delete: Callable[[], Awaitable[None]]) -> None:
        self.client, self.delete = client, delete
        self.tokens = 0  # billed

    async def embed(
        self, inputs: str | Sequence[str], *, model: str, dimensions: int | None = None
    ) -> EmbeddingResult:
        delete, self.delete = self.delete, _nothing
        await delete()
        result = await self.client.embed(inputs, model=model, dimensions=dimensions)
        self.tokens += result.usage.prompt_tokens if result.usage else 0
        return result


async def _nothing() -> None:
    pass


async def test_a_turn_deleted_while_its_batch_is_embedded_leaves_the_rest_paid_once(
    rig: Rig,
) -> None:
    store = rig.chat.conversations
    conversation = await store.open(10, guild_id=1, kind=ConversationKind.CHANNEL)
    ids = [
        await store.append_turn(
            conversation.id, NewTurn("user", f"person1: hi {n}", 5, author_id=1)
        )
        for n in range(10)
    ]
    deleting = Deleting(rig.memory._api, lambda: store.delete_turns(ids[-1:]))
    rig.memory._api = deleting
    rig.memory.remember(conversation.id, after=0)
    await rig.embedded()
    assert await rig.vectors() == 9
    assert [len(r.json["input"]) for r in rig.api.requests_to("/embeddings")] == [10]
    async with rig.sessions() as session:
        recorded = await session.scalar(text("SELECT sum(prompt_tokens) FROM usage_records"))
    assert recorded == deleting.tokens > 0


async def test_an_alternative_kept_is_found_by_its_own_text_not_the_one_it_replaced(
    rig: Rig,
) -> None:
    conversation_id = await conversation_of(
        rig, ("user", "person1: name a city"), ("assistant", "Paris is the capital of France.")
    )
    await rig.embedded()
    recall = Request(RequestKind.RECALL, CHANNEL, Person(1))
    _, found = await rig.memory.search(recall, "Paris capital of France")  # now held
    answer = found[0].turn.id

    store = rig.chat.conversations
    assert await store.replace_answer(
        answer, content="Lagos hosts a huge market.", token_estimate=9
    )
    await rig.embedded()
    assert await rig.vectors() == 2
    _, found = await rig.memory.search(recall, "Lagos huge market")
    assert [(f.turn.id, f.turn.conversation_id) for f in found] == [(answer, conversation_id)]
    with pytest.raises(UserError, match="Nothing"):
        await rig.memory.search(recall, "Paris capital of France")


async def test_answers_regenerated_here_leave_their_places_among_the_found(rig: Rig) -> None:
    said = [("assistant", f"Vault codes are secret {n}.") for n in range(5)]
    await conversation_of(rig, ("user", "person1: tell me about vault codes"), *said)
    await rig.embedded()
    recall = Request(RequestKind.RECALL, CHANNEL, Person(1))
    _, found = await rig.memory.search(recall, "vault codes secret")  # now held
    answers = sorted(f.turn.id for f in found if f.turn.role == "assistant")
    assert len(found) == 5 == len(answers)

    await rig.chat.conversations.delete_turns(answers[:4])  # four Regenerates
    _, found = await rig.memory.search(recall, "vault codes secret")
    assert sorted(f.turn.role for f in found) == ["assistant", "user"]


async def test_turns_another_process_forgot_leave_their_places_among_the_found(rig: Rig) -> None:
    said = [("user", "person1: the vault code is purple elephant")] * 5
    other = ("user", "person1: my vault code is purple elephant too, colour wise")
    await conversation_of(rig, *said, other)
    await rig.embedded()
    elsewhere = rig.another_process()
    recall = Request(RequestKind.RECALL, CHANNEL, Person(1))
    _, found = await rig.memory.search(recall, "vault code purple elephant")  # now held
    assert len(found) == 5

    forget = Request(RequestKind.FORGET, CHANNEL, Person(1))
    offered = await elsewhere.to_forget(forget, "the vault code is purple elephant", moderator=True)
    ids = [turn.id for turn in offered]
    assert await elsewhere.forget(forget, ids, moderator=True) == len(ids) == 3
    _, found = await rig.memory.search(recall, "vault code purple elephant")
    assert len(found) == 3
    assert any("colour wise" in f.turn.content for f in found)


async def test_an_answer_kept_while_its_old_text_is_embedded_is_found_by_its_new_text(
    rig: Rig,
) -> None:
    store = rig.chat.conversations
    conversation = await store.open(10, guild_id=1, kind=ConversationKind.CHANNEL)
    await store.append_turn(
        conversation.id, NewTurn("user", "person1: name a city", 5, author_id=1)
    )
    answer = await store.append_turn(
        conversation.id, NewTurn("assistant", "Paris is the capital of France.", 5)
    )

    async def keep() -> None:  # another alternative kept while the worker embeds the first
        assert await store.replace_answer(
            answer, content="Lagos hosts a huge market.", token_estimate=9
        )

    rig.memory._api = Deleting(rig.memory._api, keep)
    rig.memory.remember(conversation.id, after=0)
    await rig.embedded()
    recall = Request(RequestKind.RECALL, CHANNEL, Person(1))
    _, found = await rig.memory.search(recall, "Lagos huge market")
    assert [f.turn.content for f in found][:1] == ["Lagos hosts a huge market."]
    with pytest.raises(UserError):  # nothing is like the text no longer there
        await rig.memory.search(recall, "Paris capital of France")


class RefusingAll:
    """Works once, refuses the next `refusals` requests (a model taken away), then works."""

    def __init__(self, client: EmbeddingApi, refusals: int) -> None:
        self.client, self.refusals, self.requests = client, refusals, 0

    async def embed(
        self, inputs: str | Sequence[str], *, model: str, dimensions: int | None = None
    ) -> EmbeddingResult:
        self.requests += 1
        if 1 < self.requests <= 1 + self.refusals:
            raise BadRequest("The model does not exist", status=404)
        return await self.client.embed(inputs, model=model, dimensions=dimensions)


async def test_a_refusal_of_every_turn_is_no_turns_fault(rig: Rig) -> None:
    # Eight turns refused: the batch, its halves, quarters and each turn alone, 15 requests.
    refusing = RefusingAll(rig.memory._api, refusals=15)
    rig.memory._api = refusing
    await conversation_of(rig, ("user", "person1: first"))
    await rig.embedded()
    await conversation_of(rig, *[("user", f"person1: hello {n}") for n in range(8)])
    await rig.embedded()  # tried again after a pause, as any failure, and embedded
    assert await rig.vectors() == 9
    assert refusing.requests == 1 + 15 + 1


async def test_a_vector_another_process_stores_for_an_older_turn_is_found(rig: Rig) -> None:
    store = rig.chat.conversations
    conversation = await conversation_of(rig, ("user", "person1: good morning everyone"))
    await rig.embedded()
    recall = Request(RequestKind.RECALL, CHANNEL, Person(1))
    await rig.memory.search(recall, "good morning everyone")  # its vectors now held here
    zebra = NewTurn("user", "person1: the zebra has black stripes", 5, author_id=1)
    older = await store.append_turn(conversation, zebra)
    await store.append_turn(conversation, NewTurn("user", "person1: lunch time", 5))
    rig.memory.remember(conversation, after=older)  # this process embeds the newer turn only
    await rig.embedded()
    elsewhere = rig.another_process()  # which embeds the older one after
    worker = asyncio.create_task(elsewhere.run())
    try:
        elsewhere.remember(conversation, after=0)
        await asyncio.sleep(0)
        async with asyncio.timeout(WAIT):
            await elsewhere.idle.wait()
    finally:
        worker.cancel()
    assert await rig.vectors() == 3
    _, found = await rig.memory.search(recall, "zebra black stripes")
    assert [f.turn.id for f in found][:1] == [older]
