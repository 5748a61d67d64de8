"""Conventions clients' tools rely on: DateTime names RFC 3339, PageInfo is Relay's."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import select

from api.schema import schema_for
from domain import models
from tests.conftest import Api
from tests.factories import World, shop

pytestmark = pytest.mark.anyio

RFC3339 = "https://datatracker.ietf.org/doc/html/rfc3339"
PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"
MOVEMENTS = """query($since: DateTime, $until: DateTime) {
  stockMovements(since: $since, until: $until) { edges { node { createdAt } } } }"""


# ---------------------------------------------------------------------------- DateTime

@pytest.mark.parametrize("fast_paths", [True, False])
def test_the_sdl_specifies_date_time_by_rfc_3339(fast_paths: bool) -> None:
    sdl = schema_for(fast_paths=fast_paths).as_str()

    assert f'scalar DateTime @specifiedBy(url: "{RFC3339}")' in sdl


async def test_introspection_gives_date_time_its_specified_by_url(api: Api) -> None:
    data = await api.gql('{ __type(name: "DateTime") { kind specifiedByURL } }')

    assert data == {"__type": {"kind": "SCALAR", "specifiedByURL": RFC3339}}


async def test_date_times_serialize_and_parse_as_before(api: Api) -> None:
    shop(api.db, stock1=9, stock2=0)
    with api.db.reader() as session:
        stored = session.scalars(select(models.StockMovement.created_at)).first()
    assert stored is not None

    found = await api.gql(MOVEMENTS, {"since": "2000-01-01T00:00:00Z"})
    none = await api.gql(MOVEMENTS, {"until": "2000-01-01T00:00:00+02:00"})

    created = found["stockMovements"]["edges"][0]["node"]["createdAt"]
    # strawberry's isoformat, offset included, on SQLite too
    assert created == (stored if stored.tzinfo else stored.replace(tzinfo=UTC)).isoformat()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00", created)
    assert none["stockMovements"]["edges"] == []


# ---------------------------------------------------------------------------- PageInfo

async def _sellers(api: Api) -> None:
    world = World(api.db)
    for _ in range(3):
        world.seller()


async def _movements(api: Api) -> None:
    for _ in range(3):
        shop(api.db, stock1=5, stock2=0)


async def _webhooks(api: Api) -> None:
    create = """mutation($input: WebhookSubscriptionCreateInput!) {
      webhookSubscriptionCreate(input: $input) { errors { code } } }"""
    for _ in range(3):
        payload = await api.gql(create, {"input": {"url": "https://mailer.example/hook",
                                                   "events": ["OUT_OF_STOCK"]}})
        assert payload["webhookSubscriptionCreate"]["errors"] == []


# one connection of api/queries.py's `_page`, one with filters, one paged in its own module
CONNECTIONS: dict[str, Callable[[Api], Awaitable[None]]] = {
    "sellers": _sellers, "stockMovements": _movements, "webhookSubscriptions": _webhooks}


async def _page(api: Api, field: str, first: int, after: str | None = None) -> dict[str, Any]:
    query = f"""query($first: Int, $after: String) {{
      {field}(first: $first, after: $after) {{ edges {{ cursor }} {PAGE_INFO} }} }}"""
    return (await api.gql(query, {"first": first, "after": after}))[field]  # type: ignore[no-any-return]


@pytest.mark.parametrize("field", list(CONNECTIONS))
async def test_page_info_gives_start_cursor_and_previous_page(api: Api, field: str) -> None:
    await CONNECTIONS[field](api)

    first = await _page(api, field, 2)
    second = await _page(api, field, 2, first["pageInfo"]["endCursor"])

    cursors = [e["cursor"] for page in (first, second) for e in page["edges"]]
    assert len(cursors) >= 3
    assert len(set(cursors)) == len(cursors)
    assert first["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": False,
                                 "startCursor": cursors[0], "endCursor": cursors[1]}
    assert second["pageInfo"]["hasPreviousPage"] is True
    assert second["pageInfo"]["startCursor"] == cursors[2]
    assert second["pageInfo"]["endCursor"] == cursors[-1]


@pytest.mark.parametrize("field", list(CONNECTIONS))
async def test_an_empty_page_has_no_start_cursor(api: Api, field: str) -> None:
    await CONNECTIONS[field](api)
    first = await _page(api, field, 1)

    empty = await _page(api, field, 0)
    after = await _page(api, field, 0, first["pageInfo"]["endCursor"])

    assert empty == {"edges": [], "pageInfo": {"hasNextPage": True, "hasPreviousPage": False,
                                               "startCursor": None, "endCursor": None}}
    assert after["pageInfo"]["hasPreviousPage"] is True
    assert after["pageInfo"]["startCursor"] is None


async def test_a_list_with_nothing_has_neither_page(api: Api) -> None:
    page = await _page(api, "sellers", 20)

    assert page == {"edges": [], "pageInfo": {"hasNextPage": False, "hasPreviousPage": False,
                                              "startCursor": None, "endCursor": None}}
