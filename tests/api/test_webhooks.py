"""Webhook subscriptions over HTTP (API.md "Stock webhooks", "Signed deliveries"): the
secret shown once, typed errors that change nothing, a seller's own subscriptions only,
pause, delete and the list. Deliveries themselves: tests/sync/test_webhooks.py."""

from __future__ import annotations

from typing import Any

import pytest

from domain.models import Role
from tests.conftest import Api, Database
from tests.factories import gid, shop

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FIELDS = ("id url events status lastError lastErrorAt lastDeliveredAt pendingDeliveries "
          "seller { id }")
CREATE = f"""mutation($input: WebhookSubscriptionCreateInput!) {{
  webhookSubscriptionCreate(input: $input) {{ webhookSubscription {{ {FIELDS} }} secret
  errors {{ code field message }} }} }}"""
UPDATE = f"""mutation($id: ID!, $input: WebhookSubscriptionUpdateInput!) {{
  webhookSubscriptionUpdate(id: $id, input: $input) {{ webhookSubscription {{ {FIELDS} }}
  errors {{ code field message }} }} }}"""
DELETE = """mutation($id: ID!) { webhookSubscriptionDelete(id: $id) {
  errors { code field message } } }"""
LIST = """query($sellerId: ID, $first: Int, $after: String) {
  webhookSubscriptions(sellerId: $sellerId, first: $first, after: $after) {
    edges { node { id } } pageInfo { hasNextPage endCursor } } }"""
NODE = "query($id: ID!) { node(id: $id) { ... on WebhookSubscription { id url status } } }"


async def _create(api: Api, token: str | None = "admin", **fields: Any) -> dict[str, Any]:
    data = {"url": "https://mailer.example/hook", "events": ["OUT_OF_STOCK"], **fields}
    payload = (await api.gql(CREATE, {"input": data}, token))["webhookSubscriptionCreate"]
    return payload  # type: ignore[no-any-return]


def _count(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM webhook_subscription"))


async def test_create_shows_the_secret_once(api: Api, db: Database) -> None:
    s = shop(db)
    given = await _create(api, sellerId=gid("Seller", s.seller), secret=SECRET,
                          events=["STOCK_UPDATED", "LOW_STOCK"])
    assert given["errors"] == [] and given["secret"] == SECRET
    sub = given["webhookSubscription"]
    assert sub["events"] == ["STOCK_UPDATED", "LOW_STOCK"]
    assert sub["seller"] == {"id": gid("Seller", s.seller)}
    assert (sub["status"], sub["lastError"], sub["lastErrorAt"], sub["lastDeliveredAt"],
            sub["pendingDeliveries"]) == ("OK", None, None, None, 0)
    generated = await _create(api)  # an admin's, of every stock
    assert generated["secret"].startswith("whsec_") and generated["secret"] != SECRET
    assert generated["webhookSubscription"]["seller"] is None
    # never readable again: the type has no secret
    answer = await api.post("query($id: ID!) { node(id: $id) { ... on WebhookSubscription "
                            "{ secret } } }", {"id": sub["id"]})
    assert answer.json()["errors"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"url": "ftp://mailer.example/hook"}, "input.url"),
    ({"url": "not a url"}, "input.url"),
    ({"events": []}, "input.events"),
    ({"secret": "whsec_short"}, "input.secret"),
    ({"sellerId": "bm90IGFuIGlk"}, "input.sellerId"),
])
async def test_bad_input_is_a_typed_error_and_creates_nothing(
        api: Api, db: Database, fields: dict[str, Any], field: str) -> None:
    before = _count(db)
    payload = await _create(api, **fields)
    assert payload["webhookSubscription"] is None and payload["secret"] is None
    assert [e["field"] for e in payload["errors"]] == [field], payload
    assert payload["errors"][0]["code"] == "INVALID"
    assert _count(db) == before


async def test_a_seller_token_manages_only_its_own(api: Api, db: Database) -> None:
    mine, other = shop(db), shop(db)
    token = api.token(Role.SELLER, mine.seller)
    own = await _create(api, token)  # sellerId left out: its own
    assert own["webhookSubscription"]["seller"] == {"id": gid("Seller", mine.seller)}
    before = _count(db)
    foreign = await _create(api, token, sellerId=gid("Seller", other.seller))
    unknown = await _create(api, token, sellerId=gid("Seller", 999_999))
    assert [(e["code"], e["field"], e["message"]) for e in foreign["errors"]] == [
        (e["code"], e["field"], e["message"]) for e in unknown["errors"]]
    assert foreign["errors"][0]["code"] == "NOT_FOUND" and _count(db) == before

    theirs = (await _create(api, sellerId=gid("Seller", other.seller)))["webhookSubscription"]
    everyone = (await _create(api))["webhookSubscription"]
    for sid in (theirs["id"], everyone["id"]):
        changed = (await api.gql(UPDATE, {"id": sid, "input": {"paused": True}},
                                 token))["webhookSubscriptionUpdate"]
        assert [e["code"] for e in changed["errors"]] == ["NOT_FOUND"]
        gone = (await api.gql(DELETE, {"id": sid}, token))["webhookSubscriptionDelete"]
        assert [e["code"] for e in gone["errors"]] == ["NOT_FOUND"]
        assert (await api.gql(NODE, {"id": sid}, token))["node"] is None
    listed = (await api.gql(LIST, {}, token))["webhookSubscriptions"]["edges"]
    assert [e["node"]["id"] for e in listed] == [own["webhookSubscription"]["id"]]
    storefront = await api.post(CREATE, {"input": {
        "url": "https://x.example/h", "events": ["OUT_OF_STOCK"]}},
        api.token(Role.STOREFRONT))
    denied = storefront.json()["data"]["webhookSubscriptionCreate"]
    assert [e["code"] for e in denied["errors"]] == ["PERMISSION_DENIED"]


async def test_update_pause_resume_and_delete(api: Api, db: Database) -> None:
    sub = (await _create(api))["webhookSubscription"]
    paused = (await api.gql(UPDATE, {"id": sub["id"], "input": {
        "paused": True, "events": ["BACK_IN_STOCK", "OUT_OF_STOCK"],
        "url": "http://127.0.0.1:9/new"}}))["webhookSubscriptionUpdate"]
    assert paused["errors"] == []
    assert paused["webhookSubscription"]["status"] == "PAUSED"
    assert paused["webhookSubscription"]["events"] == ["OUT_OF_STOCK", "BACK_IN_STOCK"]
    assert paused["webhookSubscription"]["url"] == "http://127.0.0.1:9/new"
    bad = (await api.gql(UPDATE, {"id": sub["id"], "input": {"url": "mailto:x"}})
           )["webhookSubscriptionUpdate"]
    assert [e["field"] for e in bad["errors"]] == ["input.url"]
    resumed = (await api.gql(UPDATE, {"id": sub["id"], "input": {"paused": False}})
               )["webhookSubscriptionUpdate"]
    assert resumed["webhookSubscription"]["status"] == "OK"
    assert (await api.gql(DELETE, {"id": sub["id"]}))["webhookSubscriptionDelete"] == {
        "errors": []}
    assert (await api.gql(NODE, {"id": sub["id"]}))["node"] is None
    again = (await api.gql(DELETE, {"id": sub["id"]}))["webhookSubscriptionDelete"]
    assert [(e["code"], e["field"]) for e in again["errors"]] == [("NOT_FOUND", "id")]
    malformed = (await api.gql(DELETE, {"id": "junk"}))["webhookSubscriptionDelete"]
    assert [e["code"] for e in malformed["errors"]] == ["INVALID"]


async def test_the_list_is_newest_first_filtered_and_paged(api: Api, db: Database) -> None:
    a, b = shop(db), shop(db)
    made = [(await _create(api, sellerId=gid("Seller", seller)))["webhookSubscription"]["id"]
            for seller in (a.seller, b.seller, a.seller)]
    page = (await api.gql(LIST, {"first": 2}))["webhookSubscriptions"]
    assert [e["node"]["id"] for e in page["edges"]] == [made[2], made[1]]
    assert page["pageInfo"]["hasNextPage"]
    rest = (await api.gql(LIST, {"first": 2, "after": page["pageInfo"]["endCursor"]})
            )["webhookSubscriptions"]
    assert [e["node"]["id"] for e in rest["edges"]] == [made[0]]
    only_a = (await api.gql(LIST, {"sellerId": gid("Seller", a.seller)})
              )["webhookSubscriptions"]
    assert [e["node"]["id"] for e in only_a["edges"]] == [made[2], made[0]]
