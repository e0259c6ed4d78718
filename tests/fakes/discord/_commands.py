"""Application commands: registered over REST (checked as Discord checks them) and looked up
when a test invokes one."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ._guilds import _Guilds
from ._state import GuildRef
from ._util import DiscordError, _int, field_error, invalid_form, json_reply

COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")


class _Commands(_Guilds):
    """The global and per-guild command stores and their REST routes."""

    # -----------------------------------------------------------------------------------------
    # Lookup
    # -----------------------------------------------------------------------------------------

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        if guild_id is not None:
            for cmd in self.guild_commands.get(guild_id, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        for cmd in self.global_commands:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        return None

    # -----------------------------------------------------------------------------------------
    # Queries
    # -----------------------------------------------------------------------------------------

    def registered_commands(self, guild: GuildRef | None = None) -> list[dict[str, Any]]:
        if guild is None:
            return list(self.global_commands)
        return list(self.guild_commands.get(self._guild(guild).id, []))

    # -----------------------------------------------------------------------------------------
    # REST: application commands
    # -----------------------------------------------------------------------------------------

    def _command_store(self, request: web.Request) -> list[dict[str, Any]]:
        if _int(request.match_info["application_id"]) != self.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        if "guild_id" not in request.match_info:
            return self.global_commands
        guild = self._bot_guild(request)
        return self.guild_commands.setdefault(guild.id, [])

    def _validate_command(self, index: str, cmd: Any) -> None:
        if not isinstance(cmd, dict):
            raise invalid_form(field_error(index, "DICT_TYPE_CONVERT", "Must be an object."))
        ctype = int(cmd.get("type") or 1)
        name = str(cmd.get("name") or "")
        prefix = f"{index}." if index else ""
        if not COMMAND_NAME.match(name) or (ctype == 1 and name != name.lower()):
            raise invalid_form(
                field_error(
                    f"{prefix}name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            )
        if ctype == 1:
            description = str(cmd.get("description") or "")
            if not 1 <= len(description) <= 100:
                raise invalid_form(
                    field_error(
                        f"{prefix}description",
                        "BASE_TYPE_BAD_LENGTH",
                        "Must be between 1 and 100 in length.",
                    )
                )
        self._validate_options(f"{prefix}options", cmd.get("options") or [])

    def _validate_options(self, where: str, options: list[dict[str, Any]]) -> None:
        if len(options) > 25:
            raise invalid_form(
                field_error(where, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            )
        seen_optional = False
        names: set[str] = set()
        for i, opt in enumerate(options):
            name = str(opt.get("name") or "")
            if not COMMAND_NAME.match(name) or name != name.lower():
                raise invalid_form(
                    field_error(
                        f"{where}.{i}.name",
                        "APPLICATION_COMMAND_INVALID_NAME",
                        "Command name is invalid",
                    )
                )
            if name in names:
                raise invalid_form(
                    field_error(
                        f"{where}.{i}.name",
                        "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                        "Option names must be unique",
                    )
                )
            names.add(name)
            description = str(opt.get("description") or "")
            if not 1 <= len(description) <= 100:
                raise invalid_form(
                    field_error(
                        f"{where}.{i}.description",
                        "BASE_TYPE_BAD_LENGTH",
                        "Must be between 1 and 100 in length.",
                    )
                )
            if opt.get("type") in (1, 2):
                self._validate_options(f"{where}.{i}.options", opt.get("options") or [])
                continue
            if opt.get("required"):
                if seen_optional:
                    raise invalid_form(
                        field_error(
                            f"{where}.{i}.required",
                            "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                            "Required options must be placed before non-required options",
                        )
                    )
            else:
                seen_optional = True
            if len(opt.get("choices") or []) > 25:
                raise invalid_form(
                    field_error(
                        f"{where}.{i}.choices",
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 25 or fewer in length.",
                    )
                )

    def _stored_command(
        self, cmd: dict[str, Any], store: list[dict[str, Any]], guild_id: str | None
    ) -> dict[str, Any]:
        ctype = int(cmd.get("type") or 1)
        old = next((c for c in store if c["name"] == cmd["name"] and c["type"] == ctype), None)
        stored: dict[str, Any] = {
            "id": old["id"] if old else str(self.snowflake()),
            "application_id": str(self.application_id),
            "version": str(self.snowflake()),
            "default_member_permissions": None,
            "type": ctype,
            "nsfw": False,
            "description": "",
            "options": [],
            "contexts": None,
            "integration_types": [0],
            **cmd,
        }
        stored["type"] = ctype
        # Sent as a number or a string, kept and returned as a string (a permission bitfield).
        if stored["default_member_permissions"] is not None:
            stored["default_member_permissions"] = str(stored["default_member_permissions"])
        if guild_id is not None:
            stored["guild_id"] = guild_id
        else:
            stored.setdefault("dm_permission", True)
        return stored

    async def _get_commands(self, request: web.Request) -> web.StreamResponse:
        return json_reply(self._command_store(request))

    async def _put_commands(self, request: web.Request) -> web.StreamResponse:
        store = self._command_store(request)
        body = self._record(request).payload or []
        if not isinstance(body, list):
            raise invalid_form(field_error("_root", "BASE_TYPE_ARRAY", "Must be an array."))
        seen: set[tuple[str, int]] = set()
        for i, cmd in enumerate(body):
            self._validate_command(str(i), cmd)
            key = (cmd["name"], int(cmd.get("type") or 1))
            if key in seen:
                raise invalid_form(
                    field_error(
                        f"{i}.name",
                        "APPLICATION_COMMAND_ALREADY_EXISTS",
                        "Application command names must be unique",
                    )
                )
            seen.add(key)
        guild_id = request.match_info.get("guild_id")
        new = [self._stored_command(cmd, store, guild_id) for cmd in body]
        store[:] = new
        self._changed()
        return json_reply(new)

    async def _post_command(self, request: web.Request) -> web.StreamResponse:
        store = self._command_store(request)
        body = self._body(request)
        self._validate_command("", body)
        stored = self._stored_command(body, store, request.match_info.get("guild_id"))
        existed = any(c["id"] == stored["id"] for c in store)
        store[:] = [c for c in store if c["id"] != stored["id"]] + [stored]
        self._changed()
        return json_reply(stored, 200 if existed else 201)
