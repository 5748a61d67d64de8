"""/graphql as GraphQL over HTTP, Apollo's persisted queries and CDNs expect it: the
application/graphql-response+json media type, automatic persisted queries (APQ), and GET
reads with Cache-Control and ETag. Last, the same through a real client (gql) against a
real `stockyard serve`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport

from api import caching
from api.caching import prefers_graphql_response
from api.coercion import FastCoercionExecutor
from api.persisted import PersistedQueries, PersistedQueryNotFound
from domain.models import Role
from tests.commands import cli_env, create_token, serving
from tests.conftest import Api

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("answered")]

GRAPHQL_RESPONSE = "application/graphql-response+json"
PREFERRED = f"{GRAPHQL_RESPONSE}, application/json;q=0.9"  # what the spec asks clients to send
SELLERS = "query Sellers { sellers(first: 5) { edges { node { name } } } }"
SELLER_CREATE = """mutation($name: String!) {
  sellerCreate(input: {name: $name}) { seller { name } errors { code } } }"""
# 100^4 objects: refused by the executor before it runs anything (api/limits.py)
COSTLY = """query($n: Int) { productVariants(first: $n) { edges { node {
  product { variants { product { variants { product { variants { id } } } } } } } } } }"""
NOT_FOUND_BODY = {"errors": [{"message": "PersistedQueryNotFound",
                              "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]}


def sha(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def persisted(query: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(query)}}


async def post(api: Api, body: Any, *, accept: str | None = None,
               token: str | None = "admin") -> httpx.Response:
    headers = {"content-type": "application/json"}
    if accept is not None:
        headers["accept"] = accept
    if token is not None:
        headers["authorization"] = f"Bearer {api.admin if token == 'admin' else token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await api.client.post("/graphql", content=content, headers=headers)


async def get(api: Api, params: dict[str, str], *, accept: str | None = "application/json",
              token: str | None = None, **headers: str) -> httpx.Response:
    sent = dict(headers)
    if accept is not None:
        sent["accept"] = accept
    if token is not None:
        sent["authorization"] = f"Bearer {api.admin if token == 'admin' else token}"
    return await api.client.get("/graphql", params=params, headers=sent)


# ----------------------------------------------------------- application/graphql-response+json

@pytest.mark.parametrize(("accept", "wanted"), [
    (None, False),
    ("*/*", False),
    ("application/json", False),
    (GRAPHQL_RESPONSE, True),
    (PREFERRED, True),
    ("Application/GraphQL-Response+JSON", True),
    (f"{GRAPHQL_RESPONSE};q=0.5, application/json", False),
    (f"application/json;q=0.5, {GRAPHQL_RESPONSE}", True),
    (f"{GRAPHQL_RESPONSE}, */*", True),  # named explicitly, at the same q
    (f"{GRAPHQL_RESPONSE};q=0.5, */*", False),
    (f"{GRAPHQL_RESPONSE};q=0.5, application/json;q=0.1, */*", True),  # most specific wins
    (f"{GRAPHQL_RESPONSE};q=0", False),
    (f"{GRAPHQL_RESPONSE};q=x", False),
    ("text/html, application/graphql-response+json-seq", False),
])
def test_accept_header_decides_the_media_type(accept: str | None, wanted: bool) -> None:
    assert prefers_graphql_response(accept) is wanted


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
async def test_with_json_a_request_error_keeps_http_200_and_null_data(
        api: Api, accept: str | None) -> None:
    response = await post(api, {"query": "{ sellers { nickname } }"}, accept=accept)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["message"].startswith("Cannot query field 'nickname'")


async def test_success_answers_in_the_preferred_media_type(api: Api) -> None:
    await api.gql(SELLER_CREATE, {"name": "Ada"})

    response = await post(api, {"query": SELLERS}, accept=PREFERRED)

    assert response.status_code == 200
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert response.json() == {"data": {"sellers": {"edges": [{"node": {"name": "Ada"}}]}}}
    assert "cache-control" not in response.headers  # a POST is never cached


@pytest.mark.parametrize(("label", "body", "message"), [
    ("validation", {"query": "{ sellers { nickname } }"}, "Cannot query field"),
    ("syntax", {"query": "{ sellers { "}, "Syntax Error"),
    ("depth limit", {"query": "{ productVariants(first: 1) { edges { node { "
                              + "product { variants { " * 7 + "id" + " } }" * 7
                              + " } } } }"}, "QUERY_TOO_DEEP"),
    ("variables do not coerce", {"query": SELLER_CREATE, "variables": {"name": 5}},
     "Variable '$name'"),
    ("variable missing", {"query": SELLER_CREATE}, "Variable '$name'"),
    ("cost over the limit", {"query": COSTLY, "variables": {"n": 100}}, "QUERY_TOO_COSTLY"),
])
async def test_a_request_error_answers_400_without_data(
        api: Api, label: str, body: dict[str, Any], message: str) -> None:
    response = await post(api, body, accept=PREFERRED)

    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    answer = response.json()
    assert "data" not in answer
    assert message.lower() in json.dumps(answer["errors"][0]).lower()
    assert api.db.scalar("SELECT COUNT(*) FROM seller") == 0


async def test_variables_refused_in_the_fast_lane_answer_400_too(
        api: Api, answered: list[bool]) -> None:
    response = await post(api, {"query": SELLER_CREATE, "variables": {"name": 5}},
                          accept=PREFERRED)

    assert answered == [True]
    assert response.status_code == 400
    assert "data" not in response.json()


async def test_a_field_error_keeps_http_200_and_data(api: Api) -> None:
    # a storefront may not read the stock ledger: a field error, execution had started
    storefront = api.token(Role.STOREFRONT)

    response = await post(api, {"query": "{ __typename stockMovements { edges { cursor } } }"},
                          accept=PREFERRED, token=storefront)

    assert response.status_code == 200
    body = response.json()
    assert "data" in body
    assert body["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"


async def test_an_unexpected_failure_before_execution_answers_500_without_data(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("executor on fire")

    monkeypatch.setattr(FastCoercionExecutor, "build", classmethod(broken))

    response = await post(api, {"query": SELLER_CREATE, "variables": {"name": "Ada"}},
                          accept=PREFERRED)

    assert response.status_code == 500
    assert "data" not in response.json()


@pytest.mark.parametrize(("accept", "status", "media_type"), [
    (PREFERRED, 400, f"{GRAPHQL_RESPONSE}; charset=utf-8"),
    ("application/json", 400, "application/json"),
])
async def test_a_body_that_is_not_json_is_refused_in_the_preferred_media_type(
        api: Api, accept: str, status: int, media_type: str) -> None:
    response = await post(api, b'{"query": ', accept=accept)

    assert (response.status_code, response.headers["content-type"]) == (status, media_type)
    assert response.json() == {"errors": [{"message": "Unable to parse request body as JSON"}]}


@pytest.mark.parametrize(("accept", "status"), [(PREFERRED, 405), ("application/json", 400)])
async def test_a_mutation_over_get_is_refused(api: Api, accept: str, status: int) -> None:
    response = await get(api, {"query": SELLER_CREATE, "variables": '{"name": "Eve"}'},
                         accept=accept, token="admin")

    assert response.status_code == status
    assert "data" not in response.json()
    assert response.headers["cache-control"] == "no-store"
    if status == 405:
        assert response.headers["allow"] == "POST"
    assert api.db.scalar("SELECT COUNT(*) FROM seller") == 0


async def test_a_bad_token_answers_401_in_the_preferred_media_type(api: Api) -> None:
    response = await post(api, {"query": SELLERS}, accept=PREFERRED, token="sy_nope")

    assert response.status_code == 401
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert response.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}


# ----------------------------------------------------------- automatic persisted queries

async def test_an_unknown_hash_alone_answers_persisted_query_not_found(
        api: Api) -> None:
    response = await post(api, {"extensions": persisted(SELLERS)})

    assert response.status_code == 200  # as Apollo's servers answer it
    assert response.json() == NOT_FOUND_BODY


async def test_with_graphql_response_an_unknown_hash_answers_404(api: Api) -> None:
    response = await post(api, {"extensions": persisted(SELLERS)}, accept=PREFERRED)

    assert response.status_code == 404
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert response.json() == NOT_FOUND_BODY


async def test_apq_round_registers_then_runs_the_hash_alone_in_the_fast_lane(
        api: Api, answered: list[bool]) -> None:
    await api.gql(SELLER_CREATE, {"name": "Ada"})
    answered.clear()
    expected = {"data": {"sellers": {"edges": [{"node": {"name": "Ada"}}]}}}

    missed = await post(api, {"extensions": persisted(SELLERS)})
    registered = await post(api, {"query": SELLERS, "extensions": persisted(SELLERS)})
    by_hash = await post(api, {"extensions": persisted(SELLERS), "operationName": "Sellers"})

    assert missed.json() == NOT_FOUND_BODY
    assert registered.json() == expected
    assert (by_hash.status_code, by_hash.json()) == (200, expected)
    assert answered == [True, True]  # the last two: the lane ran them


async def test_apq_hash_alone_runs_with_variables(api: Api) -> None:
    await post(api, {"query": SELLER_CREATE, "variables": {"name": "Ada"},
                     "extensions": persisted(SELLER_CREATE)})

    response = await post(api, {"variables": {"name": "Bob"},
                                "extensions": persisted(SELLER_CREATE)})

    assert response.json() == {"data": {"sellerCreate": {"seller": {"name": "Bob"},
                                                         "errors": []}}}


async def test_apq_over_get_runs_the_hash_alone_and_is_cacheable(api: Api) -> None:
    query = "{ __typename }"
    extensions = json.dumps(persisted(query))

    missed = await get(api, {"extensions": extensions}, accept="*/*")  # not GraphiQL's page
    registered = await get(api, {"query": query, "extensions": extensions})
    by_hash = await get(api, {"extensions": extensions})

    assert (missed.status_code, missed.json()) == (200, NOT_FOUND_BODY)
    assert missed.headers["cache-control"] == "no-store"
    assert registered.json() == by_hash.json() == {"data": {"__typename": "Query"}}
    assert by_hash.headers["cache-control"] == f"public, max-age={caching.MAX_AGE}"
    assert by_hash.headers["etag"] == registered.headers["etag"]


async def test_a_query_not_matching_its_hash_is_refused_and_not_kept(api: Api) -> None:
    wrong = {"query": "{ __typename }", "extensions": persisted(SELLERS)}

    refused = await post(api, wrong)
    then = await post(api, {"extensions": persisted(SELLERS)})

    assert refused.status_code == 400
    assert refused.json() == {"errors": [{"message": "provided sha does not match query",
                                          "extensions": {"code": "INVALID"}}]}
    assert then.json() == NOT_FOUND_BODY


@pytest.mark.parametrize("extension", [
    {"version": 2, "sha256Hash": sha(SELLERS)},
    {"version": True, "sha256Hash": sha(SELLERS)},
    {"version": 1, "sha256Hash": "abc"},
    {"version": 1},
    "a hash",
])
async def test_a_malformed_persisted_query_extension_answers_400(
        api: Api, extension: Any) -> None:
    response = await post(api, {"query": SELLERS, "extensions": {"persistedQuery": extension}})

    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "INVALID"}


async def test_other_extensions_are_left_to_strawberry(api: Api, answered: list[bool]) -> None:
    response = await post(api, {"query": SELLERS,
                                "extensions": {**persisted(SELLERS), "trace": True}})

    assert response.status_code == 200
    assert response.json() == {"data": {"sellers": {"edges": []}}}
    assert answered == [False]


async def test_apq_in_a_batch(api: Api) -> None:
    query = "{ __typename }"
    await post(api, {"query": query, "extensions": persisted(query)})

    response = await post(api, [{"extensions": persisted(query)}, {"query": SELLERS}])

    assert response.json() == [{"data": {"__typename": "Query"}},
                               {"data": {"sellers": {"edges": []}}}]


def test_persisted_documents_are_bounded_least_recently_used_first() -> None:
    store = PersistedQueries(documents=2)
    queries = [f"{{ a{i}: __typename }}" for i in range(3)]

    for query in queries[:2]:
        store.resolve({"query": query, "extensions": persisted(query)})
    store.resolve({"extensions": persisted(queries[0])})  # used: kept over queries[1]
    store.resolve({"query": queries[2], "extensions": persisted(queries[2])})

    assert len(store) == 2
    assert store.resolve({"extensions": persisted(queries[0])})["query"] == queries[0]
    with pytest.raises(PersistedQueryNotFound):
        store.resolve({"extensions": persisted(queries[1])})


def test_a_request_without_the_extension_is_returned_as_it_is() -> None:
    data = {"query": "{ __typename }", "extensions": {"trace": True}}

    assert PersistedQueries().resolve(data) is data


# ----------------------------------------------------------- GET reads and CDNs

async def test_an_anonymous_get_read_is_public_with_a_weak_etag(api: Api) -> None:
    response = await get(api, {"query": "{ __typename }"})

    assert response.status_code == 200
    assert response.headers["cache-control"] == f"public, max-age={caching.MAX_AGE}"
    etag = response.headers["etag"]
    # weak: the same tag may go out gzip, br or plain (the compression middleware)
    assert etag.startswith('W/"') and etag.endswith('"')
    assert response.headers["vary"] == "Accept, Authorization"


async def test_a_get_read_with_a_token_is_private(api: Api) -> None:
    response = await get(api, {"query": SELLERS}, token="admin")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-cache"
    assert "etag" in response.headers


@pytest.mark.parametrize("token", [None, "admin"])
async def test_if_none_match_answers_304_without_a_body(api: Api, token: str | None) -> None:
    first = await get(api, {"query": SELLERS if token else "{ __typename }"}, token=token)
    etag = first.headers["etag"]

    for if_none_match in (etag, etag.removeprefix("W/"), f'"other", {etag}', "*"):
        again = await get(api, {"query": SELLERS if token else "{ __typename }"}, token=token,
                          **{"if-none-match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
        assert "content-type" not in again.headers


async def test_a_changed_answer_gets_a_new_etag(api: Api) -> None:
    before = await get(api, {"query": SELLERS}, token="admin")
    await api.gql(SELLER_CREATE, {"name": "Ada"})

    after = await get(api, {"query": SELLERS}, token="admin",
                      **{"if-none-match": before.headers["etag"]})

    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]


async def test_the_etag_depends_on_the_media_type(api: Api) -> None:
    as_json = await get(api, {"query": "{ __typename }"})
    as_graphql = await get(api, {"query": "{ __typename }"}, accept=PREFERRED)

    assert as_json.content == as_graphql.content
    assert as_json.headers["etag"] != as_graphql.headers["etag"]


async def test_a_get_answer_with_errors_is_not_stored(api: Api) -> None:
    denied = await get(api, {"query": SELLERS})  # anonymous: PERMISSION_DENIED
    invalid = await get(api, {"query": "{ nope }"})

    for response in (denied, invalid):
        assert response.headers["cache-control"] == "no-store"
        assert "etag" not in response.headers


async def test_posts_and_graphiql_carry_no_caching_headers(api: Api) -> None:
    posted = await post(api, {"query": "{ __typename }"})
    page = await api.client.get("/graphql", headers={"accept": "text/html"})

    for response in (posted, page):
        assert "cache-control" not in response.headers
        assert "etag" not in response.headers


# ----------------------------------------------------------- a real client on a real server

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(url of /graphql, admin token) of a `stockyard serve` child process."""
    env = cli_env(Path(tmp_path_factory.mktemp("served")))
    token = create_token(env, "--role", "admin")
    with serving(env) as served:
        yield f"http://127.0.0.1:{served.port}/graphql", token


def gql_client(url: str, token: str, **headers: str) -> Client:
    transport = HTTPXTransport(url=url, timeout=30,
                               headers={"Authorization": f"Bearer {token}", **headers})
    return Client(transport=transport)


def test_gql_runs_a_mutation_and_a_query(server: tuple[str, str]) -> None:
    url, token = server

    with gql_client(url, token) as session:
        created = session.execute(GraphQLRequest(SELLER_CREATE,
                                                 variable_values={"name": "Gql"}))
        read = session.execute(GraphQLRequest(SELLERS))

    assert created == {"sellerCreate": {"seller": {"name": "Gql"}, "errors": []}}
    assert {"node": {"name": "Gql"}} in read["sellers"]["edges"]


def test_gql_with_graphql_response_json_reads_a_request_error(
        server: tuple[str, str]) -> None:
    url, token = server

    with gql_client(url, token, Accept=PREFERRED) as session:
        assert session.execute(GraphQLRequest("{ __typename }")) == {"__typename": "Query"}
        assert session.transport.response_headers["content-type"] == \
            f"{GRAPHQL_RESPONSE}; charset=utf-8"
        with pytest.raises(TransportQueryError, match="Cannot query field"):
            session.execute(GraphQLRequest("{ nope }"))


def test_gql_registers_a_persisted_query_that_the_hash_alone_then_runs(
        server: tuple[str, str]) -> None:
    url, token = server
    request = GraphQLRequest("query Typename { __typename }")
    query = request.payload["query"]  # the text gql sends, which the hash is of
    hashed = {"extensions": persisted(query)}

    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as plain:
        missed = plain.post(url, json=hashed)
        with gql_client(url, token) as session:
            registered = session.execute(GraphQLRequest(request,
                                                        extensions=persisted(query)))
        by_hash = plain.post(url, json=hashed)
        by_get = plain.get(url, params={"extensions": json.dumps(hashed["extensions"])},
                           headers={"Accept": "application/json"})
        again = plain.get(url, params={"extensions": json.dumps(hashed["extensions"])},
                          headers={"Accept": "application/json",
                                   "If-None-Match": by_get.headers["etag"]})

    assert missed.json() == NOT_FOUND_BODY
    assert registered == {"__typename": "Query"}
    assert by_hash.json() == {"data": {"__typename": "Query"}}
    assert by_get.json() == {"data": {"__typename": "Query"}}
    assert by_get.headers["cache-control"] == "private, no-cache"
    assert again.status_code == 304
