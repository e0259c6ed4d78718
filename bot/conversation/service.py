"""The turn service: one question in, one streamed answer out, remembered in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from bot import metrics
from bot.admission import Admission, Admitted, Hold, Person, Request, RequestKind
from bot.ai import Message, TextStream, Usage
from bot.conversation.alternatives import Alternatives, Shelf
from bot.conversation.context import Question, build_messages, history_budget, spoken_text
from bot.conversation.runs import (
    DELETED,
    RESTART,
    SHUTDOWN,
    Run,
    Runs,
    Slots,
    StopKind,
    StopReason,
    StopResult,
)
from bot.conversation.thinking import thinking_status
from bot.conversation.tokens import estimate_tokens, image_tokens_at_most, output_limit
from bot.db.models import ConversationKind, TurnStatus, UsageKind
from bot.db.repository import ConversationStore, ImageRef, NewTurn, StoredTurn
from bot.db.usage_store import UsageStore
from bot.delivery.reply import Controls, Paging, Replies, ReplySink, StreamingReply
from bot.errors import UserError, sentence_for
from bot.places import Place
from bot.server_config import Memory as MemorySetting

if TYPE_CHECKING:
    from bot.memory import Memory

log = logging.getLogger(__name__)

QUEUED = "⏳ Queued: many questions are being answered; yours is next in line."
WAITING = "⏳ Waiting for the answer before this one to finish."

PRIVATE_TIME_LIMIT = "Discord gives a private answer 15 minutes; this one was cut short."
PRIVATE_TIME_LIMIT_PAGING = (
    "Discord lets a private answer change for 15 minutes; this one no longer can."
)
NOT_SAVED = "This answer could not be saved, so later questions will not see it."
# What the history holds in place of an answer the database refused.
UNSAVED_ANSWER = "[The answer could not be saved.]"
# The API refuses to answer in JSON unless the messages ask for JSON.
JSON_INSTRUCTION = "Answer with one JSON object."
NO_LONGER_WORKS = "This button no longer works."
PAGE_ACTIONS = ("prev", "next", "keep")
NOT_NEWEST = "Only the newest answer here can be changed, and this one no longer is."
# The outcome of a question refused before any paid call (the others are TurnStatus ends).
REFUSED = "refused"

_FINISH_NOTICES = {
    "length": "The answer reached its length limit and was cut short.",
    "content_filter": "The rest of the answer was withheld by the content filter.",
}


class ChatApi(Protocol):
    """What answering needs of the API client."""

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float | None,
        max_tokens: int | None,
        user: str | None,
        n: int = 1,
        json_format: bool = False,
    ) -> TextStream:
        """`n` answers, their Deltas told apart by `Delta.choice`; `max_tokens` bounds each."""
        ...


@dataclass(frozen=True)
class ChatOptions:
    history_token_budget: int
    max_concurrent_requests: int
    # The longest an answer may be written for, from the request on.
    answer_timeout: float = 600.0
    # Past this many messages an answer comes whole as a file.
    max_answer_messages: int = 6
    # Without a word for this long, the message says the model is thinking (a quicker answer
    # shows its words first), then how long it has thought, every `thinking_tick` seconds.
    thinking_after: float = 1.5
    thinking_tick: float = 1.0


@dataclass(frozen=True)
class Ask:
    """An admitted question, ready to be answered."""

    admitted: Admitted
    # Where it is answered and remembered: the admitted place (a person's own conversation
    # with `history personal`), or the new thread of /chat.
    place: Place
    author_name: str
    question: Question
    private: bool = False
    message_id: int | None = None
    images: Sequence[ImageRef] = ()
    # Set when regenerating: the answer to replace, and the stored question it answered.
    replacing_turn: int | None = None
    question_turn: int | None = None
    # Answers to choose from (the first is stored unless another is kept), and whether
    # they are JSON.
    alternatives: int = 1
    json_format: bool = False
    # Set once the question is in line in its conversation: questions asked in a burst are
    # answered in the order they came only if each gets in line before the next is read.
    in_line: asyncio.Event | None = None

    @property
    def author_id(self) -> int:
        return self.admitted.request.author_id

    @property
    def model(self) -> str:
        return self.admitted.model


@dataclass(frozen=True)
class Interrupted:
    """An answer a crash left half written: where its last message is."""

    channel_id: int
    message_id: int


class _AnswerTimeLimit(Exception):
    """The answer ran past the deployment's ANSWER_TIMEOUT."""


@dataclass
class _Result:
    status: TurnStatus
    notice: str | None = None
    usage: Usage | None = None


class ChatService:
    def __init__(
        self,
        api: ChatApi,
        admission: Admission,
        conversations: ConversationStore,
        usage: UsageStore,
        replies: Replies,
        options: ChatOptions,
        *,
        memory: Memory | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._memory = memory
        self._monotonic = monotonic
        self._admission = admission
        self._conversations = conversations
        self._usage = usage
        self._replies = replies
        self.options = options
        self._slots = Slots(options.max_concurrent_requests)
        self._runs = Runs()
        self._alternatives = Shelf()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def models(self) -> Sequence[str]:
        """The chat models people may pick."""
        return self._admission.config.catalog.chat_models

    # Asking.

    async def admit(self, request: Request, *, alternatives: int = 1) -> Admitted:
        """Admit a question, a /chat thread or a Regenerate (see bot.admission), and keep each
        person to a few at once."""
        cap = self._slots.total
        with _counting_refusals():
            if alternatives > cap:
                # Each may be a request of its own, and they run together.
                raise UserError(f"I can give at most {cap} alternatives at once here.")
            admitted = await self._admission.admit(request)
            self._runs.refuse_if_busy(request.author_id)
        return admitted

    async def ask(self, ask: Ask, sink: ReplySink) -> None:
        """Answer a question into `sink`: after the asker's previous question, and after the
        earlier questions of the same conversation. Whatever happens, the reply is finished."""
        with _counting_refusals():
            self._runs.refuse_if_busy(ask.author_id)  # more may have come since admitted
            run = self._runs.start(ask.author_id)
        reply = self._replies.open(
            sink,
            stop_key=run.key,
            on_gone=lambda: run.cancel(DELETED),
            on_new_message=lambda: self._note_messages(run, sink),
            max_messages=self.options.max_answer_messages,
        )
        outcome = TurnStatus.FAILED.value
        try:
            queued = asyncio.create_task(self._in_turn(ask, sink, reply, run))
            run.task = queued
            try:
                await asyncio.wait({queued})
            except asyncio.CancelledError:
                queued.cancel()
                # Its clean-up (the turn, the reply) ends before this task does, so that nothing
                # of the answer runs on after whoever cancelled it has closed the database.
                await asyncio.wait({queued})
                outcome = TurnStatus.INTERRUPTED.value
                raise
            if queued.cancelled():  # stopped while it waited for its turn
                reason = run.stop_reason
                outcome = _stopped(run).value
                await _finish_unanswered(reply, reason, reason.notice if reason else "Stopped.")
            else:
                queued.result()  # raises what went wrong
        except Exception as exc:
            # Refused before any paid call: a budget, or an answer replaced meanwhile.
            outcome = REFUSED if isinstance(exc, UserError) and not run.answering else outcome
            doing = f"Answering in channel {ask.place.channel_id}"
            sentence = sentence_for(exc, doing=doing, log=log)
            if not reply.finished:  # an answer already shown stays as it is
                await reply.finish(f"⚠️ {sentence}")
        finally:
            self._runs.end(run)
            _measure(run, reply, outcome)

    async def _in_turn(self, ask: Ask, sink: ReplySink, reply: StreamingReply, run: Run) -> None:
        conversation = _in_order_key(ask.place)
        if ask.in_line is not None:
            # Nothing waits between here and getting in line (the person's own earlier
            # question aside).
            ask.in_line.set()
        async with self._runs.turn(run, conversation, on_wait=lambda: reply.status(WAITING)):
            await self._answer(ask, sink, reply, run)

    async def _answer(self, ask: Ask, sink: ReplySink, reply: StreamingReply, run: Run) -> None:
        model = ask.model
        place = ask.place
        conversation = await self._conversations.open(
            place.channel_id,
            guild_id=place.guild_id,
            kind=place.kind,
            opened_by_chat=place.opened_by_chat,
            opened_by=place.opened_by,
            owner_id=place.owner_id,
            parent_id=place.parent_id,
        )
        system_prompt = ask.admitted.settings.system_prompt
        budget = history_budget(
            model, self.options.history_token_budget, system_prompt, ask.question
        )
        history = await self._conversations.newest_turns(
            conversation.id, token_budget=budget, before_turn_id=ask.question_turn
        )
        memory = self._memory if ask.admitted.settings.memory is MemorySetting.ON else None
        newest = ask.question_turn or (history[-1].id if history else 0)
        recalled: Sequence[StoredTurn] = ()
        if memory is not None:
            recalled, history = await memory.recall(
                conversation.id,
                spoken_text(ask.question.content, ask.author_name),
                history,
                budget=budget,
                before=ask.question_turn,
                place=place,
                author_id=ask.author_id,
            )
        messages = build_messages(system_prompt, history, ask.question, recalled)
        if ask.json_format:
            # Next to the question rather than in the system prompt: the API takes JSON answers
            # only of requests whose messages say "JSON", and the Responses API reads its
            # `instructions` (the system prompt) apart from them.
            messages.insert(-1, {"role": "system", "content": JSON_INSTRUCTION})
        prompt_tokens = _prompt_tokens(messages, model)
        # Held before anything is stored or paid for: a refusal leaves no trace.
        hold = await self._hold(ask, model, prompt_tokens)
        recorded = False
        try:
            recorded = await self._answer_held(
                ask, sink, reply, run, conversation.id, history, messages, hold, prompt_tokens
            )
        finally:
            if not recorded:
                with contextlib.suppress(Exception):
                    await self._admission.release(hold)
            if memory is not None and not ask.private:
                # The question and its answer, once finished, are embedded in the background.
                memory.remember(conversation.id, after=newest)

    async def _hold(self, ask: Ask, model: str, prompt_tokens: int) -> Hold:
        """Hold the question's worst case against its budgets: its prompt and the longest
        answer it may get, at least its prompt and one token of answer; each as many times
        as answers are asked for (each may be a request of its own)."""
        longest = ask.admitted.settings.answer_tokens(model) or output_limit(model)
        n = ask.alternatives
        return await self._admission.hold(
            ask.admitted,
            least_tokens=n * (prompt_tokens + 1),
            most_tokens=n * (prompt_tokens + longest),
        )

    async def _answer_held(
        self,
        ask: Ask,
        sink: ReplySink,
        reply: StreamingReply,
        run: Run,
        conversation_id: int,
        history: Sequence[StoredTurn],
        messages: list[dict[str, Any]],
        hold: Hold,
        prompt_tokens: int,
    ) -> bool:
        """Answer, within what `hold` allows. True: its usage was recorded (the hold ends)."""
        model = ask.model
        stored = [] if ask.private else await self._store_question(conversation_id, ask, model)
        answer_turn = run.answer_turn = stored[-1] if stored else None
        self._note_messages(run, sink)  # a status line may already be showing

        # A budget bounds the answer, so that the hold truly bounds the cost: each answer
        # gets its share.
        max_tokens = (
            ask.admitted.settings.answer_tokens(model)
            if hold.id is None
            else hold.tokens // ask.alternatives - prompt_tokens
        )
        stream = asyncio.create_task(
            self._stream(messages, model, ask, reply, run, sink.deadline(), max_tokens)
        )
        run.task = stream
        if run.stop_reason is not None:
            stream.cancel()
        try:
            await asyncio.wait({stream})
        except asyncio.CancelledError:
            run.cancel(SHUTDOWN)
            with contextlib.suppress(asyncio.CancelledError):
                await stream
            raise
        result = self._result_of(stream, run)
        run.status = result.status
        # The first answer with text is the one shown and stored: an empty first choice gives
        # way to the next (all of them were paid for).
        answers = _answers(run)
        first = next(iter(answers), 0)
        text = answers.get(first, "")
        if first != 0 and result.status is TurnStatus.COMPLETE:
            result.notice = _FINISH_NOTICES.get(run.finish_reasons.get(first, ""))
        shown = _as_shown(text, ask.json_format)

        controls = (
            Controls(regenerate_turn=answer_turn, regenerate_json=ask.json_format)
            if answer_turn
            else Controls()
        )
        notice = result.notice
        alternatives = None
        if result.status is TurnStatus.COMPLETE and len(answers) > 1:
            alternatives = self._alternatives_of(ask, run, answers, reply, sink, conversation_id)
        if alternatives is not None:
            controls = replace(controls, paging=Paging(alternatives.key, 0))
            notice = alternatives.notice(0)
        if not text:
            # Nothing was answered: the question leaves no trace in the history.
            if result.status is TurnStatus.COMPLETE:
                result.notice = "The model returned an empty answer; please try again."
            await _finish_unanswered(reply, run.stop_reason, result.notice)
            new_turns = stored if ask.question_turn is None else stored[-1:]
            await self._conversations.delete_turns(new_turns)
        else:
            await reply.finish(shown, notice=notice, controls=controls)
            if answer_turn is not None:
                if not await self._save_answer(answer_turn, text, result, sink, model):
                    notice = _joined(notice, NOT_SAVED)
                    await reply.finish(shown, notice=notice, controls=controls)
                if ask.question_turn is None:  # a regenerated answer's forerunner has none
                    await self._retire_previous(history, sink)
        spent = await self._record_usage(ask, model, prompt_tokens, run, result.usage, hold)
        if spent is not None:
            warning = self._admission.warning(ask.admitted, hold, tokens=spent, images=0)
            if warning and text:
                await reply.finish(shown, notice=_joined(notice, warning), controls=controls)
        if alternatives is not None:  # from now on, their buttons work
            self._alternatives.add(alternatives)
        return spent is not None

    def _alternatives_of(
        self,
        ask: Ask,
        run: Run,
        answers: Mapping[int, str],
        reply: StreamingReply,
        sink: ReplySink,
        conversation_id: int,
    ) -> Alternatives:
        """The answers that came whole, to page through."""
        reasons = [run.finish_reasons.get(choice, "") for choice in answers]
        return Alternatives(
            key=run.key,
            author_id=ask.author_id,
            texts=list(answers.values()),
            notices=[_FINISH_NOTICES.get(reason) for reason in reasons],
            reply=reply,
            sink=sink,
            answer_turn=run.answer_turn,
            json_format=ask.json_format,
            conversation_id=conversation_id,
            in_order=_in_order_key(ask.place),
        )

    async def _save_answer(
        self, turn_id: int, text: str, result: _Result, sink: ReplySink, model: str
    ) -> bool:
        """Store the finished answer; if the database refuses it, finish the turn with a
        placeholder rather than leave it in progress. False: the answer was not stored."""
        attempts = ((text, result.status, result.usage), (UNSAVED_ANSWER, TurnStatus.FAILED, None))
        for first, (content, status, usage) in zip((True, False), attempts, strict=True):
            try:
                await self._conversations.finish_turn(
                    turn_id,
                    content=content,
                    token_estimate=estimate_tokens(content),
                    status=status,
                    message_ids=sink.message_ids(),
                    model=model,
                    prompt_tokens=usage.prompt_tokens if usage else None,
                    completion_tokens=usage.completion_tokens if usage else None,
                )
                return first
            except Exception:
                log.exception("Storing answer %d (%s) failed", turn_id, status)
        return False

    async def _retire_previous(self, history: Sequence[StoredTurn], sink: ReplySink) -> None:
        """Only the newest answer can be regenerated, or have another alternative kept, so
        only it keeps its buttons: the one before loses them."""
        previous = history[-1] if history else None
        if previous is None or previous.role != "assistant":
            return
        found = self._alternatives.of_answer(previous.id)
        if found is not None:
            # Where its buttons are now: paging may have changed its messages since the
            # history was read.
            async with found.lock:
                self._retire(found)
            return
        if previous.message_ids and not previous.images:  # images have a Regenerate of their own
            self._replies.retire_controls(sink, previous.message_ids[-1])

    async def _is_newest(self, conversation_id: int, turn_id: int) -> bool:
        """Whether `turn_id` is the newest finished turn of its conversation."""
        newest = await self._conversations.newest_turns(
            conversation_id, token_budget=2**62, max_turns=1
        )
        return [turn.id for turn in newest] == [turn_id]

    async def _store_question(self, conversation_id: int, ask: Ask, model: str) -> list[int]:
        """Store the question (unless it is stored already) and an answer in progress."""
        turns: list[int] = []
        if ask.replacing_turn is not None:
            # Checked again here, in the conversation's turn: two presses of Regenerate, or a
            # question asked meanwhile, must not both replace it.
            if not await self._is_newest(conversation_id, ask.replacing_turn):
                raise UserError("That answer was replaced meanwhile; only the newest can be.")
            await self._conversations.delete_turns([ask.replacing_turn])
        if ask.question_turn is None:
            question = NewTurn(
                role="user",
                content=ask.question.content,
                # Images are not sent again with later questions, so they are not counted.
                token_estimate=estimate_tokens(ask.question.content),
                author_id=ask.author_id,
                author_name=ask.author_name,
                message_ids=[ask.message_id] if ask.message_id else [],
                images=ask.images,
            )
            turns.append(await self._conversations.append_turn(conversation_id, question))
        answer = NewTurn(
            role="assistant",
            content="",
            token_estimate=0,
            status=TurnStatus.IN_PROGRESS,
            model=model,
        )
        turns.append(await self._conversations.append_turn(conversation_id, answer))
        return turns

    async def _stream(
        self,
        messages: list[dict[str, object]],
        model: str,
        ask: Ask,
        reply: StreamingReply,
        run: Run,
        deadline: datetime | None,
        max_tokens: int | None,
    ) -> tuple[str | None, Usage | None]:
        seconds_left = None if deadline is None else (deadline - datetime.now(UTC)).total_seconds()
        async with asyncio.timeout(seconds_left), self._slot(reply, ask.alternatives):
            run.answering = True
            summary: list[str] = []  # of the model's reasoning, when it streams one
            summarised = asyncio.Event()
            thinking = asyncio.create_task(self._show_thinking(reply, run, summary, summarised))
            # Made before it is opened: a request taken, then stopped while the model thinks,
            # is paid for all the same.
            run.upstream = self._api.stream_chat(
                messages,
                model=model,
                temperature=ask.admitted.settings.temperature,
                max_tokens=max_tokens,
                user=str(ask.author_id),
                n=ask.alternatives,
                json_format=ask.json_format,
            )
            try:
                async with (
                    asyncio.timeout(self.options.answer_timeout) as answer_limit,
                    run.upstream as stream,
                ):
                    async for delta in stream:
                        if delta.reasoning:
                            if delta.choice == 0:  # alternatives each think their own
                                summary.append(delta.text)
                                summarised.set()
                        elif delta.choice == 0:
                            run.text += delta.text
                            if run.text.strip():  # whitespace alone would show nothing
                                reply.update(_as_shown(run.text, ask.json_format))
                        else:  # the other alternatives show once all have ended
                            run.others[delta.choice] = run.others.get(delta.choice, "") + delta.text
            except TimeoutError:
                if answer_limit.expired():
                    raise _AnswerTimeLimit from None
                raise
            finally:
                thinking.cancel()
            run.finish_reasons = dict(stream.finish_reasons)
            return stream.finish_reason, stream.usage

    async def _show_thinking(
        self, reply: StreamingReply, run: Run, summary: list[str], summarised: asyncio.Event
    ) -> None:
        """Until the first words, say that the model is thinking, for how long, and what it
        says of its thinking: never a message that shows nothing happening. (The reply shows
        a status only until the answer's first words, and paces its writes itself.)"""
        started = self._monotonic()
        while not run.text.strip():
            # A summary means the model is thinking: say so at once. Otherwise wait a moment,
            # so that a quick answer shows its words first.
            thought = self._monotonic() - started
            if summary or thought >= self.options.thinking_after:
                reply.status(thinking_status(thought, "".join(summary)))
            summarised.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(summarised.wait(), self.options.thinking_tick)

    @contextlib.asynccontextmanager
    async def _slot(self, reply: StreamingReply, count: int) -> AsyncIterator[None]:
        """Places among the requests allowed upstream at once, one per answer asked for;
        shows "queued" while waiting."""
        if self._slots.busy(count):
            reply.status(QUEUED)
        async with self._slots.take(count):
            yield

    def _result_of(
        self, stream: asyncio.Task[tuple[str | None, Usage | None]], run: Run
    ) -> _Result:
        if stream.cancelled():
            return _Result(_stopped(run), run.stop_reason.notice if run.stop_reason else "Stopped.")
        error = stream.exception()
        if isinstance(error, _AnswerTimeLimit):
            took = _duration(self.options.answer_timeout)
            notice = f"The answer took longer than {took} and was cut short."
            return _Result(TurnStatus.STOPPED, notice)
        if isinstance(error, TimeoutError):
            return _Result(TurnStatus.STOPPED, PRIVATE_TIME_LIMIT)
        if error is not None:
            return _Result(TurnStatus.FAILED, sentence_for(error, doing="An answer", log=log))
        finish_reason, usage = stream.result()
        return _Result(TurnStatus.COMPLETE, _FINISH_NOTICES.get(finish_reason or ""), usage)

    async def _record_usage(
        self,
        ask: Ask,
        model: str,
        prompt_tokens: int,
        run: Run,
        usage: Usage | None,
        hold: Hold,
    ) -> int | None:
        """Record what the API reported, in the hold's place; for an answer cut short it
        reports nothing, so estimate (a request the API accepted is paid for even without a
        word of answer). Returns the tokens recorded (None: nothing was)."""
        if usage is not None:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
        elif run.text or run.accepted:
            # Every answer asked for, as the hold counted them.
            prompt = prompt_tokens * ask.alternatives
            texts = (run.text, *run.others.values())
            completion = sum(estimate_tokens(text) for text in texts if text)
        else:
            return None
        await self._usage.record(
            user_id=ask.author_id,
            guild_id=ask.place.guild_id,
            channel_id=ask.place.channel_id,
            kind=UsageKind.CHAT,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            reservation_id=hold.id,
            at=self._admission.now(),
        )
        return prompt + completion

    async def regeneration(
        self,
        turn_id: int,
        *,
        place: Place,
        person: Person,
        can_manage: bool,
        json_format: bool = False,
    ) -> Ask:
        """The question to ask again, where `person` pressed Regenerate at `place`, so that
        its new answer (in JSON, if `json_format`) replaces answer `turn_id`."""
        # The button shows with the answer's last write, a moment before the answer is stored
        # as finished: a quick press waits for that.
        await self._runs.wait_until_stored(turn_id)
        answer = await self._conversations.get_turn(turn_id)
        conversation = (
            await self._conversations.get_conversation(answer.conversation_id) if answer else None
        )
        if answer is None or conversation is None or conversation.channel_id != place.channel_id:
            raise UserError("That answer is no longer in this conversation's history.")
        newest = await self._conversations.newest_turns(
            answer.conversation_id, token_budget=2**62, max_turns=2
        )
        if len(newest) != 2 or newest[1].id != turn_id or newest[0].role != "user":
            raise UserError("Only the newest answer of a conversation can be regenerated.")
        question = newest[0]
        if question.author_id != person.id and not can_manage:
            raise UserError(
                "Only the person who asked, or someone who can manage messages, can regenerate."
            )
        # The answer stays in the conversation it was in, whatever the settings are now.
        place = replace(
            place,
            opened_by_chat=conversation.opened_by_chat,
            opened_by=conversation.opened_by,
            owner_id=conversation.owner_id,
        )
        admitted = await self.admit(
            Request(RequestKind.REGENERATE, place, person, model=answer.model, again=True)
        )
        found = self._alternatives.of_answer(turn_id)
        if found is not None:  # the new answer replaces them all
            async with found.lock:
                self._retire(found)
        return Ask(
            admitted=admitted,
            place=admitted.place,
            author_name=question.author_name or "",
            question=Question(question.content),
            # Where the question's images are, for the caller to read again.
            images=question.images,
            replacing_turn=answer.id,
            question_turn=question.id,
            json_format=json_format,
        )

    async def is_chat_thread(self, channel_id: int) -> bool:
        """Whether this thread was opened by /chat, so that it is answered without mentions."""
        conversation = await self._conversations.find(channel_id)
        return bool(conversation and conversation.opened_by_chat)

    def _note_messages(self, run: Run, sink: ReplySink) -> None:
        """Store where an answer is shown while it is written, so that after a crash its
        messages can be found and marked. Done aside: it must not slow the writing."""
        message_ids = sink.message_ids()
        if run.answer_turn is None or not message_ids:
            return
        # Each write waits for the one before, so an older list never lands last.
        task = asyncio.create_task(
            self._store_message_ids(run.ids_stored, run.answer_turn, message_ids)
        )
        run.ids_stored = task
        self._background.add(task)
        task.add_done_callback(self._background_done)

    async def _store_message_ids(
        self, before: asyncio.Task[None] | None, turn_id: int, message_ids: list[int]
    ) -> None:
        if before is not None:
            await asyncio.wait({before})
        await self._conversations.set_message_ids(turn_id, message_ids)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("Storing an answer's message ids failed", exc_info=task.exception())

    async def recover(self, owns: Callable[[int | None], bool]) -> list[Interrupted]:
        """At start: answers a crash left in progress in the servers this process `owns` are
        marked interrupted; returns where their last messages are, to show it there too.
        (Other processes' answers may still be running.)"""
        turns = await self._conversations.interrupt_unfinished(owns)
        if turns:
            log.info("Marked %d answers left unfinished as interrupted", len(turns))
        return [
            Interrupted(channel_id, turn.message_ids[-1])
            for turn, channel_id in turns
            if turn.message_ids
        ]

    # Alternatives.

    async def turn_page(
        self, key: str, page: int, action: str, *, user_id: int, can_manage: bool
    ) -> None:
        """Previous, Next or Keep (`action` "prev", "next", "keep") pressed under page `page`
        of the alternatives `key`. Keep stores that answer in place of the first and ends
        the paging."""
        # The buttons show a moment before the paging is ready: a quick press waits for it.
        await self._runs.wait_until_done(key)
        found = self._alternatives.get(key)
        if found is None or not 0 <= page < len(found.texts) or action not in PAGE_ACTIONS:
            raise UserError(NO_LONGER_WORKS)
        if found.author_id != user_id and not can_manage:
            raise UserError(
                "Only the person who asked, or someone who can manage messages, can choose."
            )
        deadline = found.sink.deadline()
        if deadline is not None and datetime.now(UTC) >= deadline:
            raise UserError(PRIVATE_TIME_LIMIT_PAGING)
        if action == "keep":
            await self._keep(found, page)
            return
        step = 1 if action == "next" else -1
        async with found.lock:
            self._check_live(found)
            await self._show_page(found, (page + step) % len(found.texts))

    def _check_live(self, found: Alternatives) -> None:
        """Called holding `found.lock`: a press that waited there may come after a Keep, a
        Regenerate or a newer answer ended the paging."""
        if self._alternatives.get(found.key) is not found:
            raise UserError(NO_LONGER_WORKS)

    async def _keep(self, found: Alternatives, page: int) -> None:
        """Store answer `page` in place of the first, and end the paging. A stored one is
        kept in the conversation's turn, as answers are written, and only while it is the
        newest: the history never changes under an answer being written, nor under one
        written after it."""
        turn = found.answer_turn
        in_order = (
            self._runs.in_order(found.in_order) if turn is not None else contextlib.nullcontext()
        )
        async with in_order, found.lock:
            self._check_live(found)
            if turn is not None:
                if not await self._is_newest(found.conversation_id, turn):
                    self._retire(found)
                    raise UserError(NOT_NEWEST)
                text = found.texts[page]
                if page != 0 and not await self._conversations.replace_answer(
                    turn, content=text, token_estimate=estimate_tokens(text)
                ):
                    self._retire(found)
                    raise UserError("That answer is no longer in this conversation's history.")
            self._alternatives.remove(found.key)
            await self._show_page(found, page, paging=False)

    def _retire(self, found: Alternatives) -> None:
        """End the paging of `found` and remove its buttons, Regenerate too: a newer answer
        came, or a new one replaces it. Called holding `found.lock`, so that no page being
        shown puts them back."""
        self._alternatives.remove(found.key)
        message_ids = found.sink.message_ids()
        if message_ids:
            self._replies.retire_controls(found.sink, message_ids[-1])

    async def _show_page(self, found: Alternatives, page: int, *, paging: bool = True) -> None:
        """Show answer `page` in the reply's messages (with the paging buttons, or without
        them once one is kept)."""
        turn = found.answer_turn
        await found.reply.finish(
            _as_shown(found.texts[page], found.json_format),
            notice=found.notice(page) if paging else found.notices[page],
            controls=Controls(
                regenerate_turn=turn,
                regenerate_json=found.json_format,
                paging=Paging(found.key, page) if paging else None,
            ),
        )
        if turn is not None:
            # Its last message is where its buttons are, to remove when the next answer comes.
            await self._conversations.set_message_ids(turn, found.sink.message_ids())

    def load(self) -> tuple[int, int]:
        """How many questions are queued (for their turn, or for a place among the API's
        requests), and how many are being answered."""
        return self._runs.counts()

    # Stopping.

    def stop(self, key: str, *, user_id: int, can_manage: bool, by: str) -> StopResult:
        return self._runs.stop(key, user_id=user_id, can_manage=can_manage, by=by)

    def begin_shutdown(self) -> None:
        """Start no more answers: questions not asked upstream yet end at once with the
        restart sentence; the answers being written go on (until `shutdown`)."""
        self._runs.close()

    @property
    def answers_running(self) -> int:
        """Answers asked upstream and still being written."""
        return self._runs.upstream

    async def answers_ended(self) -> None:
        """Wait until every answer has ended."""
        await self._runs.ended()

    async def shutdown(self, grace: float = 5.0) -> None:
        """End every answer in progress with a notice, waiting at most `grace` seconds."""
        deadline = asyncio.get_running_loop().time() + grace
        await self._runs.shutdown(grace)
        if self._background:
            left = deadline - asyncio.get_running_loop().time()
            await asyncio.wait(self._background, timeout=max(left, 0))
        self._replies.close()

    # Forgetting.

    async def thread_opener(self, channel_id: int) -> int | None:
        """Who opened this thread with /chat; None when it was not, or is too old to say."""
        conversation = await self._conversations.find(channel_id)
        return conversation.opened_by if conversation else None

    async def reset(self, request: Request, *, moderator: bool) -> tuple[int, bool]:
        """Forget the conversation where `request` is made; returns how many messages were
        forgotten, and whether it was the person's own. A channel's shared history is
        everyone's: forgetting it takes a
        `moderator`; a /chat thread's may be forgotten by its opener too; a person's own
        conversation, and a direct message's, by that person."""
        place = (await self._admission.admit(request)).place
        guild = place.guild_id is not None
        if guild and place.owner_id == 0 and not moderator:
            if place.kind is not ConversationKind.THREAD:
                raise UserError(
                    "Forgetting a channel's conversation takes the Manage Messages permission."
                )
            if await self.thread_opener(place.channel_id) != request.author_id:
                raise UserError(
                    "Only the person who opened this thread with /chat, or someone who can "
                    "manage messages or threads, can make me forget it."
                )
        forgotten = await self._conversations.reset(place.channel_id, place.owner_id)
        return forgotten, place.owner_id != 0


def _stopped(run: Run) -> TurnStatus:
    return TurnStatus.INTERRUPTED if run.stop_reason == SHUTDOWN else TurnStatus.STOPPED


@contextlib.contextmanager
def _counting_refusals() -> Iterator[None]:
    try:
        yield
    except UserError:
        metrics.ANSWERS.labels(outcome=REFUSED).inc()
        raise


def _measure(run: Run, reply: StreamingReply, outcome: str) -> None:
    """Count the question by how its answer ended (the stream's end, where it had one), and
    time the answer."""
    if run.stop_reason == RESTART:
        # Ended by the restart before it was asked upstream (waiting for its turn or for a
        # place among the API's requests): refused, not paid for.
        outcome = REFUSED
    elif run.status is not None:
        outcome = run.status.value
    metrics.ANSWERS.labels(outcome=outcome).inc()
    if outcome == REFUSED:
        return
    if run.text and reply.time_to_text is not None:
        metrics.FIRST_TEXT.observe(reply.time_to_text)
    metrics.ANSWER.observe(reply.age)


def _prompt_tokens(messages: Sequence[Mapping[str, Any]], model: str) -> int:
    """The estimated tokens of a request's messages, each image at the most `model` may bill
    for it (a budget must hold enough)."""
    total = 0
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            total += estimate_tokens(content)
        else:
            text = "".join(str(part.get("text", "")) for part in content)
            images = sum(part.get("type") == "image_url" for part in content)
            total += estimate_tokens(text) + images * image_tokens_at_most(model)
    return total


async def _finish_unanswered(
    reply: StreamingReply, reason: StopReason | None, notice: str | None
) -> None:
    """End a reply that got no answer: quietly when someone pressed Stop, else as a warning."""
    if reason is not None and reason.kind is StopKind.PRESSED:
        await reply.finish("", notice=notice)
    else:
        await reply.finish(f"⚠️ {notice}" if notice else "")


def _in_order_key(place: Place) -> tuple[int, int]:
    """What a conversation's answers wait in turn by: people's own conversations in a
    channel do not wait for each other."""
    return (place.channel_id, place.owner_id)


def _answers(run: Run) -> dict[int, str]:
    """The answers that came with text, by choice, in order."""
    every = {0: run.text} | run.others
    return {choice: every[choice] for choice in sorted(every) if every[choice]}


def _as_shown(text: str, json_format: bool) -> str:
    """A JSON answer shows as a code block (split across messages like any); the history
    keeps the JSON alone."""
    return f"```json\n{text}\n```" if json_format and text else text


def _joined(notice: str | None, more: str) -> str:
    """Notices shown one under another."""
    return f"{notice}\n-# {more}" if notice else more


def _duration(seconds: float) -> str:
    value, unit = (seconds / 60, "minute") if seconds >= 60 else (seconds, "second")
    return f"{value:g} {unit}" + ("" if value == 1 else "s")
