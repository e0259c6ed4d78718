"""The one step every request passes before anything is paid for.

A question, a /chat thread, a Regenerate, an image, an edit or a /reset is admitted here: the
effective settings for its place are resolved (bot.server_config), and whether this person may
ask there is checked: direct messages, the place's reply mode, its roles, and the budgets that
bind the person (bot.budgets). What comes back is what to run with (`Admitted`); a refusal is a
`UserError` whose text is one sentence for the person, or `Ignored` for a message the bot lets
pass without a word. Right before its paid call, a request holds what it may cost (`hold`);
its recorded usage then takes the hold's place.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from bot.budgets import WARN_AT, Cap, Dimension, caps_for, checks_for
from bot.db.budget_store import CapReached, Ledger
from bot.db.models import ConversationKind
from bot.errors import UserError
from bot.places import Place
from bot.server_config import History, PlaceSettings, ReplyMode, ServerConfig

NOT_HERE = "This command isn't available here."
BOT_OFF = "The bot is off in this channel."
RESTARTING = "The bot is restarting; ask again in a minute."
# A hold a crashed process left behind stops counting after this, unless settings say more.
HOLD_LIFETIME = timedelta(minutes=30)


class RequestKind(enum.StrEnum):
    QUESTION = "question"  # /ask, a mention, a reply, a message in a /chat thread
    THREAD = "thread"  # /chat
    REGENERATE = "regenerate"  # an answer asked again
    IMAGE = "image"  # /image, or its Regenerate
    EDIT = "edit"  # /edit
    RESET = "reset"  # /reset: costs nothing, but is the bot's like the others
    RECALL = "recall"  # /recall: embeds what to search for
    FORGET = "forget"  # /forget, and its confirmation

    @property
    def makes_images(self) -> bool:
        return self in (RequestKind.IMAGE, RequestKind.EDIT)

    @property
    def paid(self) -> bool:
        """Whether it may make a paid call (/forget embeds what to look for)."""
        return self is not RequestKind.RESET


class Via(enum.StrEnum):
    """How a request reached the bot."""

    COMMAND = "command"  # a slash command or a button
    MENTION = "mention"  # a mention, a reply to the bot, a message in a /chat thread
    MESSAGE = "message"  # any other message


@dataclass(frozen=True)
class Person:
    """Who makes a request (for a button: who pressed it)."""

    id: int
    roles: frozenset[int] = frozenset()
    admin: bool = False  # Manage Server or Administrator: may always use the bot


@dataclass(frozen=True)
class Request:
    kind: RequestKind
    place: Place
    person: Person
    via: Via = Via.COMMAND
    model: str | None = None  # as the person picked it; None: the place's
    prompt_chars: int = 0  # what the person typed
    images: int = 0  # images a chat model is asked to look at
    count: int = 1  # images asked for, by an image request
    # Made again (Regenerate): it stays in the conversation its place names.
    again: bool = False

    @property
    def author_id(self) -> int:
        return self.person.id


@dataclass(frozen=True)
class Admitted:
    """A request that may run, with what it runs with."""

    request: Request
    model: str
    settings: PlaceSettings
    # Where its conversation is: with `history personal`, the person's own one.
    place: Place
    caps: tuple[Cap, ...] = ()  # the budgets that bind it


@dataclass(frozen=True)
class Hold:
    """What a running request may cost at most; `id` None when no budget binds it."""

    id: int | None
    tokens: int
    images: int
    caps: tuple[Cap, ...] = ()  # held against
    used: tuple[int, ...] = ()  # per cap, used and held before this hold


class Ignored(Exception):
    """A message that is not for the bot here: it passes without a word."""


@dataclass(frozen=True)
class Rules:
    """The deployment's settings that admission applies besides the places' own."""

    vision_models: Sequence[str]
    max_prompt_chars: int
    allow_direct_messages: bool


class Admission:
    def __init__(
        self,
        config: ServerConfig,
        rules: Rules,
        ledger: Ledger,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        hold_lifetime: timedelta = HOLD_LIFETIME,
    ) -> None:
        self.config = config
        self.rules = rules
        self.ledger = ledger
        self.now = clock
        # Longer than any request may run, waiting for its turn included.
        self.hold_lifetime = hold_lifetime
        # Set once the bot begins to shut down: from then on nothing new is paid for.
        self.restarting = False

    async def admit(self, request: Request) -> Admitted:
        """What `request` runs with; raises UserError with the sentence for the person, or
        Ignored for a message to let pass."""
        place = request.place
        if place.kind is ConversationKind.DIRECT and not self.rules.allow_direct_messages:
            if request.via is not Via.COMMAND:
                raise Ignored
            raise UserError(NOT_HERE)
        settings = await self.config.for_place(place)
        # First the reply mode: a plain message is a request only where it says so.
        _check_reply_mode(request, settings.reply_mode)
        if self.restarting and request.kind.paid:
            raise UserError(RESTARTING)
        _check_roles(request, settings.roles)
        caps = await self._caps_left(request, settings)
        if request.kind.makes_images:
            model = self._image_model(request.model, settings)
            return Admitted(request, model, settings, _conversation_place(request, settings), caps)
        model = self._chat_model(request, settings)
        limit = self.rules.max_prompt_chars
        if request.prompt_chars > limit:
            raise UserError(
                f"Your message is {request.prompt_chars} characters long; the limit is {limit}."
            )
        if request.images and model not in self.rules.vision_models:
            raise UserError(f"{model} can't look at images; pick a model that can.")
        return Admitted(request, model, settings, _conversation_place(request, settings), caps)

    # Budgets.

    async def _caps_left(self, request: Request, settings: PlaceSettings) -> tuple[Cap, ...]:
        """The caps binding the request; refused at once when one has nothing left (the hold
        right before the paid call checks exactly)."""
        guild_id = request.place.guild_id
        # /reset and /forget delete: a spent budget never keeps anyone from that (/forget's
        # one small embedding is not worth refusing it for).
        if guild_id is None or request.kind in (RequestKind.RESET, RequestKind.FORGET):
            return ()
        person = request.person
        caps = caps_for(settings.budgets, person.id, person.roles)
        needed = Dimension.IMAGES if request.kind.makes_images else Dimension.TOKENS
        binding = [cap for cap in caps if cap.dimension is needed]
        if not binding:
            return tuple(caps)
        now = self.now()
        used = await self.ledger.used(guild_id, checks_for(binding, now), now)
        asked = request.count if request.kind.makes_images else 1
        for cap, spent in zip(binding, used, strict=True):
            if spent + asked > cap.limit:
                raise UserError(cap.describe(spent, now, asked=asked))
        return tuple(caps)

    async def hold(
        self, admitted: Admitted, *, least_tokens: int = 0, most_tokens: int = 0, images: int = 0
    ) -> Hold:
        """Hold what the request may cost against its caps: `images`, and up to `most_tokens`
        tokens, but at least `least_tokens` (its prompt), or UserError says which cap is
        reached. `Hold.tokens` is what it may then spend."""
        guild_id = admitted.request.place.guild_id
        taken = Dimension.IMAGES if images else Dimension.TOKENS
        caps = [cap for cap in admitted.caps if cap.dimension is taken]
        if not caps or guild_id is None:
            return Hold(None, most_tokens, images)
        now = self.now()
        try:
            held = await self.ledger.hold(
                guild_id,
                admitted.request.author_id,
                checks_for(caps, now),
                least_tokens=least_tokens,
                most_tokens=most_tokens,
                images=images,
                now=now,
                expires_at=now + self.hold_lifetime,
            )
        except CapReached as reached:
            cap = caps[reached.index]
            if cap.dimension is Dimension.IMAGES:
                raise UserError(cap.describe(reached.used, now, asked=images)) from None
            raise UserError(cap.describe(reached.used, now, needed=least_tokens)) from None
        return Hold(held.id, held.tokens, held.images, tuple(caps), held.used)

    async def release(self, hold: Hold) -> None:
        """A hold whose request recorded no usage (it failed before costing anything)."""
        if hold.id is not None:
            await self.ledger.release(hold.id)

    def warning(self, admitted: Admitted, hold: Hold, *, tokens: int, images: int) -> str | None:
        """The sentence for a person who has just passed 80% of one of their caps (once a
        period: only the request that crosses it says so)."""
        now = self.now()
        for cap, before in zip(hold.caps, hold.used, strict=True):
            if cap.subject != admitted.request.author_id:
                continue
            spent = tokens if cap.dimension is Dimension.TOKENS else images
            threshold = WARN_AT * cap.limit
            if before < threshold <= before + spent:
                return cap.describe(before + spent, now)
        return None

    def _chat_model(self, request: Request, settings: PlaceSettings) -> str:
        model = request.model
        if model is None:
            return settings.model
        # An answer asked again keeps the model it was made with.
        offered = self.config.catalog.chat_models
        if request.kind is not RequestKind.REGENERATE and model not in offered:
            raise UserError(f"I don't know the model {model!r}; pick one from the list.")
        return model

    def _image_model(self, model: str | None, settings: PlaceSettings) -> str:
        if model is None:
            return settings.image_model
        if model not in self.config.catalog.image_models:
            raise UserError(f"I don't know the image model {model!r}; pick one from the list.")
        return model


def _refuse(request: Request, sentence: str) -> None:
    """A command or a mention is told why; a plain message passes without a word."""
    if request.via is Via.MESSAGE:
        raise Ignored
    raise UserError(sentence)


def _check_reply_mode(request: Request, mode: ReplyMode) -> None:
    if mode is ReplyMode.OFF:
        if request.via is not Via.COMMAND:
            raise Ignored  # the bot ignores mentions here
        raise UserError(BOT_OFF)
    if request.via is Via.MESSAGE and mode is not ReplyMode.ALL:
        raise Ignored


def _check_roles(request: Request, roles: frozenset[int]) -> None:
    person = request.person
    if not roles or person.admin or person.roles & roles:
        return
    listed = ", ".join(f"<@&{role}>" for role in sorted(roles))
    _refuse(request, f"Only members with one of the roles {listed} can use the bot here.")


def _conversation_place(request: Request, settings: PlaceSettings) -> Place:
    """With `history personal` a question goes to the person's own conversation in a channel
    (threads stay shared); an answer asked again stays in the conversation it was in."""
    place = request.place
    personal = settings.history is History.PERSONAL and place.kind is ConversationKind.CHANNEL
    if request.again or not personal:
        return place
    return replace(place, owner_id=request.author_id)
