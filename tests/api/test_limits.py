"""Limits (API.md, "Access and operations"): each refused with a clear error before any
resolver runs, on the fast lane and on strawberry's path, and nothing changed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from api import ids
from api.limits import CACHED_CHARS, Gate, RequestLimits
from api.schema import schema
from domain.models import Role
from domain.settings import Limits
from tests.conftest import Api, Database, serve
from tests.factories import gid, shop

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[True, False], ids=["lane", "strawberry"])
def fast_paths(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    """Every SQL statement the app runs from now on."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    yield seen
    event.remove(db.engine, "before_cursor_execute", note)


async def refused(api: Api, statements: list[str], query: str,
                  variables: dict[str, Any] | None = None) -> list[str]:
    """The error codes of a request refused before anything ran (no statement at all)."""
    await api.gql("{ __typename }")  # the token is looked up and cached first
    statements.clear()
    response = await api.post(query, variables)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("data") is None, body
    assert statements == []
    return [(e.get("extensions") or {}).get("code", e["message"]) for e in body["errors"]]


def nested(levels: int) -> str:
    query = "id"
    for _ in range(levels):
        query = f"product {{ variants {{ {query} }} }}"
    return f'{{ productVariants(first: 1) {{ edges {{ node {{ {query} }} }} }} }}'


async def test_a_query_deeper_than_15_levels_is_refused(
        api: Api, statements: list[str]) -> None:
    assert await refused(api, statements, nested(7)) == ["QUERY_TOO_DEEP"]
    assert await refused(api, statements, "query { ...deep } fragment deep on Query "
                         + nested(7)) == ["QUERY_TOO_DEEP"]  # through fragments too


async def test_nesting_that_multiplies_lists_is_refused_by_its_cost(
        api: Api, statements: list[str]) -> None:
    """3 pairs of product/variants under 100 variants: 10^8 objects, within the depth."""
    assert await refused(api, statements, nested(3).replace("first: 1", "first: 100")) \
        == ["QUERY_TOO_COSTLY"]
    assert await refused(api, statements, "query($n: Int) { productVariants(first: $n) { "
                         "edges { node { product { variants { product { variants { product { "
                         "variants { id } } } } } } } } } }", {"n": 100}) == ["QUERY_TOO_COSTLY"]


async def test_more_than_100_aliases_are_refused(api: Api, statements: list[str]) -> None:
    query = "{ " + " ".join(f"a{i}: sellers(first: 1) {{ edges {{ node {{ id }} }} }}"
                            for i in range(101)) + " }"
    assert await refused(api, statements, query) == ["TOO_MANY_ALIASES"]


async def test_more_than_5000_tokens_are_refused(api: Api, statements: list[str]) -> None:
    [message] = await refused(api, statements, "{ " + "__typename " * 5_001 + "}")
    assert "more than 5000 tokens" in message  # graphql-core's own syntax error


async def test_one_field_repeated_a_thousand_times_is_refused_at_once(
        api: Api, statements: list[str]) -> None:
    started = time.monotonic()
    codes = await refused(api, statements,
                          "{ " + "sellers { __typename } " * 1_000 + "}")
    assert codes == ["QUERY_TOO_COMPLEX"]
    assert time.monotonic() - started < 1.0  # graphql-core's overlap check took 8 s


@pytest.mark.parametrize("items", [1_001])
async def test_a_list_argument_over_1000_items_is_refused(
        api: Api, statements: list[str], items: int) -> None:
    id_list = [gid("Seller", 1)] * items
    assert await refused(api, statements, "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
                         {"ids": id_list}) == ["LIST_TOO_LONG"]
    literal = json.dumps(["SKU"] * items)
    assert await refused(api, statements, f"{{ productVariants(skus: {literal}) "
                         "{ edges { node { id } } } }") == ["LIST_TOO_LONG"]


async def test_nodes_of_1000_ids_answer(api: Api) -> None:
    s = shop(api.db, stock1=1)
    data = await api.gql("query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
                         {"ids": [gid("ProductVariant", s.variant)] * 1_000})
    assert len(data["nodes"]) == 1_000


def test_a_10000_row_bulk_update_with_every_result_field_is_within_the_limits() -> None:
    gate = Gate(schema._schema, Limits(), ())
    query = ("mutation($rows: [StockBulkUpdateInput!]!) { stockBulkUpdate(stocks: $rows) { "
             "count results { stock { id quantity quantityAllocated warehouse { id name } "
             "variant { id sku } } errors { code field message } } "
             "errors { code field message } } }")
    checked = gate.check(query)
    assert checked.errors == []
    assert checked.document is not None
    rows = [{"sku": "X", "warehouseId": "W", "quantity": 1}] * 10_000
    assert gate.request_errors(checked.document, None, {"rows": rows}) == []
    codes = [e.extensions["code"] for e in gate.request_errors(  # type: ignore[index]
        checked.document, None, {"rows": rows * 2})]
    assert codes == ["LIST_TOO_LONG"]


def test_an_operations_cost_kept_per_sizes_is_the_cost_worked_out_afresh() -> None:
    """A cost sized by variables is worked out once per set of sizes they give (an int, a
    list's length, neither): each request's verdict is the one a fresh gate gives."""
    query = ("query($n: Int, $m: Int, $ids: [ID!]!) { nodes(ids: $ids) { id ... on Product { "
             "variants { id } } } productVariants(first: $n) { edges { node { product { "
             "variants { id } } } } } sellers(first: $m) { edges { node { id } } } }")
    limits = Limits(cost=2_000)
    kept = Gate(schema._schema, limits, ())
    document = kept.check(query).document
    assert document is not None
    requests = [{"n": n, "m": m, "ids": ids} for n in (1, 2, 10, 90, None, "x", 2.0, True)
                for m in (0, 5, None) for ids in (["a"], ["a", "b"], ["b", "c"], [], "a")]
    verdicts = set()
    for variables in requests + requests:
        fresh = Gate(schema._schema, limits, ())
        fresh_document = fresh.check(query).document
        assert fresh_document is not None
        expected = [e.message for e in fresh.request_errors(fresh_document, None, variables)]
        assert [e.message for e in kept.request_errors(document, None, variables)] == expected
        verdicts.add(tuple(expected))
    assert len(verdicts) > 5  # refused by several totals, and admitted


async def test_a_batch_answers_each_operation_up_to_20(api: Api) -> None:
    response = await api.client.post(
        "/graphql", json=[{"query": "{ __typename }"}] * 20,
        headers={"Authorization": f"Bearer {api.admin}"})
    assert response.status_code == 200
    assert [r["data"] for r in response.json()] == [{"__typename": "Query"}] * 20

    refused = await api.client.post(
        "/graphql", json=[{"query": "{ __typename }"}] * 21,
        headers={"Authorization": f"Bearer {api.admin}"})
    assert refused.status_code == 400
    assert "20 operations" in refused.text


async def test_a_body_over_the_limit_is_413_and_headers_over_it_431(db: Database) -> None:
    async with serve(db, limits=Limits(body_bytes=2_000, header_bytes=1_000)) as api:
        small = await api.post("{ __typename }")
        big = await api.client.post("/graphql", content=b" " * 2_001,
                                    headers={"content-type": "application/json"})
        headers = await api.client.post("/graphql", json={"query": "{ __typename }"},
                                        headers={"x-padding": "x" * 1_000})
    assert small.status_code == 200
    assert big.status_code == 413
    assert big.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
    assert headers.status_code == 431


async def test_a_body_without_length_is_cut_off_at_the_limit() -> None:
    """Chunked: the app stops reading once the limit is passed."""
    sent: list[dict[str, Any]] = []
    chunks = iter([{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 5)
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return next(chunks)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            await receive()

    await RequestLimits(app, body_bytes=1_000, header_bytes=0)(
        {"type": "http", "headers": []}, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert reads == 2


async def test_long_ids_and_tokens_are_never_kept_nor_echoed_whole(api: Api) -> None:
    long_id = "U2VsbGVyOjE" * 100_000  # 1.1 MB
    before = ids.parse.cache_info().currsize
    cancel = "mutation($id: ID!) { orderCancel(id: $id) { errors { code message } } }"
    payload = (await api.gql(cancel, {"id": long_id}))["orderCancel"]
    assert payload["errors"][0]["code"] == "INVALID"
    assert len(payload["errors"][0]["message"]) < 200
    assert ids.parse.cache_info().currsize == before
    response = await api.client.post("/graphql", json={"query": "{ __typename }"},
                                     headers={"Authorization": "Bearer " + "t" * 4_000})
    assert response.status_code == 401


async def test_the_gate_keeps_no_long_document() -> None:
    gate = Gate(schema._schema, Limits(), ())
    query = "{ __typename " + " " * CACHED_CHARS + "}"
    gate.check(query)
    assert query not in gate._cache


async def test_a_token_over_its_rate_gets_429_with_retry_after(db: Database) -> None:
    async with serve(db, limits=Limits(rate=0.5, burst=2)) as api:
        answers = [await api.post("{ __typename }") for _ in range(3)]
        other = await api.post("{ __typename }", token=api.token(Role.STOREFRONT))
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert answers[2].headers["retry-after"] == "2"
    assert answers[2].json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert other.status_code == 200  # per token


async def test_a_document_over_256_kib_is_refused_unread(
        api: Api, statements: list[str]) -> None:
    """Lexing a long string literal holds the event loop (~0.15 s a MB): refused unparsed."""
    literal = '{ productVariants(skus: ["' + "x" * 300_000 + '"]) { edges { node { id } } } }'
    assert await refused(api, statements, literal) == ["QUERY_TOO_LARGE"]
    assert await refused(api, statements, "{ __typename" + " " * 2**18 + "}") \
        == ["QUERY_TOO_LARGE"]
    assert (await api.gql("{ __typename" + " " * (2**18 - 20) + "}")) == {
        "__typename": "Query"}


async def test_bad_values_are_quoted_back_clipped(api: Api) -> None:
    s = shop(api.db)
    long = "Z" * 100_000
    create = ("mutation($input: OrderCreateInput!) { orderCreate(input: $input) { "
              "errors { code message } } }")
    order = (await api.gql(create, {"input": {
        "type": "REGULAR", "shippingCountry": long,
        "lines": [{"variantId": gid("ProductVariant", s.variant), "quantity": 1}]}}))
    bulk = await api.gql(
        "mutation($rows: [StockBulkUpdateInput!]!) { stockBulkUpdate(stocks: $rows) { "
        "results { errors { code message } } } }",
        {"rows": [{"warehouseId": gid("Warehouse", s.w1), "sku": long, "quantity": 1}]})
    zone = await api.gql(
        "mutation($c: [String!]!) { shippingZoneCreate(input: {name: \"Z\", countries: $c}) "
        "{ errors { code message } } }", {"c": [long]})
    cursor = await api.post("{ sellers(after: \"" + long[:50_000] + "\") { edges { cursor } } }")
    messages = [order["orderCreate"]["errors"][0]["message"],
                bulk["stockBulkUpdate"]["results"][0]["errors"][0]["message"],
                zone["shippingZoneCreate"]["errors"][0]["message"],
                cursor.json()["errors"][0]["message"]]
    assert all(len(m) < 200 and "Z" * 41 not in m for m in messages), messages
