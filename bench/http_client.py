"""Keep-alive HTTP/1.1 POST clients: raw asyncio streams (light) or httpx (reference)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import httpx


class Poster(Protocol):
    """POSTs a JSON body to /graphql on one keep-alive connection; (status, body)."""

    async def post(self, body: bytes) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class RawPoster:
    """HTTP/1.1 over asyncio streams; reconnects after an error or `Connection: close`."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self._host, self._port = host, port
        self._head = (f"POST /graphql HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      "Accept: application/json\r\n").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        try:
            self._writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_head(head)
            if "content-length" in headers:
                payload = await self._reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                payload = await _read_chunked(self._reader)
            else:
                raise ConnectionError("response without a length")
        except BaseException:
            await self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class HttpxPoster:
    """httpx.AsyncClient sharing one keep-alive pool across the clients."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(self, body: bytes) -> tuple[int, bytes]:
        response = await self._client.post("/graphql", content=body)
        return response.status_code, response.content

    async def close(self) -> None:
        return None


def httpx_client(host: str, port: int, token: str, clients: int) -> httpx.AsyncClient:
    """One pool with a keep-alive connection per client."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    return httpx.AsyncClient(
        base_url=f"http://{host}:{port}", limits=limits, timeout=120.0,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
