"""Tokens through the API: create, list, revoke (admin only), HTTP 401 for a token that is
not live, the named actor in the ledger, cheap lastUsedAt, and no query per request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import StockyardGraphQL, build_app
from api.auth import FLUSH_SECONDS, MISS, TokenCache
from api.revocation import Epoch, bump_epoch, epoch_path
from domain.events import Event
from domain.models import Role
from domain.services import tokens
from tests.api.test_query_counts import counting
from tests.conftest import Api, Database
from tests.factories import gid, shop

pytestmark = pytest.mark.anyio

ERRORS = "errors { code field message }"
TOKEN = "id name role seller { id } createdAt lastUsedAt revokedAt"
CREATE = f"""mutation($input: TokenCreateInput!) {{
  tokenCreate(input: $input) {{ token {{ {TOKEN} }} secret {ERRORS} }} }}"""
REVOKE = f"""mutation($id: ID!) {{ tokenRevoke(id: $id) {{ token {{ {TOKEN} }} {ERRORS} }} }}"""
LIST = f"""query($first: Int, $after: String) {{ tokens(first: $first, after: $after) {{
  edges {{ node {{ {TOKEN} }} cursor }} pageInfo {{ hasNextPage endCursor }} }} }}"""
NODE = "query($id: ID!) { node(id: $id) { __typename ... on ApiToken { id name role } } }"
SELLER_CREATE = """mutation {
  sellerCreate(input: {name: "S"}) { seller { id } errors { code } } }"""


async def create(api: Api, token: str | None = "admin", **fields: Any) -> dict[str, Any]:
    data = await api.gql(CREATE, {"input": {"role": "ADMIN", **fields}}, token=token)
    return data["tokenCreate"]  # type: ignore[no-any-return]


def unauthenticated(response: httpx.Response) -> bool:
    body = response.json()
    return (response.status_code == 401 and body.get("data") is None
            and body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
            and response.headers["www-authenticate"] == "Bearer")


# ------------------------------------------------------------------ create, list, node

async def test_an_admin_creates_a_named_seller_token_whose_secret_works(api: Api) -> None:
    s = shop(api.db)

    made = await create(api, role="SELLER", sellerId=gid("Seller", s.seller),
                        name="Berlin dashboard")

    assert made["errors"] == []
    token = made["token"]
    assert token["name"] == "Berlin dashboard" and token["role"] == "SELLER"
    assert token["seller"] == {"id": gid("Seller", s.seller)}
    assert token["createdAt"] and token["lastUsedAt"] is None and token["revokedAt"] is None
    # only the hash is stored
    assert api.db.rows("SELECT token_hash FROM api_token WHERE name = 'Berlin dashboard'") \
        == [(tokens.hash_token(made["secret"]),)]
    seen = await api.gql("{ sellers { edges { node { id } } } }", token=made["secret"])
    assert seen["sellers"]["edges"] == [{"node": {"id": gid("Seller", s.seller)}}]


@pytest.mark.parametrize("who", ["seller", "storefront", None])
async def test_only_an_admin_creates_tokens(api: Api, who: str | None) -> None:
    s = shop(api.db)
    token = {"seller": api.token(Role.SELLER, s.seller),
             "storefront": api.token(Role.STOREFRONT)}.get(who or "")
    before = api.db.scalar("SELECT COUNT(*) FROM api_token")

    made = await create(api, token=token)

    assert made["token"] is None and made["secret"] is None
    assert [e["code"] for e in made["errors"]] == ["PERMISSION_DENIED"]
    assert api.db.scalar("SELECT COUNT(*) FROM api_token") == before


@pytest.mark.parametrize(("fields", "field", "code"), [
    ({"name": "x" * 41}, "name", "INVALID"),
    ({"name": "bad\u0000"}, "name", "INVALID"),
    ({"role": "SELLER"}, "sellerId", "INVALID"),
    ({"role": "SELLER", "sellerId": "nonsense"}, "sellerId", "INVALID"),
    ({"role": "SELLER", "sellerId": gid("Seller", 424242)}, "sellerId", "NOT_FOUND"),
    ({"role": "STOREFRONT", "sellerId": gid("Seller", 1)}, "sellerId", "INVALID"),
])
async def test_bad_token_input_is_a_payload_error(api: Api, fields: dict[str, Any], field: str,
                                                  code: str) -> None:
    made = await create(api, **fields)

    assert made["token"] is None and made["secret"] is None
    assert [(e["code"], e["field"]) for e in made["errors"]] == [(code, field)]


async def test_tokens_are_listed_newest_first_page_by_page(api: Api) -> None:
    for name in ("a", "b", "c"):
        await create(api, role="STOREFRONT", name=name)

    first = (await api.gql(LIST, {"first": 2}))["tokens"]
    rest = (await api.gql(LIST, {"first": 2, "after": first["pageInfo"]["endCursor"]}))["tokens"]

    assert [e["node"]["name"] for e in first["edges"]] == ["c", "b"]
    assert first["pageInfo"]["hasNextPage"] is True
    # the fixture's admin token is the oldest
    assert [e["node"]["name"] for e in rest["edges"]] == ["a", None]
    assert rest["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize("role", [Role.SELLER, Role.STOREFRONT, None])
async def test_only_an_admin_lists_or_looks_up_tokens(api: Api, role: Role | None) -> None:
    s = shop(api.db)
    token = None if role is None else api.token(role, s.seller if role is Role.SELLER else None)
    made = await create(api, name="ops")

    listed = await api.post(LIST, token=token)

    assert listed.status_code == 200
    body = listed.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["PERMISSION_DENIED"]
    if role is None:  # without a token not even `node` answers
        node = await api.post(NODE, {"id": made["token"]["id"]}, token=token)
        assert node.json()["data"] == {"node": None}
        assert node.json()["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"
    else:
        assert await api.gql(NODE, {"id": made["token"]["id"]}, token=token) == {"node": None}
    admin_view = await api.gql(NODE, {"id": made["token"]["id"]})
    assert admin_view == {"node": {"__typename": "ApiToken", "id": made["token"]["id"],
                                   "name": "ops", "role": "ADMIN"}}


# ------------------------------------------------------------------ revoke and HTTP 401

async def test_a_revoked_token_is_refused_at_once_although_it_was_cached(api: Api) -> None:
    made = await create(api, role="STOREFRONT", name="shop")
    secret = made["secret"]
    assert (await api.post("{ __typename }", token=secret)).status_code == 200  # now cached

    revoked = (await api.gql(REVOKE, {"id": made["token"]["id"]}))["tokenRevoke"]

    assert revoked["errors"] == [] and revoked["token"]["revokedAt"] is not None
    assert unauthenticated(await api.post("{ __typename }", token=secret))
    assert unauthenticated(await api.post(SELLER_CREATE, token=secret))


async def test_revoking_again_answers_the_token_unchanged(api: Api) -> None:
    made = await create(api, role="STOREFRONT")
    first = (await api.gql(REVOKE, {"id": made["token"]["id"]}))["tokenRevoke"]

    again = (await api.gql(REVOKE, {"id": made["token"]["id"]}))["tokenRevoke"]

    assert again == first


async def test_revoking_an_unknown_token_is_not_found(api: Api) -> None:
    answer = (await api.gql(REVOKE, {"id": gid("ApiToken", 424242)}))["tokenRevoke"]

    assert answer["token"] is None
    assert [(e["code"], e["field"]) for e in answer["errors"]] == [("NOT_FOUND", "id")]


@pytest.mark.parametrize("role", [Role.SELLER, Role.STOREFRONT, None])
async def test_only_an_admin_revokes_tokens(api: Api, role: Role | None) -> None:
    s = shop(api.db)
    token = None if role is None else api.token(role, s.seller if role is Role.SELLER else None)
    made = await create(api, role="STOREFRONT")

    answer = (await api.gql(REVOKE, {"id": made["token"]["id"]}, token=token))["tokenRevoke"]

    assert answer["token"] is None
    assert [e["code"] for e in answer["errors"]] == ["PERMISSION_DENIED"]
    assert (await api.post("{ __typename }", token=made["secret"])).status_code == 200


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Bearer", "Bearer   ",
                                    "Basic dXNlcjpwYXNz", "sy_just-the-token"])
async def test_a_header_naming_no_live_token_is_http_401(api: Api, header: str) -> None:
    before = api.db.scalar("SELECT COUNT(*) FROM seller")

    response = await api.client.post("/graphql", json={"query": SELLER_CREATE},
                                     headers={"Authorization": header})

    assert unauthenticated(response)
    assert api.db.scalar("SELECT COUNT(*) FROM seller") == before


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}],
                         ids=["no header", "empty header"])
async def test_without_a_token_the_request_is_anonymous_not_401(
        api: Api, headers: dict[str, str]) -> None:
    response = await api.client.post("/graphql", json={"query": SELLER_CREATE},
                                     headers=headers)

    assert response.status_code == 200
    payload = response.json()["data"]["sellerCreate"]
    assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]


async def test_a_get_with_a_bad_token_is_401_too(api: Api) -> None:
    response = await api.client.get("/graphql", params={"query": "{ __typename }"},
                                    headers={"Authorization": "Bearer nope",
                                             "Accept": "application/json"})

    assert unauthenticated(response)


# ------------------------------------------------------------------ the ledger's actor

async def test_the_ledger_names_the_token(api: Api) -> None:
    s = shop(api.db)
    made = await create(api, name="Berlin dashboard")

    await api.gql("""mutation($v: ID!, $w: ID!) { productVariantStocksUpdate(variantId: $v,
        stocks: [{warehouseId: $w, quantity: 7}]) { errors { code } } }""",
                  {"v": gid("ProductVariant", s.variant), "w": gid("Warehouse", s.w1)},
                  token=made["secret"])

    token_id = api.db.scalar("SELECT id FROM api_token WHERE name = 'Berlin dashboard'")
    assert api.db.scalar("SELECT actor FROM stock_movement ORDER BY id DESC LIMIT 1") \
        == f'admin:{token_id} "Berlin dashboard"'


# ------------------------------------------------------------------ cost per request

async def test_a_cached_token_adds_no_statement_to_a_request(api: Api) -> None:
    secret = (await create(api, name="hot"))["secret"]
    await api.gql("{ __typename }", token=secret)  # looked up and cached

    with counting(api.db) as statements:
        for _ in range(20):
            await api.gql("{ __typename }", token=secret)

    assert statements.count == 0, statements.sql


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def timed(db: Database) -> AsyncIterator[tuple[Api, Clock, StockyardGraphQL]]:
    """The API with a cache whose clocks the test moves."""
    clock = Clock()
    cache = TokenCache(clock=clock, wall=lambda: 1_700_000_000.0 + clock.now)
    events: list[Event] = []
    app = build_app(db.engine, events.append, tokens=cache)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as client:
            yield Api(client, db), clock, app.state.graphql
    finally:
        app.state.threads.close()


def _last_used(db: Database, name: str) -> Any:
    return db.scalar("SELECT last_used_at FROM api_token WHERE name = :n", n=name)


async def test_last_use_is_written_in_batches_not_per_request(
        timed: tuple[Api, Clock, StockyardGraphQL]) -> None:
    api, clock, graphql = timed
    secret = tokens.create_token(api.db.uow(), Role.STOREFRONT, name="shop")
    await api.gql("{ __typename }", token=secret)
    assert _last_used(api.db, "shop") is None  # nothing due yet

    clock.now += FLUSH_SECONDS  # the first write is due
    with counting(api.db) as first:
        await api.gql("{ __typename }", token=secret)
        await graphql.uses_written()
    written = _last_used(api.db, "shop")
    clock.now += 5
    with counting(api.db) as within:
        for _ in range(10):
            await api.gql("{ __typename }", token=secret)
        await graphql.uses_written()

    assert written is not None
    assert [s for s in first.sql if s.startswith("UPDATE api_token")] != []
    assert within.count == 0, within.sql  # a request within the window writes nothing
    assert _last_used(api.db, "shop") == written
    clock.now += FLUSH_SECONDS
    await api.gql("{ __typename }", token=secret)
    await graphql.uses_written()
    assert _last_used(api.db, "shop") != written  # the next window's use is written


# ------------------------------------------------------------------ the revocation epoch

@pytest.fixture
def epoch_file(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "tokens.epoch"


def test_the_epoch_sits_beside_a_sqlite_file_or_in_the_run_directory(tmp_path: Path) -> None:
    db_file = tmp_path / "shop.db"

    assert epoch_path(db_file, "/run/x") == Path(f"{db_file}-tokens.epoch")
    assert epoch_path(None, "/run/x") == Path("/run/x/tokens.epoch")
    assert epoch_path(None, None) is None


def test_a_bump_in_one_process_shows_in_another_mapping(epoch_file: Path) -> None:
    mine, theirs = Epoch(epoch_file), Epoch(epoch_file)
    assert mine.read() == theirs.read() == 0

    bump_epoch(epoch_file)
    theirs.bump()

    assert mine.read() == 2
    mine.close()
    theirs.close()


def test_a_cache_drops_its_lookups_when_another_process_revokes(
        db: Database, epoch_file: Path) -> None:
    secret = tokens.create_token(db.uow(), Role.ADMIN)
    here, there = TokenCache(epoch=Epoch(epoch_file)), TokenCache(epoch=Epoch(epoch_file))
    assert here.load(db.reader, secret) is not None
    assert there.load(db.reader, secret) is not None
    token_id = db.scalar("SELECT id FROM api_token")

    tokens.revoke(db.uow(), tokens.Principal(token_id=0, role=Role.ADMIN), token_id)
    there.revoked()

    assert here.get(secret) is MISS and there.get(secret) is MISS
    assert here.load(db.reader, secret) is None


def test_a_lookup_under_way_during_a_revocation_is_not_kept(
        db: Database, epoch_file: Path) -> None:
    secret = tokens.create_token(db.uow(), Role.ADMIN)
    cache = TokenCache(epoch=Epoch(epoch_file))

    class Racing:
        """A session factory whose lookup reads the token, then sees a revocation land."""

        def __call__(self) -> Any:
            return self

        def __enter__(self) -> Any:
            self.session = db.reader()
            return self.session

        def __exit__(self, *exc: object) -> None:
            self.session.close()
            bump_epoch(epoch_file)  # another process revoked meanwhile
            assert cache.get("someone else") is MISS  # a request here drops the cache

    assert cache.load(Racing(), secret) is not None  # the request begun before is served
    assert cache.get(secret) is MISS  # but a later one looks again
