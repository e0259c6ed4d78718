"""Attachments: files kept byte for byte (from uploads, interaction options and test posts)
and the CDN that serves them."""

from __future__ import annotations

import contextlib
import mimetypes
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from ._permissions import _Permissions
from ._util import DiscordError, Perm, _int, field_error, invalid_form, missing_permissions
from .model import StoredFile


class _Attachments(_Permissions):
    """Stores uploaded files, resolves the attachment list of a create or edit, serves
    files from the CDN."""

    # -----------------------------------------------------------------------------------------
    # Stored files
    # -----------------------------------------------------------------------------------------

    def _store_file(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        description: str | None = None,
        *,
        ephemeral: bool = False,
    ) -> StoredFile:
        file_id = self.snowflake()
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        safe = re.sub(r"[^\w.\-]", "_", filename) or "file"
        path = f"/attachments/{channel_id}/{file_id}/{safe}"
        stored = StoredFile(
            file_id,
            filename,
            bytes(data),
            content_type,
            url=f"{self.base_url}{path}",
            proxy_url=f"{self.base_url}/media{path}",
            description=description,
            ephemeral=ephemeral,
        )
        self.files[file_id] = stored
        return stored

    # -----------------------------------------------------------------------------------------
    # Uploads
    # -----------------------------------------------------------------------------------------

    def _uploaded(
        self,
        request: web.Request,
        body: dict[str, Any],
        channel_id: int,
        *,
        ephemeral: bool = False,
    ) -> dict[int, StoredFile]:
        """Stores the ``files[n]`` parts byte for byte; keyed by n. Uploading takes Attach
        Files, for channel messages and interaction responses alike (``app_permissions``)."""
        parts = self._record(request).files
        uploading = any(re.fullmatch(r"files\[\d+\]", part.name) for part in parts)
        if uploading and not self.app_permissions(channel_id) & Perm.ATTACH_FILES:
            raise missing_permissions()
        descriptions: dict[int, str | None] = {}
        for item in body.get("attachments") or []:
            with contextlib.suppress(TypeError, ValueError, KeyError):
                descriptions[int(item["id"])] = item.get("description")
        out: dict[int, StoredFile] = {}
        for part in parts:
            match = re.fullmatch(r"files\[(\d+)\]", part.name)
            if match is None:
                continue
            if len(part.data) > self.config.attachment_size_limit:
                raise DiscordError(413, 40005, "Request entity too large")
            index = int(match.group(1))
            out[index] = self._store_file(
                channel_id,
                part.filename or f"file{index}",
                part.data,
                part.content_type,
                descriptions.get(index),
                ephemeral=ephemeral,
            )
        return out

    @staticmethod
    def _attachment_list(
        body: dict[str, Any],
        uploaded: dict[int, StoredFile],
        existing: Mapping[int, StoredFile],
        keep_existing: Sequence[StoredFile],
    ) -> list[StoredFile] | None:
        """The attachments a create/edit ends with, or None to leave them unchanged."""
        if "attachments" in body and body["attachments"] is not None:
            result: list[StoredFile] = []
            for item in body["attachments"]:
                ident = int(item["id"])
                if ident in existing:
                    result.append(existing[ident])
                elif ident in uploaded:
                    result.append(uploaded[ident])
                else:
                    raise invalid_form(
                        field_error(
                            "attachments", "ATTACHMENT_NOT_FOUND", f"Unknown attachment {ident}"
                        )
                    )
            return result
        if uploaded:
            return [*keep_existing, *(uploaded[i] for i in sorted(uploaded))]
        return None

    # -----------------------------------------------------------------------------------------
    # CDN
    # -----------------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        stored = self.files.get(_int(request.match_info["file_id"]))
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})
