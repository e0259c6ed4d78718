"""FakeDiscord: Discord's REST API, gateway and CDN on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import yarl
from aiohttp import BodyPartReader, web

from ._gateway import _Gateway
from ._interactions import _Interactions
from ._ratelimit import _RateLimits
from ._state import _RECORD, API_PREFIX
from ._threads import _Threads
from ._util import DiscordError, json_reply
from .config import FakeDiscordConfig
from .model import MultipartPart, RequestRecord

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Pointer:
    """Returned by :meth:`FakeDiscord.point_client_here`: restores discord.py on exit."""

    def __init__(self, api_base: str, gateway_url: str) -> None:
        import discord.gateway
        import discord.http

        self._route = discord.http.Route
        self._ws = discord.gateway.DiscordWebSocket
        self._old_base = self._route.BASE
        self._old_gateway = self._ws.DEFAULT_GATEWAY
        self._route.BASE = api_base
        self._ws.DEFAULT_GATEWAY = yarl.URL(gateway_url)
        self.active = True

    def restore(self) -> None:
        if self.active:
            self._route.BASE = self._old_base
            self._ws.DEFAULT_GATEWAY = self._old_gateway
            self.active = False

    def __enter__(self) -> _Pointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()


class FakeDiscord(_Interactions, _Threads, _Gateway, _RateLimits):
    """A wire-level fake of Discord. Start it, point discord.py at it, drive it from tests.

    ::

        async with FakeDiscord() as fake:
            guild = fake.add_guild("Test", channels=["general"])
            with fake.point_client_here():
                await bot.login(fake.token)
                ...
    """

    def __init__(self, config: FakeDiscordConfig | None = None) -> None:
        super().__init__(config)
        self._runner: web.AppRunner | None = None
        self._pointer: _Pointer | None = None

        self.bot_user = self.add_user(self.config.bot_name, bot=True)
        self.application_id = self.bot_user.id
        self.owner = self.add_user("owner")

    # -----------------------------------------------------------------------------------------
    # Lifecycle
    # -----------------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = self._build_app()
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        self.port = int(sock.getsockname()[1])
        site = web.SockSite(self._runner, sock)
        await site.start()
        return self

    async def stop(self) -> None:
        if self._pointer is not None:
            self._pointer.restore()
            self._pointer = None
        for conn in list(self.connections):
            await conn.close(1001)
            await conn.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def point_client_here(self) -> _Pointer:
        """Points discord.py (``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY``) at this
        fake now; the returned object restores both on ``restore()`` or as a context manager
        (and :meth:`stop` restores them too)."""
        if self.port == 0:
            raise RuntimeError("start the fake first")
        if self._pointer is not None:
            self._pointer.restore()
        self._pointer = _Pointer(self.api_base, self.gateway_url)
        return self._pointer

    # -----------------------------------------------------------------------------------------
    # Queries
    # -----------------------------------------------------------------------------------------

    def requests_for(
        self,
        route: str | None = None,
        *,
        method: str | None = None,
        status: int | None = None,
        kind: str | None = None,
    ) -> list[RequestRecord]:
        """Recorded requests; ``route`` matches the template (``"PATCH
        /channels/{channel_id}/messages/{message_id}"``) or a substring of it or the path."""
        out = []
        for r in self.requests:
            if method is not None and r.method != method.upper():
                continue
            if status is not None and r.status != status:
                continue
            if kind is not None and r.kind != kind:
                continue
            if (
                route is not None
                and route != r.route
                and route not in r.route
                and route not in r.path
            ):
                continue
            out.append(r)
        return out

    def request_counts(self) -> Counter[str]:
        return Counter(r.route for r in self.requests)

    def reset_records(self) -> None:
        """Forgets recorded requests, 429 counts, injected failures (and rate-limit windows)."""
        self.requests.clear()
        self.rate_limited_count = 0
        self.write_faults.clear()
        self._limiter.reset()
        self._changed()

    # -----------------------------------------------------------------------------------------
    # HTTP plumbing
    # -----------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        fake = self

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await fake._handle(request, handler)

        app = web.Application(middlewares=[middleware], client_max_size=1024**3)
        r = app.router
        a = API_PREFIX
        r.add_get("/gateway", self._gateway)
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/users/{user_id}", self._get_user),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("PATCH", "/channels/{channel_id}", self._patch_channel),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("POST", "/channels/{channel_id}/threads", self._start_thread),
            (
                "POST",
                "/channels/{channel_id}/messages/{message_id}/threads",
                self._start_thread,
            ),
            ("PUT", "/channels/{channel_id}/thread-members/@me", self._join_thread),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._put_reaction,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._delete_reaction,
            ),
            ("GET", "/applications/{application_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/commands", self._put_commands),
            ("POST", "/applications/{application_id}/commands", self._post_command),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._get_commands,
            ),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._put_commands,
            ),
            (
                "POST",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._post_command,
            ),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{application_id}/{token}", self._followup),
            ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", self._wh_get),
            ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", self._wh_patch),
            (
                "DELETE",
                "/webhooks/{application_id}/{token}/messages/{message_id}",
                self._wh_delete,
            ),
        ]
        for method, path, handler in routes:
            r.add_route(method, a + path, handler)
        r.add_get("/attachments/{channel_id}/{file_id}/{filename}", self._cdn)
        r.add_get("/media/attachments/{channel_id}/{file_id}/{filename}", self._cdn)
        from .control import add_control_routes

        add_control_routes(app, self)
        return app

    async def _read_body(self, request: web.Request) -> tuple[Any, list[MultipartPart]]:
        if request.content_type.startswith("multipart/"):
            parts: list[MultipartPart] = []
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue
                data = await part.read(decode=False)
                parts.append(
                    MultipartPart(
                        part.name or "",
                        part.filename,
                        part.headers.get("Content-Type"),
                        bytes(data),
                    )
                )
            return None, parts
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/gateway" or path.startswith("/_fake/"):
            return await handler(request)
        start = time.monotonic()
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else path
        if template.startswith(API_PREFIX):
            rel = template[len(API_PREFIX) :]
            kind = "webhook" if rel.startswith(("/interactions/", "/webhooks/")) else "bot"
        elif path.startswith(API_PREFIX):
            rel, kind = path[len(API_PREFIX) :], "bot"
        else:
            rel = template
            kind = "cdn" if path.startswith(("/attachments/", "/media/")) else "other"
        record = RequestRecord(
            mono=start,
            wall=time.time(),
            method=request.method,
            path=path,
            route=f"{request.method} {rel}",
            kind=kind,
            query=dict(request.query),
            headers=dict(request.headers),
        )
        self.requests.append(record)
        extra_headers: dict[str, str] = {}
        try:
            try:
                record.json, record.parts = await self._read_body(request)
            finally:
                request[_RECORD] = record
            if self.config.latency > 0:
                await asyncio.sleep(self.config.latency)
            if kind == "bot" and request.headers.get("Authorization") != f"Bot {self.config.token}":
                raise DiscordError(401, 0, "401: Unauthorized")
            limited = self._write_fault(record)
            if limited is None and kind == "bot":
                limited = self._limit_bot(request, record, extra_headers)
            elif limited is None and kind == "webhook":
                limited = self._limit_webhook(request, record, extra_headers)
            if limited is not None:
                response: web.StreamResponse = limited
            else:
                response = await handler(request)
                if kind == "bot" and self.config.bot_reply_delay > 0:
                    await asyncio.sleep(self.config.bot_reply_delay)
        except DiscordError as err:
            response = json_reply(err.body(), err.status)
            self._note_interaction_error(request, record, err)
        except web.HTTPException as exc:
            if exc.status in (404, 405) and kind in ("bot", "webhook"):
                response = json_reply(
                    {"message": f"{exc.status}: {exc.reason}", "code": 0}, exc.status
                )
            else:
                raise
        for key, value in extra_headers.items():
            response.headers.setdefault(key, value)
        record.status = response.status
        record.duration = time.monotonic() - start
        if isinstance(response, web.Response) and response.content_type == "application/json":
            body = response.body
            if isinstance(body, bytes):
                record.response = json.loads(body)
        self._changed()
        return response

    def _note_interaction_error(
        self, request: web.Request, record: RequestRecord, err: DiscordError
    ) -> None:
        token = request.match_info.get("token")
        if token is None:
            return
        rec = self._by_token.get(token)
        if rec is not None:
            rec.errors.append((record.route, err.code))
