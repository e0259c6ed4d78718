"""What the model is sent: the system prompt, the newest turns that fit, then the question."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.conversation.tokens import context_window, estimate_tokens
from bot.db.repository import StoredTurn

# Room always left in the model's window for the answer itself.
_ANSWER_ROOM = 4096


@dataclass(frozen=True)
class Question:
    """A person's message, as the model will read it and history will keep it."""

    content: str
    # Images as URLs the API can read (data: URLs, so nothing expires and nothing is fetched).
    image_urls: Sequence[str] = ()

    @property
    def token_estimate(self) -> int:
        return estimate_tokens(self.content, images=len(self.image_urls))


def question_text(author_name: str, text: str, quoted: tuple[str, str] | None = None) -> str:
    """Names tell the speakers of a shared channel apart; a quoted message comes along."""
    said = f"{author_name}: {text}"
    if quoted is None:
        return said
    quoted_author, quoted_text = quoted
    return f"(In reply to {quoted_author}: {quoted_text})\n{said}"


def spoken_text(content: str, author_name: str | None) -> str:
    """What a turn says, without the speaker's name that `question_text` put before it."""
    if author_name:
        return content.removeprefix(f"{author_name}: ") or content
    return content


def recall_note(turns: Sequence[StoredTurn]) -> str:
    """Older turns brought back by long-term memory, as one clearly marked note."""
    lines = ["Earlier in this conversation (older messages, recalled as they may be relevant):"]
    for turn in turns:
        speaker = "you (the assistant)" if turn.role == "assistant" else turn.author_name
        said = spoken_text(turn.content, turn.author_name)
        lines.append(f"[{turn.created_at:%Y-%m-%d}] {speaker or 'someone'}: {said}")
    return "\n".join(lines)


def history_budget(model: str, configured: int, system_prompt: str, question: Question) -> int:
    """Tokens left for history: the configured budget, capped by what the model can take."""
    window_left = context_window(model) - _ANSWER_ROOM
    fixed = estimate_tokens(system_prompt) + question.token_estimate
    return max(0, min(configured, window_left) - fixed)


def build_messages(
    system_prompt: str,
    history: Sequence[StoredTurn],
    question: Question,
    recalled: Sequence[StoredTurn] = (),
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    if recalled:
        # People's words, on their side: quoted, they must not weigh as instructions do.
        messages.append({"role": "user", "content": recall_note(recalled)})
    turns = [turn for turn in history if turn.content]
    # History starts with a question: an answer whose question fell out of the budget would
    # be half an exchange.
    while turns and turns[0].role == "assistant":
        turns.pop(0)
    for turn in turns:
        # Images from earlier turns are not sent again: they cost many tokens each time.
        messages.append({"role": turn.role, "content": turn.content})
    if question.image_urls:
        parts: list[dict[str, Any]] = [{"type": "text", "text": question.content}]
        parts += [{"type": "image_url", "image_url": {"url": url}} for url in question.image_urls]
        messages.append({"role": "user", "content": parts})
    else:
        messages.append({"role": "user", "content": question.content})
    return messages
