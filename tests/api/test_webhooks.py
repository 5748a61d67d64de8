"""Webhook subscriptions over HTTP (API.md "Stock webhooks", "Signed deliveries"): the
secret shown once, typed errors that change nothing, a seller's own subscriptions only,
pause, delete and the list. Deliveries themselves: tests/sync/test_webhooks.py."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from domain.models import Role
from tests.conftest import Api, Database
from tests.factories import gid, shop

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(40))).decode()
UNKNOWN = 999_999
FIELDS = ("id url events status lastError lastErrorAt lastDeliveredAt pendingDeliveries "
          "seller { id }")
ERRORS = "errors { code field message }"
CREATE = f"""mutation($input: WebhookSubscriptionCreateInput!) {{
  webhookSubscriptionCreate(input: $input) {{ webhookSubscription {{ {FIELDS} }} secret
  {ERRORS} }} }}"""
UPDATE = f"""mutation($id: ID!, $input: WebhookSubscriptionUpdateInput!) {{
  webhookSubscriptionUpdate(id: $id, input: $input) {{ webhookSubscription {{ {FIELDS} }}
  {ERRORS} }} }}"""
DELETE = f"""mutation($id: ID!) {{ webhookSubscriptionDelete(id: $id) {{ {ERRORS} }} }}"""
LIST = """query($sellerId: ID, $first: Int, $after: String) {
  webhookSubscriptions(sellerId: $sellerId, first: $first, after: $after) {
    edges { node { id } cursor } pageInfo { hasNextPage endCursor } } }"""
NODE = f"query($id: ID!) {{ node(id: $id) {{ ... on WebhookSubscription {{ {FIELDS} }} }} }}"


async def _create(api: Api, token: str | None = "admin", **fields: Any) -> dict[str, Any]:
    data = {"url": "https://mailer.example/hook", "events": ["OUT_OF_STOCK"], **fields}
    payload = (await api.gql(CREATE, {"input": data}, token))["webhookSubscriptionCreate"]
    return payload  # type: ignore[no-any-return]


async def _made(api: Api, token: str | None = "admin", **fields: Any) -> dict[str, Any]:
    """A subscription that was created (no errors)."""
    payload = await _create(api, token, **fields)
    assert payload["errors"] == [], payload
    return payload["webhookSubscription"]  # type: ignore[no-any-return]


async def _update(api: Api, sid: str, token: str | None = "admin",
                  **fields: Any) -> dict[str, Any]:
    payload = (await api.gql(UPDATE, {"id": sid, "input": fields}, token)
               )["webhookSubscriptionUpdate"]
    return payload  # type: ignore[no-any-return]


async def _delete(api: Api, sid: str, token: str | None = "admin") -> dict[str, Any]:
    return (await api.gql(DELETE, {"id": sid}, token))["webhookSubscriptionDelete"]  # type: ignore[no-any-return]


async def _node(api: Api, sid: str, token: str | None = "admin") -> dict[str, Any] | None:
    return (await api.gql(NODE, {"id": sid}, token))["node"]  # type: ignore[no-any-return]


async def _listed(api: Api, token: str | None = "admin", **args: Any) -> list[str]:
    data = (await api.gql(LIST, args, token))["webhookSubscriptions"]
    return [e["node"]["id"] for e in data["edges"]]


def _refusal(payload: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(e["code"], e["field"], e["message"]) for e in payload["errors"]]


def _count(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM webhook_subscription"))


def _rows(db: Database) -> list[tuple[Any, ...]]:
    """What a refused call must leave as it was."""
    return [tuple(r) for r in db.rows(
        "SELECT id, seller_id, url, events, secret, paused FROM webhook_subscription "
        "ORDER BY id")]


def _is_whsec(secret: str) -> bool:
    """API.md "Signed deliveries": `whsec_<base64 of 24-64 random bytes>`."""
    if not secret.startswith("whsec_"):
        return False
    raw = base64.b64decode(secret[len("whsec_"):], validate=True)
    return 24 <= len(raw) <= 64


# --------------------------------------------------------------------------- creating

async def test_create_shows_the_secret_once(api: Api, db: Database) -> None:
    s = shop(db)
    given = await _create(api, sellerId=gid("Seller", s.seller), secret=SECRET,
                          events=["STOCK_UPDATED", "LOW_STOCK"])
    assert given["errors"] == [] and given["secret"] == SECRET
    sub = given["webhookSubscription"]
    assert sub["url"] == "https://mailer.example/hook"
    assert sorted(sub["events"]) == ["LOW_STOCK", "STOCK_UPDATED"]
    assert sub["seller"] == {"id": gid("Seller", s.seller)}
    assert (sub["status"], sub["lastError"], sub["lastErrorAt"], sub["lastDeliveredAt"],
            sub["pendingDeliveries"]) == ("OK", None, None, None, 0)
    assert await _node(api, sub["id"]) == sub

    generated = await _create(api)  # an admin's, of every stock
    again = await _create(api)
    assert generated["errors"] == [] and again["errors"] == []
    assert _is_whsec(generated["secret"]) and _is_whsec(again["secret"])
    assert len({generated["secret"], again["secret"], SECRET}) == 3
    assert generated["webhookSubscription"]["seller"] is None
    assert generated["webhookSubscription"]["status"] == "OK"
    assert generated["webhookSubscription"]["pendingDeliveries"] == 0

    # never readable again: the type has no secret
    answer = await api.post("query($id: ID!) { node(id: $id) { ... on WebhookSubscription "
                            "{ secret } } }", {"id": sub["id"]})
    assert answer.json()["errors"]
    fields = (await api.gql('{ __type(name: "WebhookSubscription") { fields { name } } }')
              )["__type"]["fields"]
    assert not [f["name"] for f in fields if "secret" in f["name"].lower()]
    assert {"id", "url", "events", "seller", "status", "lastError", "lastDeliveredAt",
            "pendingDeliveries"} <= {f["name"] for f in fields}


@pytest.mark.parametrize(("fields", "field"), [
    pytest.param({"url": "ftp://mailer.example/hook"}, "input.url", id="ftp url"),
    pytest.param({"url": "not a url"}, "input.url", id="not a url"),
    pytest.param({"url": "https://"}, "input.url", id="no host"),
    pytest.param({"url": ""}, "input.url", id="empty url"),
    pytest.param({"events": []}, "input.events", id="no events"),
    pytest.param({"secret": "whsec_short"}, "input.secret", id="short secret"),
    pytest.param({"secret": "whsec_" + base64.b64encode(b"x" * 16).decode()},
                 "input.secret", id="16 bytes"),
    pytest.param({"secret": "whsec_" + base64.b64encode(b"x" * 65).decode()},
                 "input.secret", id="65 bytes"),
    pytest.param({"secret": SECRET[len("whsec_"):]}, "input.secret", id="no prefix"),
    pytest.param({"secret": "whsec_!!!!not base64 at all!!!!"}, "input.secret",
                 id="not base64"),
    pytest.param({"secret": ""}, "input.secret", id="empty secret"),
    pytest.param({"sellerId": "bm90IGFuIGlk"}, "input.sellerId", id="malformed sellerId"),
])
async def test_bad_input_is_a_typed_error_and_creates_nothing(
        api: Api, db: Database, fields: dict[str, Any], field: str) -> None:
    before = _count(db)
    payload = await _create(api, **fields)
    assert payload["webhookSubscription"] is None and payload["secret"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID", field)], payload
    assert payload["errors"][0]["message"]
    assert _count(db) == before


@pytest.mark.parametrize("seller", [
    pytest.param(lambda s: gid("Seller", UNKNOWN), id="unknown seller"),
    pytest.param(lambda s: gid("Warehouse", s.w1), id="id of a warehouse"),
])
async def test_a_seller_that_is_not_there_is_not_found_and_creates_nothing(
        api: Api, db: Database, seller: Any) -> None:
    s = shop(db)
    before = _count(db)
    payload = await _create(api, sellerId=seller(s))
    assert payload["webhookSubscription"] is None and payload["secret"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("NOT_FOUND", "input.sellerId")]
    assert _count(db) == before


@pytest.mark.parametrize("missing", ["url", "events"])
async def test_a_required_input_left_out_is_refused_and_creates_nothing(
        api: Api, db: Database, missing: str) -> None:
    data = {"url": "https://mailer.example/hook", "events": ["OUT_OF_STOCK"]}
    del data[missing]
    response = await api.post(CREATE, {"input": data})
    body = response.json()
    assert body["errors"] and "Traceback" not in str(body)
    assert not (body.get("data") or {}).get("webhookSubscriptionCreate")
    assert _count(db) == 0


async def test_an_unknown_event_is_refused_and_creates_nothing(
        api: Api, db: Database) -> None:
    response = await api.post(CREATE, {"input": {"url": "https://mailer.example/hook",
                                                 "events": ["SOLD_OUT"]}})
    body = response.json()
    assert body["errors"] and "Traceback" not in str(body)
    assert _count(db) == 0


async def test_every_event_of_the_enum_is_accepted(api: Api) -> None:
    events = ["STOCK_UPDATED", "OUT_OF_STOCK", "BACK_IN_STOCK", "LOW_STOCK"]
    sub = await _made(api, events=events)
    assert sorted(sub["events"]) == sorted(events)
    assert (await _made(api, url="http://127.0.0.1:9/hook"))["url"] == \
        "http://127.0.0.1:9/hook"


# ------------------------------------------------------------------ a seller's own only

async def test_a_seller_token_creates_for_its_own_seller_only(api: Api, db: Database) -> None:
    mine, other = shop(db), shop(db)
    token = api.token(Role.SELLER, mine.seller)
    own = await _create(api, token)  # sellerId left out: its own
    assert own["errors"] == [] and _is_whsec(own["secret"])
    assert own["webhookSubscription"]["seller"] == {"id": gid("Seller", mine.seller)}
    named = await _made(api, token, sellerId=gid("Seller", mine.seller))
    assert named["seller"] == {"id": gid("Seller", mine.seller)}

    before = _count(db)
    foreign = await _create(api, token, sellerId=gid("Seller", other.seller))
    unknown = await _create(api, token, sellerId=gid("Seller", UNKNOWN))
    assert foreign["webhookSubscription"] is None and foreign["secret"] is None
    assert _refusal(foreign) == _refusal(unknown)
    assert [(e["code"], e["field"]) for e in foreign["errors"]] == [
        ("NOT_FOUND", "input.sellerId")]
    assert _count(db) == before


async def test_a_seller_cannot_see_change_or_delete_anothers_or_a_marketplace_wide_one(
        api: Api, db: Database) -> None:
    mine, other = shop(db), shop(db)
    token = api.token(Role.SELLER, mine.seller)
    own = await _made(api, token)
    theirs = await _made(api, sellerId=gid("Seller", other.seller))
    everyone = await _made(api)
    missing = gid("WebhookSubscription", UNKNOWN)
    unknown_update = _refusal(await _update(api, missing, token, paused=True))
    unknown_delete = _refusal(await _delete(api, missing, token))
    assert [(c, f) for c, f, _ in unknown_update] == [("NOT_FOUND", "id")]
    assert [(c, f) for c, f, _ in unknown_delete] == [("NOT_FOUND", "id")]
    before = _rows(db)

    for sid in (theirs["id"], everyone["id"]):
        changed = await _update(api, sid, token, paused=True, url="https://evil.example/h",
                                secret=OTHER_SECRET, events=["STOCK_UPDATED"])
        assert changed["webhookSubscription"] is None
        assert _refusal(changed) == unknown_update
        gone = await _delete(api, sid, token)
        assert _refusal(gone) == unknown_delete
        assert await _node(api, sid, token) is None
        assert (await _node(api, sid))["status"] == "OK"  # type: ignore[index]
    assert _rows(db) == before

    assert await _listed(api, token) == [own["id"]]
    assert await _listed(api, token, sellerId=gid("Seller", other.seller)) == []
    assert await _listed(api, token, sellerId=gid("Seller", mine.seller)) == [own["id"]]
    # the admin sees all three
    assert await _listed(api) == [everyone["id"], theirs["id"], own["id"]]


async def test_a_seller_updates_and_deletes_its_own(api: Api, db: Database) -> None:
    s = shop(db)
    token = api.token(Role.SELLER, s.seller)
    own = await _made(api, sellerId=gid("Seller", s.seller))  # made by an admin
    assert (await _node(api, own["id"], token))["id"] == own["id"]  # type: ignore[index]
    paused = await _update(api, own["id"], token, paused=True)
    assert paused["errors"] == [] and paused["webhookSubscription"]["status"] == "PAUSED"
    assert await _delete(api, own["id"], token) == {"errors": []}
    assert await _node(api, own["id"]) is None


@pytest.mark.parametrize("who", ["storefront", "anonymous"])
async def test_storefronts_and_anonymous_callers_are_refused_everything(
        api: Api, db: Database, who: str) -> None:
    s = shop(db)
    sub = await _made(api, sellerId=gid("Seller", s.seller))
    token = api.token(Role.STOREFRONT) if who == "storefront" else None
    before = _rows(db)

    created = await _create(api, token)
    assert created["webhookSubscription"] is None and created["secret"] is None
    changed = await _update(api, sub["id"], token, paused=True)
    assert changed["webhookSubscription"] is None
    deleted = await _delete(api, sub["id"], token)
    for payload in (created, changed, deleted):
        assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]
    assert _rows(db) == before

    response = await api.post(LIST, {}, token)
    assert response.status_code == 200
    body = response.json()
    assert [e["extensions"]["code"] for e in body.get("errors", [])] == ["PERMISSION_DENIED"]
    assert body.get("data") is None or body["data"].get("webhookSubscriptions") is None
    node = (await api.post(NODE, {"id": sub["id"]}, token)).json()
    assert (node.get("data") or {}).get("node") is None


# ----------------------------------------------------------------- update and delete

async def test_update_pause_resume_and_delete(api: Api, db: Database) -> None:
    sub = (await _create(api, secret=SECRET))["webhookSubscription"]
    paused = await _update(api, sub["id"], paused=True,
                           events=["BACK_IN_STOCK", "OUT_OF_STOCK"],
                           url="http://127.0.0.1:9/new")
    assert paused["errors"] == []
    changed = paused["webhookSubscription"]
    assert changed["id"] == sub["id"] and changed["status"] == "PAUSED"
    assert sorted(changed["events"]) == ["BACK_IN_STOCK", "OUT_OF_STOCK"]
    assert changed["url"] == "http://127.0.0.1:9/new"
    assert await _node(api, sub["id"]) == changed

    # what is left out stays as it was
    kept = await _update(api, sub["id"], events=["LOW_STOCK"])
    assert kept["errors"] == []
    assert (kept["webhookSubscription"]["status"], kept["webhookSubscription"]["url"],
            kept["webhookSubscription"]["events"]) == (
        "PAUSED", "http://127.0.0.1:9/new", ["LOW_STOCK"])

    resumed = await _update(api, sub["id"], paused=False)
    assert resumed["errors"] == []
    assert resumed["webhookSubscription"]["status"] == "OK"
    assert resumed["webhookSubscription"]["lastError"] is None

    assert await _delete(api, sub["id"]) == {"errors": []}
    assert await _node(api, sub["id"]) is None
    assert sub["id"] not in await _listed(api)
    assert _count(db) == 0
    again = await _delete(api, sub["id"])
    assert [(e["code"], e["field"]) for e in again["errors"]] == [("NOT_FOUND", "id")]
    after = await _update(api, sub["id"], paused=True)
    assert after["webhookSubscription"] is None
    assert [(e["code"], e["field"]) for e in after["errors"]] == [("NOT_FOUND", "id")]


async def test_a_new_secret_is_taken_and_still_never_shown(api: Api, db: Database) -> None:
    sub = await _made(api, secret=SECRET)
    payload = await _update(api, sub["id"], secret=OTHER_SECRET)
    assert payload["errors"] == [] and payload["webhookSubscription"]["status"] == "OK"
    assert "secret" not in payload and "secret" not in payload["webhookSubscription"]
    assert db.scalar("SELECT secret FROM webhook_subscription") == OTHER_SECRET


@pytest.mark.parametrize(("fields", "field"), [
    pytest.param({"url": "mailto:x"}, "input.url", id="mailto url"),
    pytest.param({"url": "https://"}, "input.url", id="no host"),
    pytest.param({"events": []}, "input.events", id="no events"),
    pytest.param({"secret": "whsec_short"}, "input.secret", id="short secret"),
    pytest.param({"secret": "not-a-secret", "paused": True}, "input.secret",
                 id="bad secret with a pause"),
])
async def test_bad_update_is_a_typed_error_and_changes_nothing(
        api: Api, db: Database, fields: dict[str, Any], field: str) -> None:
    sub = await _made(api, secret=SECRET)
    before = _rows(db)
    payload = await _update(api, sub["id"], **fields)
    assert payload["webhookSubscription"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID", field)]
    assert _rows(db) == before
    assert await _node(api, sub["id"]) == sub


@pytest.mark.parametrize("bad", ["junk", "", "bm90IGFuIGlk"])
async def test_malformed_ids_are_invalid_and_node_answers_null(
        api: Api, db: Database, bad: str) -> None:
    await _made(api)
    before = _rows(db)
    changed = await _update(api, bad, paused=True)
    assert changed["webhookSubscription"] is None
    assert [(e["code"], e["field"]) for e in changed["errors"]] == [("INVALID", "id")]
    deleted = await _delete(api, bad)
    assert [(e["code"], e["field"]) for e in deleted["errors"]] == [("INVALID", "id")]
    assert await _node(api, bad) is None
    assert _rows(db) == before


async def test_an_id_of_another_type_is_not_found(api: Api, db: Database) -> None:
    s = shop(db)
    await _made(api)
    before = _rows(db)
    for other in (gid("Seller", s.seller), gid("SalesChannel", 1)):
        changed = await _update(api, other, paused=True)
        assert [(e["code"], e["field"]) for e in changed["errors"]] == [("NOT_FOUND", "id")]
        deleted = await _delete(api, other)
        assert [(e["code"], e["field"]) for e in deleted["errors"]] == [("NOT_FOUND", "id")]
    assert await _node(api, gid("WebhookSubscription", UNKNOWN)) is None
    assert _rows(db) == before


# ---------------------------------------------------------------------------- the list

async def test_the_list_is_newest_first_filtered_and_paged(api: Api, db: Database) -> None:
    a, b = shop(db), shop(db)
    made = [(await _made(api, sellerId=gid("Seller", seller)))["id"]
            for seller in (a.seller, b.seller, a.seller)]
    everyone = (await _made(api))["id"]
    page = (await api.gql(LIST, {"first": 2}))["webhookSubscriptions"]
    assert [e["node"]["id"] for e in page["edges"]] == [everyone, made[2]]
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
    rest = (await api.gql(LIST, {"first": 2, "after": page["pageInfo"]["endCursor"]})
            )["webhookSubscriptions"]
    assert [e["node"]["id"] for e in rest["edges"]] == [made[1], made[0]]
    assert rest["pageInfo"]["hasNextPage"] is False
    assert await _listed(api) == [everyone, made[2], made[1], made[0]]
    assert await _listed(api, sellerId=gid("Seller", a.seller)) == [made[2], made[0]]
    assert await _listed(api, sellerId=gid("Seller", b.seller)) == [made[1]]
    assert await _listed(api, sellerId=gid("Seller", UNKNOWN)) == []

    seller_a = api.token(Role.SELLER, a.seller)
    first = (await api.gql(LIST, {"first": 1}, seller_a))["webhookSubscriptions"]
    assert [e["node"]["id"] for e in first["edges"]] == [made[2]]
    assert first["pageInfo"]["hasNextPage"] is True
    assert await _listed(api, seller_a, after=first["pageInfo"]["endCursor"]) == [made[0]]


async def test_an_empty_list(api: Api) -> None:
    data = (await api.gql(LIST, {}))["webhookSubscriptions"]
    assert data == {"edges": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}


@pytest.mark.parametrize("first", [101, -1])
async def test_first_above_one_hundred_or_negative_is_a_graphql_error(
        api: Api, first: int) -> None:
    await _made(api)
    body = (await api.post(LIST, {"first": first})).json()
    assert body["errors"] and "first" in body["errors"][0]["message"].lower()
    assert "Traceback" not in str(body)
