"""HTTP control and record endpoints under ``/_fake/``, for driving the fake from another
process (a benchmark). Times are ``time.time()`` wall-clock seconds (``mono`` fields are the
fake's own ``time.monotonic()``). ``GET /_fake/state?latest=1`` shows each message's newest
version only."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._util import json_reply
from .model import MessageRecord

if TYPE_CHECKING:
    from .server import FakeDiscord


def info(fake: FakeDiscord) -> dict[str, Any]:
    guilds = [
        {
            "id": str(g.id),
            "name": g.name,
            "channel_ids": [str(c) for c in g.channel_ids if not fake.channels[c].is_thread],
        }
        for g in fake.guilds.values()
    ]
    return {
        "api_base": fake.api_base,
        "gateway_url": fake.gateway_url,
        "control_base": f"{fake.base_url}/_fake",
        "token": fake.token,
        "application_id": str(fake.application_id),
        "bot_user_id": str(fake.bot_user.id),
        "guild_id": guilds[0]["id"] if guilds else None,
        "channel_ids": guilds[0]["channel_ids"] if guilds else [],
        "guilds": guilds,
        "users": {u.name: str(u.id) for u in fake.users.values()},
    }


def _button_labels(components: list[dict[str, Any]]) -> list[str]:
    return [
        str(item.get("label", ""))
        for row in components
        for item in row.get("components", [])
        if item.get("type") == 2
    ]


def message_state(rec: MessageRecord, *, latest: bool = False) -> dict[str, Any]:
    """A message as the control routes show it; with ``latest``, only its newest version."""
    return {
        "id": str(rec.id),
        "channel_id": str(rec.channel_id),
        "author_id": str(rec.author.id),
        "author_bot": rec.author.bot,
        "source": rec.source,
        "created": rec.created_wall,
        "created_mono": rec.created_mono,
        "deleted": rec.deleted_wall,
        "ephemeral": rec.ephemeral,
        "interaction_id": None if rec.interaction_id is None else str(rec.interaction_id),
        "reference_id": None if rec.reference is None else rec.reference.get("message_id"),
        "mention_ids": [str(u) for u in rec.mention_ids],
        "versions": [
            {
                "t": v.wall,
                "mono": v.mono,
                "content": v.content,
                "flags": v.flags,
                "embeds": len(v.embeds),
                "components": len(v.components),
                "buttons": _button_labels(v.components),
                "attachments": v.attachment_names,
            }
            for v in (rec.versions[-1:] if latest else rec.versions)
        ],
    }


def state(
    fake: FakeDiscord, *, channel_id: int | None, since: float | None, latest: bool = False
) -> dict[str, Any]:
    messages = [
        message_state(m, latest=latest)
        for m in sorted(fake.messages.values(), key=lambda m: m.id)
        if (channel_id is None or m.channel_id == channel_id)
        and (since is None or m.created_wall >= since or m.latest.wall >= since)
    ]
    return {
        "now": time.time(),
        "messages": messages,
        "requests": len(fake.requests),
        "requests_by_route": dict(Counter(r.route for r in fake.requests)),
        "status_counts": {str(k): v for k, v in Counter(r.status for r in fake.requests).items()},
        "rate_limited": fake.rate_limited_count,
        "write_faults": dict(fake.write_faults),
        "identify_count": fake.identify_count,
        "resume_count": fake.resume_count,
        "gateway_connected": fake.gateway_connected,
        "interactions": [
            {
                "id": str(i.id),
                "name": i.name,
                "custom_id": i.custom_id,
                "created": i.created_wall,
                "callback_type": i.response_type,
                "ack_latency": i.ack_latency,
                "original_id": None if i.original is None else str(i.original.id),
                "followup_ids": [str(m.id) for m in i.followups],
                "errors": [list(e) for e in i.errors],
            }
            for i in fake.interactions.values()
        ],
    }


def add_control_routes(app: web.Application, fake: FakeDiscord) -> None:
    async def get_info(request: web.Request) -> web.StreamResponse:
        return json_reply(info(fake))

    async def get_state(request: web.Request) -> web.StreamResponse:
        channel = request.query.get("channel_id")
        since = request.query.get("since")
        return json_reply(
            state(
                fake,
                channel_id=int(channel) if channel else None,
                since=float(since) if since else None,
                latest=request.query.get("latest") == "1",
            )
        )

    async def get_requests(request: web.Request) -> web.StreamResponse:
        return json_reply(
            [
                {
                    "t": r.wall,
                    "mono": r.mono,
                    "method": r.method,
                    "route": r.route,
                    "path": r.path,
                    "status": r.status,
                    "bucket": r.bucket,
                    "rate_limited": r.rate_limited,
                    "scope": r.scope,
                    "duration": r.duration,
                }
                for r in fake.requests
            ]
        )

    async def post_message(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        channel_id = int(body["channel_id"])
        author_id = body.get("author_id")
        channel = fake.channels[channel_id]
        author = fake.users[int(author_id)] if author_id else fake._first_human(channel.guild_id)
        mentions = [fake.bot_user] if body.get("mention_bot", True) else []
        reference = body.get("reference_id")
        rec = await fake.post_message(
            channel_id,
            author,
            str(body.get("content", "")),
            mentions=mentions,
            reference=int(reference) if reference else None,
        )
        return json_reply({"id": str(rec.id), "created": rec.created_wall}, 201)

    async def post_command(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        user_id = body.get("user_id")
        rec = await fake.invoke_command(
            str(body["name"]),
            body.get("options") or {},
            channel=int(body["channel_id"]) if body.get("channel_id") else None,
            user=int(user_id) if user_id else None,
        )
        return json_reply({"interaction_id": str(rec.id), "created": rec.created_wall}, 201)

    async def drop_gateway(request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else {}
        await fake.drop_gateway(int(body.get("code", 4000)), resumable=body.get("resumable", True))
        return json_reply({"ok": True})

    async def reset(request: web.Request) -> web.StreamResponse:
        fake.reset_records()
        return json_reply({"ok": True})

    r = app.router
    r.add_get("/_fake/info", get_info)
    r.add_get("/_fake/state", get_state)
    r.add_get("/_fake/requests", get_requests)
    r.add_post("/_fake/messages", post_message)
    r.add_post("/_fake/commands", post_command)
    r.add_post("/_fake/drop_gateway", drop_gateway)
    r.add_post("/_fake/reset", reset)
