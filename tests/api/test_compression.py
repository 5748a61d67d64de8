"""Compression: br or gzip when the client asks, for bodies of 500 bytes or more."""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import brotli
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from api.app import build_app
from domain.events import Event
from domain.models import Role
from domain.services import tokens
from domain.settings import Limits
from tests.conftest import Database
from tests.factories import World

pytestmark = pytest.mark.anyio

SHOP = "https://shop.example"
BIG = "{ sellers(first: 100) { edges { cursor node { id name } } } }"
SMALL = "{ __typename }"
DECODE: dict[str, Callable[[bytes], bytes]] = {"br": brotli.decompress, "gzip": gzip.decompress}


@contextlib.asynccontextmanager
async def client(db: Database, origins: Sequence[str] = (),
                 limits: Limits = Limits()) -> AsyncIterator[httpx.AsyncClient]:
    events: list[Event] = []
    app = build_app(db.engine, events.append, cors_origins=origins, limits=limits)
    transport = httpx.ASGITransport(app=app)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     headers={"Authorization": f"Bearer {token}"}) as c:
            yield c
    finally:
        app.state.threads.close()


async def post(c: httpx.AsyncClient, query: str, accept_encoding: str | None,
               **headers: str) -> tuple[httpx.Response, bytes]:
    """The response and its body as sent (not decoded); no Accept-Encoding with None."""
    request = c.build_request("POST", "/graphql", json={"query": query}, headers=headers)
    if accept_encoding is None:
        del request.headers["Accept-Encoding"]
    else:
        request.headers["Accept-Encoding"] = accept_encoding
    response = await c.send(request, stream=True)
    raw = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    return response, raw


def sellers(db: Database, count: int = 30) -> None:
    world = World(db)
    for i in range(count):
        world.seller(f"seller number {i:03d} of the compression test")


@pytest.mark.parametrize(("asked", "encoding"), [
    ("br", "br"), ("gzip", "gzip"), ("gzip, deflate, br", "br"), ("deflate, gzip", "gzip")])
async def test_a_big_answer_is_compressed_as_the_client_asks(
        db: Database, asked: str, encoding: str) -> None:
    sellers(db)
    async with client(db) as c:
        plain, plain_body = await post(c, BIG, None)
        packed, packed_body = await post(c, BIG, asked)

    assert plain.status_code == packed.status_code == 200
    assert len(plain_body) > 500
    assert packed.headers["content-encoding"] == encoding
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert int(packed.headers["content-length"]) == len(packed_body) < len(plain_body)
    assert json.loads(DECODE[encoding](packed_body)) == json.loads(plain_body)
    assert "errors" not in json.loads(plain_body)


@pytest.mark.parametrize("asked", [None, "identity", "deflate"])
async def test_a_client_that_does_not_ask_gets_the_body_as_it_is(
        db: Database, asked: str | None) -> None:
    sellers(db)
    async with client(db) as c:
        response, body = await post(c, BIG, asked)

    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers  # passed straight through
    assert int(response.headers["content-length"]) == len(body) > 500
    assert len(json.loads(body)["data"]["sellers"]["edges"]) == 30


async def test_a_small_answer_is_not_compressed(db: Database) -> None:
    async with client(db) as c:
        response, body = await post(c, SMALL, "br, gzip")

    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert json.loads(body) == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("encoding", ["br", "gzip"])
async def test_compressed_answers_keep_cors_and_request_id(db: Database, encoding: str) -> None:
    sellers(db)
    async with client(db, [SHOP]) as c:
        response, body = await post(c, BIG, encoding, Origin=SHOP,
                                    **{"X-Request-Id": "compressed-1"})

    assert response.headers["content-encoding"] == encoding
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["access-control-expose-headers"] == "X-Request-Id"
    assert response.headers["x-request-id"] == "compressed-1"
    assert len(json.loads(DECODE[encoding](body))["data"]["sellers"]["edges"]) == 30


async def test_a_body_over_the_limit_is_still_413_with_its_request_id(db: Database) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * 1_000

    async with client(db, limits=Limits(body_bytes=2_000)) as c:
        sized = await c.post("/graphql", content=b" " * 2_001,
                             headers={"Accept-Encoding": "br, gzip",
                                      "Content-Type": "application/json"})
        counted = await c.post("/graphql", content=chunked(),
                               headers={"Accept-Encoding": "br, gzip",
                                        "Content-Type": "application/json"})

    for response in (sized, counted):
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
        assert response.headers["x-request-id"]


@pytest.mark.parametrize("encoding", ["br", "gzip"])
async def test_each_part_of_a_stream_is_sent_as_it_comes(db: Database, encoding: str) -> None:
    """Multipart answers (incremental delivery, subscriptions) are flushed part by part:
    each message decodes whole before the next is produced."""
    parts = [f"--graphql\r\nContent-Type: application/json\r\n\r\n"
             f'{{"payload": {{"data": {{"n": {i}, "pad": "{"x" * 300}"}}}}}}\r\n'.encode()
             for i in range(4)]

    async def stream(_request: Request) -> StreamingResponse:
        async def produce() -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        return StreamingResponse(produce(), media_type='multipart/mixed; boundary="graphql"')

    events: list[Event] = []
    served = build_app(db.engine, events.append)
    served.state.threads.close()
    app = Starlette(routes=[Route("/stream", stream)], middleware=served.user_middleware)
    sent: list[dict[str, Any]] = []

    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if requested:  # the client stays connected: the response ends the exchange
            await anyio.sleep_forever()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/stream", "raw_path": b"/stream",
             "query_string": b"", "root_path": "", "server": ("testserver", 80),
             "client": ("127.0.0.1", 1234),
             "headers": [(b"host", b"testserver"), (b"accept-encoding", encoding.encode())]}
    await app(scope, receive, send)  # type: ignore[arg-type]

    start, *bodies = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert headers["content-encoding"] == encoding
    assert headers["x-request-id"]
    if encoding == "br":
        decoder = brotli.Decompressor()
        decode: Callable[[bytes], bytes] = decoder.process
    else:
        decode = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    assert [decode(m["body"]) for m in bodies[:len(parts)]] == parts
    assert b"".join(decode(m["body"]) for m in bodies[len(parts):]) == b""
