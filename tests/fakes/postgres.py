"""A PostgreSQL server that refuses every login, over TLS if asked: enough of the wire protocol
(https://www.postgresql.org/docs/current/protocol-flow.html) to show what a client does when
the server rejects its password, which the local test server (trust auth) never does."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

_SSL_REQUEST = 80877103
_PROTOCOL_3 = 196608


def self_signed_certificate(folder: Path, *, names: str) -> tuple[Path, Path]:
    """A certificate and its key, valid for `names` (`IP:127.0.0.1`, `DNS:db.example.com`)."""
    certificate, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(certificate), "-subj", "/CN=fake-postgres"),
            *("-addext", f"subjectAltName={names}"),
        ],
        check=True,
        capture_output=True,
    )
    return certificate, key


@contextlib.asynccontextmanager
async def refusing_postgres(
    certificate: tuple[Path, Path] | None = None,
) -> AsyncIterator[int]:
    """Listen on 127.0.0.1; yield the port. Every login gets SQLSTATE 28P01, as a server
    with password authentication answers a wrong password."""
    context = None
    if certificate is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            if code == _SSL_REQUEST:
                writer.write(b"S" if context is not None else b"N")
                await writer.drain()
                if context is not None:
                    await writer.start_tls(context)
                length, code = struct.unpack("!ii", await reader.readexactly(8))
            assert code == _PROTOCOL_3
            parameters = (await reader.readexactly(length - 8)).split(b"\0")
            user = parameters[parameters.index(b"user") + 1].decode()
            fields = {
                b"S": b"FATAL",
                b"V": b"FATAL",
                b"C": b"28P01",
                b"M": f'password authentication failed for user "{user}"'.encode(),
            }
            body = b"".join(key + value + b"\0" for key, value in fields.items()) + b"\0"
            writer.write(b"E" + struct.pack("!i", len(body) + 4) + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
