"""The one step every request passes before anything is paid for.

A question, a /chat thread, a Regenerate, an image or an edit is admitted here: the effective
settings for its place are resolved, and whether it may be asked there is checked. What comes
back is what to run with (`Admitted`); a refusal is a `UserError` whose text is one sentence for
the person. Per-server settings, permissions and budgets belong here too, and nowhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from bot.db.models import ConversationKind
from bot.errors import UserError
from bot.places import Place

NOT_HERE = "This command isn't available here."


class RequestKind(enum.StrEnum):
    QUESTION = "question"  # /ask, a mention, a reply, a message in a /chat thread
    THREAD = "thread"  # /chat
    REGENERATE = "regenerate"  # an answer asked again
    IMAGE = "image"  # /image, or its Regenerate
    EDIT = "edit"  # /edit

    @property
    def makes_images(self) -> bool:
        return self in (RequestKind.IMAGE, RequestKind.EDIT)


@dataclass(frozen=True)
class Request:
    kind: RequestKind
    place: Place
    author_id: int
    model: str | None = None  # as the person picked it; None: the place's default
    prompt_chars: int = 0  # what the person typed
    images: int = 0  # images a chat model is asked to look at


@dataclass(frozen=True)
class Admitted:
    """A request that may run, with what it runs with."""

    request: Request
    model: str


@dataclass(frozen=True)
class Rules:
    """The deployment's settings that admission applies."""

    chat_model: str
    chat_models: Sequence[str]
    vision_models: Sequence[str]
    image_model: str
    image_models: Sequence[str]
    max_prompt_chars: int
    allow_direct_messages: bool


class Admission:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    async def admit(self, request: Request) -> Admitted:
        """What `request` runs with; raises UserError with the sentence for the person."""
        rules = self.rules
        if request.place.kind is ConversationKind.DIRECT and not rules.allow_direct_messages:
            raise UserError(NOT_HERE)
        if request.kind.makes_images:
            return Admitted(request, self._image_model(request.model))
        model = self._chat_model(request)
        limit = rules.max_prompt_chars
        if request.prompt_chars > limit:
            raise UserError(
                f"Your message is {request.prompt_chars} characters long; the limit is {limit}."
            )
        if request.images and model not in rules.vision_models:
            raise UserError(f"{model} can't look at images; pick a model that can.")
        return Admitted(request, model)

    def _chat_model(self, request: Request) -> str:
        model = request.model
        if model is None:
            return self.rules.chat_model
        # An answer asked again keeps the model it was made with.
        if request.kind is not RequestKind.REGENERATE and model not in self.rules.chat_models:
            raise UserError(f"I don't know the model {model!r}; pick one from the list.")
        return model

    def _image_model(self, model: str | None) -> str:
        rules = self.rules
        if model is None or model == rules.image_model:
            return rules.image_model
        if model not in rules.image_models:
            raise UserError(f"I don't know the image model {model!r}; pick one from the list.")
        return model
