"""Browsers on other origins: CORS from STOCKYARD_CORS_ORIGINS, in front of every route."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from api.app import build_app
from api.fast_lane import FastLane
from domain.events import Event
from domain.models import Role
from domain.services import tokens
from domain.settings import Settings
from tests.conftest import Database

pytestmark = pytest.mark.anyio

SHOP = "https://shop.example"
QUERY = {"query": "{ __typename }"}


@contextlib.asynccontextmanager
async def client(db: Database, origins: Sequence[str] = ()) -> AsyncIterator[httpx.AsyncClient]:
    events: list[Event] = []
    app = build_app(db.engine, events.append, cors_origins=origins)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c
    finally:
        app.state.threads.close()


def preflight(origin: str = SHOP,
              headers: str = "authorization, content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


@pytest.mark.parametrize("path", ["/graphql", "/healthz"])
async def test_a_preflight_from_a_listed_origin_is_answered(db: Database, path: str) -> None:
    async with client(db, [SHOP, "http://localhost:3000"]) as c:
        response = await c.options(path, headers=preflight())
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    allowed = response.headers["access-control-allow-headers"].lower().split(", ")
    assert {"authorization", "content-type", "x-request-id",
            "apollo-require-preflight"} <= set(allowed)
    assert response.headers["access-control-max-age"] == "7200"


async def test_apollo_clients_preflight(db: Database) -> None:
    async with client(db, [SHOP]) as c:
        response = await c.options("/graphql", headers=preflight(
            headers="apollo-require-preflight, x-apollo-operation-name, x-request-id"))
    assert response.status_code == 200, response.text


async def test_an_unknown_origin_is_not_allowed(db: Database) -> None:
    async with client(db, [SHOP]) as c:
        refused = await c.options("/graphql", headers=preflight(origin="https://evil.example"))
        posted = await c.post("/graphql", json=QUERY, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    assert refused.status_code == 400
    assert posted.status_code == 200
    assert "access-control-allow-origin" not in posted.headers


async def test_a_header_not_allowed_fails_the_preflight(db: Database) -> None:
    async with client(db, [SHOP]) as c:
        response = await c.options("/graphql", headers=preflight(headers="x-secret"))
    assert response.status_code == 400


async def test_a_post_from_a_listed_origin_goes_through_the_fast_lane(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[bool] = []
    respond = FastLane.respond

    async def spy(self: FastLane, request: Request) -> Response | None:
        response = await respond(self, request)
        answered.append(response is not None)
        return response

    monkeypatch.setattr(FastLane, "respond", spy)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    async with client(db, [SHOP]) as c:
        response = await c.post("/graphql", json=QUERY, headers={
            "Origin": SHOP, "Authorization": f"Bearer {token}"})
        health = await c.get("/healthz", headers={"Origin": SHOP})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers["vary"]
    assert answered == [True]
    assert health.headers["access-control-allow-origin"] == SHOP


async def test_cors_changes_no_byte_of_the_answer(db: Database) -> None:
    """Besides Access-Control-* and Vary, the same status, headers and body as without."""
    token = tokens.create_token(db.uow(), Role.ADMIN)
    sent = {"Origin": SHOP, "Authorization": f"Bearer {token}"}
    answers = []
    for origins in ((), (SHOP,)):
        async with client(db, origins) as c:
            answers.append([await c.post("/graphql", json=QUERY, headers=sent),
                            await c.post("/graphql", content=b"{", headers=sent),
                            await c.post("/graphql", json=QUERY,
                                         headers={**sent, "Authorization": "Bearer nope"})])
    for plain, cors in zip(*answers, strict=True):
        assert (cors.status_code, cors.content) == (plain.status_code, plain.content)
        assert [h for h in cors.headers.multi_items()
                if not h[0].startswith("access-control-")
                and h[0] not in ("vary", "x-request-id")] \
            == [h for h in plain.headers.multi_items() if h[0] != "x-request-id"]
        assert cors.headers["access-control-expose-headers"] == "X-Request-Id"


async def test_a_wildcard_allows_any_origin_without_credentials(db: Database) -> None:
    token = tokens.create_token(db.uow(), Role.ADMIN)
    async with client(db, ["*"]) as c:
        checked = await c.options("/graphql", headers=preflight(origin="https://any.example"))
        posted = await c.post("/graphql", json=QUERY, headers={
            "Origin": "https://any.example", "Authorization": f"Bearer {token}"})
    assert checked.status_code == 200, checked.text
    assert checked.headers["access-control-allow-origin"] == "*"
    assert "authorization" in checked.headers["access-control-allow-headers"].lower()
    assert posted.status_code == 200, posted.text
    assert posted.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in checked.headers
    assert "access-control-allow-credentials" not in posted.headers


async def test_by_default_no_cors_header_at_all(db: Database) -> None:
    async with client(db, Settings.from_env({}).cors_origins) as c:
        checked = await c.options("/graphql", headers=preflight())
        posted = await c.post("/graphql", json=QUERY, headers={"Origin": SHOP})
        health = await c.get("/healthz", headers={"Origin": SHOP})
    assert checked.status_code == 405  # as before: no preflight is answered
    for response in (checked, posted, health):
        assert cors_headers(response) == {}
        assert "vary" not in response.headers


@pytest.mark.parametrize(("value", "origins"), [
    ("", ()),
    ("  ", ()),
    (" , ,", ()),
    ("https://shop.example", ("https://shop.example",)),
    (" https://shop.example ,http://localhost:3000,, ",
     ("https://shop.example", "http://localhost:3000")),
    ("https://a.example,https://a.example", ("https://a.example",)),
    ("*", ("*",)),
])
def test_origins_are_read_from_the_environment(value: str, origins: tuple[str, ...]) -> None:
    assert Settings.from_env({"STOCKYARD_CORS_ORIGINS": value}).cors_origins == origins


def test_no_origins_when_unset() -> None:
    assert Settings.from_env({}).cors_origins == ()


@pytest.mark.parametrize("value", ["https://shop.example/", "shop.example",
                                   "https://shop.example/app", "ftp://shop.example"])
def test_what_is_not_an_origin_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="STOCKYARD_CORS_ORIGINS"):
        Settings.from_env({"STOCKYARD_CORS_ORIGINS": value})
