"""Interactions and their webhooks: a test invokes a command, autocompletes, clicks a
component or submits a modal; the bot answers through the callback and the interaction's
webhook."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from ._commands import _Commands
from ._messages import SENDABLE_FLAGS, _Messages
from ._modals import submitted_components, typed_values, validate_modal
from ._state import ChannelRef, UserRef
from ._util import (
    CallbackType,
    DiscordError,
    InteractionType,
    MessageFlag,
    OptionType,
    _int,
    empty_reply,
    field_error,
    invalid_form,
    json_reply,
    unknown_interaction,
    unknown_message,
    unknown_webhook,
)
from .model import (
    CallbackRecord,
    FakeChannel,
    FakeRole,
    FakeUser,
    InteractionRecord,
    MessageRecord,
    StoredFile,
    UploadFile,
)


class _Interactions(_Commands, _Messages):
    """INTERACTION_CREATE from test actions, the callback that acknowledges it, and the
    followups and edits through its token."""

    # -----------------------------------------------------------------------------------------
    # Test-side actions
    # -----------------------------------------------------------------------------------------

    def _option_value(
        self,
        channel: FakeChannel,
        otype: int,
        value: Any,
        resolved: dict[str, dict[str, Any]],
    ) -> Any:
        if otype == OptionType.ATTACHMENT:
            if isinstance(value, StoredFile):
                stored = value
            elif isinstance(value, UploadFile):
                stored = self._store_file(
                    channel.id,
                    value.filename,
                    value.data,
                    value.content_type,
                    value.description,
                    ephemeral=True,
                )
            else:
                raise TypeError(f"attachment option needs an UploadFile, not {value!r}")
            resolved.setdefault("attachments", {})[str(stored.id)] = stored.payload()
            return str(stored.id)
        if otype in (OptionType.USER, OptionType.MENTIONABLE) and isinstance(value, FakeUser | int):
            if isinstance(value, int) and value not in self.users:
                return self._option_value(channel, OptionType.ROLE, value, resolved)
            user = self._user(value)
            resolved.setdefault("users", {})[str(user.id)] = user.payload()
            guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
            if guild is not None and user.id in guild.members:
                member = guild.members[user.id].payload(with_user=False)
                member["permissions"] = str(guild.permissions_of(user.id))
                resolved.setdefault("members", {})[str(user.id)] = member
            return str(user.id)
        if otype in (OptionType.ROLE, OptionType.MENTIONABLE):
            role = value if isinstance(value, FakeRole) else None
            if role is None and channel.guild_id is not None:
                role = self._guild(channel.guild_id).roles.get(int(value))
            if role is None:
                raise KeyError(f"unknown role {value!r}")
            resolved.setdefault("roles", {})[str(role.id)] = role.payload()
            return str(role.id)
        if otype == OptionType.CHANNEL:
            target = self._channel(value)
            resolved.setdefault("channels", {})[str(target.id)] = self._channel_payload_for(
                target, self.bot_user
            )
            return str(target.id)
        if otype == OptionType.INTEGER:
            return int(value)
        if otype == OptionType.NUMBER:
            return float(value)
        if otype == OptionType.BOOLEAN:
            return bool(value)
        return str(value)

    @staticmethod
    def _infer_type(value: Any) -> int:
        if isinstance(value, UploadFile | StoredFile):
            return OptionType.ATTACHMENT
        if isinstance(value, bool):
            return OptionType.BOOLEAN
        if isinstance(value, int):
            return OptionType.INTEGER
        if isinstance(value, float):
            return OptionType.NUMBER
        if isinstance(value, FakeUser):
            return OptionType.USER
        if isinstance(value, FakeChannel):
            return OptionType.CHANNEL
        if isinstance(value, FakeRole):
            return OptionType.ROLE
        return OptionType.STRING

    def _build_options(
        self,
        channel: FakeChannel,
        definitions: list[dict[str, Any]] | None,
        values: Mapping[str, Any],
        resolved: dict[str, dict[str, Any]],
        focused: str | None,
    ) -> list[dict[str, Any]]:
        options: list[dict[str, Any]] = []
        by_name = {d["name"]: d for d in definitions or []}
        for name, value in values.items():
            definition = by_name.get(name)
            if definitions is not None and definition is None:
                raise ValueError(f"the command has no option {name!r}")
            if name == focused:
                otype = int(definition["type"]) if definition else OptionType.STRING
                options.append({"name": name, "type": otype, "value": str(value), "focused": True})
                continue
            otype = int(definition["type"]) if definition else self._infer_type(value)
            if definition is not None:
                _check_allowed(definition, value)
            options.append(
                {
                    "name": name,
                    "type": otype,
                    "value": self._option_value(channel, otype, value, resolved),
                }
            )
        if definitions is not None and focused is None:
            missing = [
                d["name"] for d in definitions if d.get("required") and d["name"] not in values
            ]
            if missing:
                raise ValueError(f"required options missing: {missing}")
        return options

    def _interaction(
        self,
        itype: int,
        channel: FakeChannel,
        user: FakeUser,
        data: dict[str, Any],
        *,
        name: str | None = None,
        custom_id: str | None = None,
        message: MessageRecord | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        interaction_id = self.snowflake()
        token = f"aW50ZXJhY3Rpb246{interaction_id}:{secrets.token_urlsafe(48)}"
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "token": token,
            "version": 1,
            "locale": locale,
            "app_permissions": str(self.app_permissions(channel)),
            "attachment_size_limit": self.config.attachment_size_limit,
            "entitlements": [],
            "channel_id": str(channel.id),
            "channel": self._channel_payload_for(channel, user),
        }
        if channel.guild_id is not None:
            guild = self._guild(channel.guild_id)
            member = guild.members.get(user.id)
            if member is None:
                raise ValueError(f"{user.name} is not a member of {guild.name}")
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member={**member.payload(), "permissions": str(self.permissions_in(channel, user))},
                context=0,
                authorizing_integration_owners={"0": str(guild.id)},
            )
        else:
            payload.update(
                user=user.payload(), context=1, authorizing_integration_owners={"1": str(user.id)}
            )
        if message is not None:
            payload["message"] = self.message_payload(message)
        rec = InteractionRecord(
            interaction_id,
            token,
            itype,
            channel.id,
            channel.guild_id,
            user,
            data,
            payload,
            time.monotonic(),
            time.time(),
            self.config.interaction_ack_deadline,
            self.config.interaction_token_lifetime,
            name=name,
            custom_id=custom_id,
            message_id=None if message is None else message.id,
        )
        self.interactions[rec.id] = rec
        self._by_token[token] = rec
        self._dispatch_guild("INTERACTION_CREATE", channel.guild_id, lambda s: payload, 0)
        self._changed()
        return rec

    def _command_data(
        self,
        name: str,
        options: Mapping[str, Any],
        channel: FakeChannel,
        focused: str | None,
    ) -> dict[str, Any]:
        parts = name.split()
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"bad command name {name!r}")
        definition = self._find_command(parts[0], channel.guild_id)
        # Discord does not offer a command outside its contexts (1: the bot's DMs).
        contexts = (definition or {}).get("contexts") or [0, 1]
        if channel.is_dm and 1 not in contexts:
            raise ValueError(f"/{parts[0]} is not offered in direct messages")
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {
            "id": str(definition["id"]) if definition else str(self.snowflake()),
            "name": parts[0],
            "type": 1,
        }
        if definition is not None and definition.get("guild_id"):
            data["guild_id"] = definition["guild_id"]
        defs: list[dict[str, Any]] | None = (
            list(definition.get("options") or []) if definition else None
        )
        container = data
        for depth, part in enumerate(parts[1:], start=1):
            sub_def = None
            if defs is not None:
                sub_def = next((d for d in defs if d["name"] == part), None)
                if sub_def is None or sub_def.get("type") not in (1, 2):
                    raise ValueError(f"{parts[0]!r} has no subcommand {part!r}")
            if sub_def is not None:
                stype = int(sub_def["type"])
            else:
                stype = OptionType.SUB_COMMAND if depth == len(parts) - 1 else 2
            node: dict[str, Any] = {"name": part, "type": stype, "options": []}
            container.setdefault("options", []).append(node)
            container = node
            defs = list(sub_def.get("options") or []) if sub_def is not None else None
        container["options"] = self._build_options(channel, defs, options, resolved, focused)
        if resolved:
            data["resolved"] = resolved
        return data

    async def invoke_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        channel: ChannelRef | None = None,
        user: UserRef | None = None,
        attachments: Mapping[str, UploadFile] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """A user runs ``/name`` (``"config set"`` for a subcommand): INTERACTION_CREATE
        type 2. Option types come from the synced definition (else from the values);
        attachment options take :class:`UploadFile` values (or use ``attachments=``)."""
        ch = self._channel(channel) if channel is not None else self._first_text_channel()
        u = self._user(user) if user is not None else self._first_human(ch.guild_id)
        values = dict(options or {})
        values.update(attachments or {})
        data = self._command_data(name, values, ch, None)
        rec = self._interaction(
            InteractionType.APPLICATION_COMMAND, ch, u, data, name=name, locale=locale
        )
        await self._flush()
        return rec

    async def invoke_autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        channel: ChannelRef | None = None,
        user: UserRef | None = None,
    ) -> InteractionRecord:
        """A user types into option ``focused``: INTERACTION_CREATE type 4. The bot's
        choices land in ``record.autocomplete_choices``."""
        ch = self._channel(channel) if channel is not None else self._first_text_channel()
        u = self._user(user) if user is not None else self._first_human(ch.guild_id)
        values = dict(options)
        values.setdefault(focused, "")
        data = self._command_data(name, values, ch, focused)
        rec = self._interaction(InteractionType.AUTOCOMPLETE, ch, u, data, name=name)
        await self._flush()
        return rec

    async def click_button(
        self,
        message: MessageRecord | int,
        custom_id: str,
        user: UserRef | None = None,
        *,
        values: Sequence[str] | None = None,
    ) -> InteractionRecord:
        """A user clicks a button (or picks ``values`` in a select) on a message:
        INTERACTION_CREATE type 3, with the message included."""
        rec = message if isinstance(message, MessageRecord) else self.message(message)
        ch = self._channel(rec.channel_id)
        u = self._user(user) if user is not None else self._first_human(ch.guild_id)
        if rec.deleted or not rec.visible_for(u.id):
            raise ValueError(f"{u.name} cannot see message {rec.id}")
        component = _find_component(rec.components, custom_id)
        if component is None:
            raise ValueError(f"message {rec.id} has no component {custom_id!r}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] != 2:
            data["values"] = list(values or [])
        interaction = self._interaction(
            InteractionType.MESSAGE_COMPONENT, ch, u, data, custom_id=custom_id, message=rec
        )
        await self._flush()
        return interaction

    async def submit_modal(
        self,
        interaction: InteractionRecord,
        values: Mapping[str, str],
        *,
        user: UserRef | None = None,
    ) -> InteractionRecord:
        """The person fills in and submits the modal the bot opened in answer to
        ``interaction``: INTERACTION_CREATE type 5 (MODAL_SUBMIT) from the same user and
        channel (with the message, when the modal came from a component). ``values`` maps
        text inputs' custom ids to the text typed; inputs left out keep their prefilled
        ``value`` (or ""). Raises ValueError for what Discord's client would not send: no
        modal open, a second submission, another user, a required input left empty, a text
        outside min/max length."""
        modal = interaction.modal
        if modal is None:
            raise ValueError(f"interaction {interaction.id} opened no modal")
        if interaction.modal_submission is not None:
            raise ValueError(f"the modal of interaction {interaction.id} was already submitted")
        u = interaction.user if user is None else self._user(user)
        if u is not interaction.user:
            raise ValueError(f"only {interaction.user.name} sees the modal, not {u.name}")
        ch = self._channel(interaction.channel_id)
        typed = typed_values(modal, values)
        data = {
            "custom_id": modal["custom_id"],
            "components": submitted_components(modal, typed),
        }
        message = self.messages.get(interaction.message_id or 0)
        rec = self._interaction(
            InteractionType.MODAL_SUBMIT,
            ch,
            u,
            data,
            custom_id=str(modal["custom_id"]),
            message=None if message is None or message.deleted else message,
        )
        interaction.modal_submission = rec
        await self._flush()
        return rec

    # -----------------------------------------------------------------------------------------
    # Queries
    # -----------------------------------------------------------------------------------------

    def interaction(self, interaction_id: int | None = None) -> InteractionRecord:
        """The interaction with that id, or the latest one."""
        if interaction_id is None:
            return list(self.interactions.values())[-1]
        return self.interactions[interaction_id]

    # -----------------------------------------------------------------------------------------
    # REST: interactions and their webhooks
    # -----------------------------------------------------------------------------------------

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        rec = self._by_token.get(info["token"])
        if rec is None or str(rec.id) != info["interaction_id"]:
            raise unknown_interaction()
        body = self._body(request)
        now = time.monotonic()
        ctype = int(body.get("type") or 0)
        attempt = CallbackRecord(now, time.time(), ctype, body.get("data"), 0)
        try:
            if rec.callback is not None:
                raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
            if now > rec.created_mono + rec.ack_deadline:
                raise unknown_interaction()
            message = self._apply_callback(request, rec, ctype, body.get("data") or {})
        except DiscordError as err:
            attempt.status, attempt.error_code = err.status, err.code
            rec.rejected.append(attempt)
            raise
        attempt.status = 200
        rec.callback = attempt
        self._changed()
        with_response = request.query.get("with_response", "").lower() in ("1", "true")
        if not with_response:
            return empty_reply()
        reply: dict[str, Any] = {
            "interaction": {
                "id": str(rec.id),
                "type": rec.type,
                "response_message_loading": ctype == CallbackType.DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": bool(message is not None and message.ephemeral),
            },
            "resource": {"type": ctype},
        }
        if message is not None:
            reply["interaction"]["response_message_id"] = str(message.id)
            if ctype in (4, 5, 7):
                reply["resource"]["message"] = self.message_payload(message)
        return json_reply(reply)

    def _apply_callback(
        self, request: web.Request, rec: InteractionRecord, ctype: int, data: dict[str, Any]
    ) -> MessageRecord | None:
        allowed = {
            InteractionType.APPLICATION_COMMAND: (4, 5, 9),
            InteractionType.MESSAGE_COMPONENT: (4, 5, 6, 7, 9),
            InteractionType.AUTOCOMPLETE: (8,),
            InteractionType.MODAL_SUBMIT: (4, 5, 6, 7),
            InteractionType.PING: (1,),
        }[rec.type]
        if ctype not in allowed:
            raise invalid_form(
                field_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid response type")
            )
        channel = self._live_channel(rec.channel_id)
        msg_type = 20 if rec.type == InteractionType.APPLICATION_COMMAND else 0
        if ctype == CallbackType.CHANNEL_MESSAGE:
            rec.original = self._webhook_message(request, rec, channel, data, msg_type)
            return rec.original
        if ctype == CallbackType.DEFERRED_CHANNEL_MESSAGE:
            ephemeral = bool(int(data.get("flags") or 0) & MessageFlag.EPHEMERAL)
            rec.original = self._new_message(
                channel,
                self.bot_user,
                content="",
                flags=MessageFlag.LOADING | (MessageFlag.EPHEMERAL if ephemeral else 0),
                type=msg_type,
                visible_to=rec.user.id if ephemeral else None,
                interaction=rec,
                source="interaction",
            )
            return rec.original
        if ctype in (CallbackType.DEFERRED_UPDATE_MESSAGE, CallbackType.UPDATE_MESSAGE):
            target = self.messages.get(rec.message_id or 0)
            if target is None or target.deleted:
                raise unknown_message()
            rec.original = target
            if ctype == CallbackType.UPDATE_MESSAGE:
                self._apply_edit_body(request, target, data)
            return target
        if ctype == CallbackType.AUTOCOMPLETE_RESULT:
            choices = data.get("choices") or []
            if len(choices) > 25:
                raise invalid_form(
                    field_error(
                        "data.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                    )
                )
            rec.autocomplete_choices = list(choices)
            return None
        if ctype == CallbackType.MODAL:
            rec.modal = validate_modal(data)
            return None
        return None

    def _webhook_message(
        self,
        request: web.Request,
        rec: InteractionRecord,
        channel: FakeChannel,
        data: dict[str, Any],
        msg_type: int,
    ) -> MessageRecord:
        flags = int(data.get("flags") or 0)
        ephemeral = bool(flags & MessageFlag.EPHEMERAL)
        content = self._validate_content(data.get("content"))
        embeds = self._validate_embeds(data.get("embeds"))
        components = self._validate_components(data.get("components"), flags)
        uploaded = self._uploaded(request, data, channel.id, ephemeral=ephemeral)
        files = self._attachment_list(data, uploaded, {}, []) or []
        self._check_not_empty(content, embeds, files, components, data)
        return self._new_message(
            channel,
            self.bot_user,
            content=content,
            embeds=embeds,
            components=components,
            files=files,
            flags=flags & SENDABLE_FLAGS,
            type=msg_type,
            allowed_mentions=data.get("allowed_mentions"),
            visible_to=rec.user.id if ephemeral else None,
            interaction=rec,
            source="interaction",
            tts=bool(data.get("tts")),
        )

    def _webhook_interaction(self, request: web.Request) -> InteractionRecord:
        info = request.match_info
        rec = self._by_token.get(info["token"])
        if rec is None or _int(info["application_id"]) != self.application_id:
            raise unknown_webhook()
        if rec.token_expired:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        return rec

    def _webhook_target(self, request: web.Request, rec: InteractionRecord) -> MessageRecord:
        self._live_channel(rec.channel_id)
        ident = request.match_info["message_id"]
        if ident == "@original":
            target = rec.original
        else:
            target = next((m for m in rec.messages if str(m.id) == ident), None)
        if target is None or target.deleted:
            raise unknown_message()
        return target

    async def _followup(self, request: web.Request) -> web.StreamResponse:
        rec = self._webhook_interaction(request)
        if rec.callback is None:
            raise unknown_webhook()
        channel = self._live_channel(rec.channel_id)
        body = self._body(request)
        original = rec.original
        if original is not None and not original.deleted and original.latest.loading:
            # Discord: the first followup after a deferred (type 5) response replaces the
            # "thinking" message and keeps the defer's visibility.
            self._apply_edit_body(request, original, body, clear_loading=True)
            message = original
            rec.followups.append(message)
        else:
            msg_type = 20 if rec.type == InteractionType.APPLICATION_COMMAND else 0
            message = self._webhook_message(request, rec, channel, body, msg_type)
            rec.followups.append(message)
        self._changed()
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_reply(self.message_payload(message))
        return empty_reply()

    async def _wh_get(self, request: web.Request) -> web.StreamResponse:
        rec = self._webhook_interaction(request)
        return json_reply(self.message_payload(self._webhook_target(request, rec)))

    async def _wh_patch(self, request: web.Request) -> web.StreamResponse:
        rec = self._webhook_interaction(request)
        target = self._webhook_target(request, rec)
        if target.author.id != self.bot_user.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit_body(request, target, self._body(request), clear_loading=True)
        return json_reply(self.message_payload(target))

    async def _wh_delete(self, request: web.Request) -> web.StreamResponse:
        rec = self._webhook_interaction(request)
        target = self._webhook_target(request, rec)
        self._delete(target)
        return empty_reply()


def _check_allowed(definition: Mapping[str, Any], value: Any) -> None:
    """Discord's client sends only what an option allows: one of its choices, a number
    within its range. (ValueError: the person could not have sent this.)"""
    choices = definition.get("choices")
    if choices and value not in [choice["value"] for choice in choices]:
        raise ValueError(f"{value!r} is not a choice of option {definition['name']!r}")
    low, high = definition.get("min_value"), definition.get("max_value")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{value!r} is outside option {definition['name']!r}'s range")


def _find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    for component in components:
        if component.get("custom_id") == custom_id:
            return component
        for key in ("components", "accessory"):
            children = component.get(key)
            if isinstance(children, dict):
                children = [children]
            if isinstance(children, list):
                found = _find_component(children, custom_id)
                if found is not None:
                    return found
    return None
