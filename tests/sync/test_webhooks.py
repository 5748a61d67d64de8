"""Stock webhooks delivered to a real receiver on loopback (API.md "Stock webhooks",
"Signed deliveries"): every cause of change, crossings in order, coalescing, signatures,
failures and the retry schedule; SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from domain import sync, webhooks
from domain.errors import DomainError
from domain.models import OrderType, Role, WebhookEvent
from domain.permissions import Principal
from domain.services import batches, catalog, orders, stock
from domain.services import webhooks as subscriptions
from domain.uow import UnitOfWork
from tests.conftest import Database
from tests.factories import ADMIN, Shop, shop
from tests.receiver import Receiver, receiving
from workers.delivery import HttpPost

EVERY = list(WebhookEvent)
GID = sync.global_id


@dataclass
class Hooked:
    db: Database
    shop: Shop
    receiver: Receiver
    sync: sync.Sync

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db.writer, self.sync, reader=self.db.reader)

    def subscribe(self, events: list[WebhookEvent] = EVERY, seller: int | None = None,
                  url: str | None = None) -> int:
        created, _ = subscriptions.create(
            self.uow(), ADMIN, seller_id=seller, data=subscriptions.SubscriptionInput(
                url=url or self.receiver.url, events=events, secret=self.receiver.secret))
        return created.id

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        with self.receiver.lock:
            bodies = [r.body for r in self.receiver.requests if 200 <= r.status < 300]
        return [b for b in bodies if type_ is None or b["type"] == type_]

    def settled(self, timeout: float = 10.0) -> None:
        """Until the relay handed on every movement and nothing is pending (the receiver
        records a request before answering)."""
        deadline = time.monotonic() + timeout
        while True:
            last = self.db.scalar("SELECT COALESCE(MAX(id), 0) FROM stock_movement")
            position = self.sync.relay.position
            if position is not None and position >= last and \
                    not self.db.scalar("SELECT count(*) FROM webhook_delivery"):
                return
            assert time.monotonic() < deadline, "events still pending"
            time.sleep(0.02)

    def subscription(self, subscription_id: int) -> dict[str, Any]:
        return dict(self.db.rows(
            "SELECT failing, paused, last_error, failures, retry_at, last_delivered_at "
            "FROM webhook_subscription WHERE id = :i", i=subscription_id)[0]._mapping)


@pytest.fixture
def hooked(db: Database) -> Iterator[Hooked]:
    s = shop(db, stock1=3, stock2=0)
    with receiving() as receiver:
        post = HttpPost()
        deliverer = webhooks.Deliverer(db.engine, post)
        pusher = sync.Pusher(db.engine, post)
        push, deliver = sync.ThreadKick(pusher), sync.ThreadKick(deliverer.deliver)
        background = sync.Sync(db.engine, push, deliver=deliver)
        background.SWEEP_EVERY = 0.1
        background.start()
        try:
            yield Hooked(db, s, receiver, background)
        finally:
            background.close()
            push.close()
            deliver.close()
            post.close()


def _order(h: Hooked, quantity: int, warehouse_variant: int | None = None) -> orders.OrderView:
    return orders.create(h.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                         lines=[orders.LineRequest(warehouse_variant or h.shop.variant,
                                                   quantity)])


def test_an_order_that_empties_a_shelf_and_its_cancel_send_signed_crossings(
    hooked: Hooked,
) -> None:
    h = hooked
    subscription = h.subscribe()
    labels = {"subscription": GID("WebhookSubscription", subscription)}

    def counted() -> tuple[float, float]:  # process-wide: the other database's run too
        return (REGISTRY.get_sample_value("stockyard_webhook_deliveries_total",
                                          labels | {"result": "ok"}) or 0.0,
                REGISTRY.get_sample_value("stockyard_webhook_delivery_lag_seconds_count",
                                          labels) or 0.0)

    before = counted()
    order = _order(h, 3)  # w1: 3 -> available 0
    h.settled()
    orders.cancel(h.uow(), ADMIN, order.id)
    h.settled()
    # the deliveries are counted, each with its lag since the change (domain/metrics.py)
    sent = len(h.receiver.requests)
    assert counted() == (before[0] + sent, before[1] + sent)

    received = h.receiver.requests
    assert received and all(r.signed for r in received)
    assert len({r.headers["webhook-id"] for r in received}) == len(received)
    out, back = h.events("stock.out_of_stock"), h.events("stock.back_in_stock")
    assert [e["data"]["quantityAvailable"] for e in out] == [0]
    assert [e["data"]["quantityAvailable"] for e in back] == [3]
    data = out[0]["data"]
    assert data == {"variantId": GID("ProductVariant", h.shop.variant),
                    "sku": data["sku"], "warehouseId": GID("Warehouse", h.shop.w1),
                    "quantity": 3, "quantityAllocated": 3, "quantityAvailable": 0,
                    "lowStockThreshold": None, "version": data["version"]}
    assert back[0]["data"]["version"] > data["version"]
    assert out[0]["timestamp"].endswith("+00:00")
    updated = h.events("stock.updated")
    assert updated and updated[-1]["data"]["quantityAvailable"] == 3
    # the untouched warehouse (0 on hand, never changed) sent nothing
    assert {e["data"]["warehouseId"] for e in h.events()} == {GID("Warehouse", h.shop.w1)}


def test_every_cause_of_change_fires_and_low_stock_crosses_its_threshold(
    hooked: Hooked,
) -> None:
    h = hooked
    s = h.shop
    stock.set_low_stock_threshold(h.uow(), ADMIN, variant_id=s.variant, warehouse_id=s.w1,
                                  threshold=2)
    h.subscribe()
    seen = 0

    def fired(what: str) -> None:
        nonlocal seen
        h.settled()
        now = len(h.events())
        assert now > seen, f"{what} fired nothing"
        seen = now

    order = _order(h, 2)  # available 3 -> 1: LOW_STOCK
    fired("an order")
    assert [e["data"]["quantityAvailable"] for e in h.events("stock.low")] == [1]
    orders.fulfill(h.uow(), ADMIN, order.id, [orders.FulfillRequest(order.lines[0].id, 1,
                                                                    None)])
    fired("a fulfilment")
    orders.cancel(h.uow(), ADMIN, order.id)
    fired("a cancel")
    stock.adjust(h.uow(), ADMIN, variant_id=s.variant, warehouse_id=s.w1, delta=4,
                 reason="found")
    fired("an adjustment")
    stock.transfer(h.uow(), ADMIN, variant_id=s.variant, from_warehouse_id=s.w1,
                   to_warehouse_id=s.w2, quantity=1)
    fired("a transfer")
    catalog.set_stock_quantities(h.uow(), ADMIN, s.variant, [catalog.StockQuantity(s.w2, 9)])
    fired("a stock update")
    draft = orders.create(h.uow(), ADMIN, type=OrderType.DRAFT, shipping_country="DE",
                          lines=[orders.LineRequest(s.variant, 1)])
    orders.update_line(h.uow(), ADMIN, draft.lines[0].id, 2)
    fired("an order edit")
    regular = _order(h, 1)
    batch = batches.create(h.uow(), ADMIN, warehouse_id=s.w1, order_ids=[regular.id])
    batches.complete(h.uow(), ADMIN, batch.id)
    fired("a pick batch")

    events = h.events()
    by_stock: dict[str, list[int]] = {}
    for e in events:
        by_stock.setdefault(e["data"]["warehouseId"], []).append(e["data"]["version"])
    # a subscriber orders by version: each stock's events arrive in version order
    assert all(v == sorted(v) for v in by_stock.values()), by_stock


def test_a_seller_subscription_hears_only_its_own_stocks_and_chosen_events(
    hooked: Hooked,
) -> None:
    h = hooked
    other = shop(h.db, stock1=1)
    mine = h.subscribe(events=[WebhookEvent.OUT_OF_STOCK], seller=h.shop.seller)
    _order(h, 1, other.variant)  # the other seller's shelf empties
    _order(h, 3)  # ours too
    h.settled()
    events = h.events()
    assert [e["type"] for e in events] == ["stock.out_of_stock"]
    assert events[0]["data"]["variantId"] == GID("ProductVariant", h.shop.variant)
    assert h.subscription(mine)["last_delivered_at"] is not None


def test_changes_committed_before_a_subscription_are_not_sent(db: Database) -> None:
    """The relay has not handed the order on yet when the subscription is made: the ledger's
    history is not replayed to it, only what commits afterwards."""
    s = shop(db, stock1=3)
    background = sync.Sync(db.engine, lambda _c: None, deliver=lambda _s: None)
    uow = lambda: UnitOfWork(db.writer, background, reader=db.reader)  # noqa: E731
    orders.create(uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(s.variant, 3)])
    subscriptions.create(uow(), ADMIN, seller_id=None, data=subscriptions.SubscriptionInput(
        url="http://127.0.0.1:9/hook", events=EVERY))
    background.relay.run_once()
    assert db.scalar("SELECT count(*) FROM webhook_delivery") == 0
    stock.adjust(uow(), ADMIN, variant_id=s.variant, warehouse_id=s.w1, delta=1,
                 reason="found")
    background.relay.run_once()
    assert [r[0] for r in db.rows("SELECT event FROM webhook_delivery ORDER BY id")] == [
        "BACK_IN_STOCK", "STOCK_UPDATED"]


def test_stock_updated_coalesces_while_crossings_are_each_kept(db: Database) -> None:
    """No deliverer runs: what a burst records waits, coalesced."""
    s = shop(db, stock1=1)
    background = sync.Sync(db.engine, lambda _c: None, deliver=lambda _s: None)
    uow = lambda: UnitOfWork(db.writer, background, reader=db.reader)  # noqa: E731
    subscriptions.create(uow(), ADMIN, seller_id=None, data=subscriptions.SubscriptionInput(
        url="http://127.0.0.1:9/hook", events=EVERY))
    for _ in range(5):
        order = orders.create(uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                              lines=[orders.LineRequest(s.variant, 1)])
        orders.cancel(uow(), ADMIN, order.id)
    background.relay.run_once()
    background.relay.run_once()  # at least once: a second hand-off records nothing new
    rows = db.rows("SELECT event, version FROM webhook_delivery ORDER BY version, id")
    events = [r[0] for r in rows]
    assert events.count("STOCK_UPDATED") == 1
    assert events.count("OUT_OF_STOCK") == 5 and events.count("BACK_IN_STOCK") == 5
    assert rows[-1][0] == "STOCK_UPDATED"  # the latest figures, after the last crossing
    crossings = [e for e in events if e != "STOCK_UPDATED"]
    assert crossings == ["OUT_OF_STOCK", "BACK_IN_STOCK"] * 5


def test_401_turns_the_subscription_failing_until_its_secret_changes(hooked: Hooked) -> None:
    h = hooked
    h.receiver.default = 401
    sid = h.subscribe()
    _order(h, 1)
    deadline = time.monotonic() + 10
    while not h.subscription(sid)["failing"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    row = h.subscription(sid)
    assert "credentials" in row["last_error"]
    tried = len(h.receiver.requests)
    _order(h, 1)
    time.sleep(0.5)
    assert len(h.receiver.requests) == tried  # nothing at all while FAILING
    h.receiver.default = 200
    # a new url (the same receiver, another path) resumes it with what was pending
    subscriptions.update(h.uow(), ADMIN, sid, subscriptions.SubscriptionInput(
        url=h.receiver.url + "?resumed"))
    h.settled()
    row = h.subscription(sid)
    assert not row["failing"] and row["last_error"] is None
    assert len(h.receiver.requests) > tried


def test_failures_follow_the_schedule_then_turn_failing(
    hooked: Hooked, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = hooked
    monkeypatch.setattr(webhooks, "SCHEDULE", (0.05, 0.1, 0.2))
    h.receiver.default = 500
    sid = h.subscribe(events=[WebhookEvent.OUT_OF_STOCK])
    _order(h, 3)
    deadline = time.monotonic() + 10
    while not h.subscription(sid)["failing"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    attempts = list(h.receiver.requests)
    assert len(attempts) == 4  # the first try and three retries
    # the same message every time (same webhook-id), stamped and signed anew
    assert len({r.headers["webhook-id"] for r in attempts}) == 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert all(g >= 0.04 for g in gaps), gaps
    assert "retry schedule" in h.subscription(sid)["last_error"]
    assert h.db.scalar("SELECT count(*) FROM webhook_delivery") == 1  # kept for a resume


def test_429_waits_for_retry_after_and_a_pause_holds_everything(hooked: Hooked) -> None:
    h = hooked
    h.receiver.answer(429, headers={"Retry-After": "1"})
    sid = h.subscribe(events=[WebhookEvent.OUT_OF_STOCK])
    _order(h, 3)
    h.settled(timeout=10)
    first, second = h.receiver.requests[0], h.receiver.requests[-1]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.9

    subscriptions.update(h.uow(), ADMIN, sid, subscriptions.SubscriptionInput(paused=True))
    stock.adjust(h.uow(), ADMIN, variant_id=h.shop.variant, warehouse_id=h.shop.w1, delta=1,
                 reason="found")
    h.settled()  # the relay passed the change
    time.sleep(0.3)
    assert h.db.scalar("SELECT count(*) FROM webhook_delivery") == 0  # paused: not recorded
    assert len(h.receiver.requests) == 2


def test_a_stock_driven_across_zero_many_times_delivers_every_crossing_in_order(
    hooked: Hooked,
) -> None:
    """Orders and cancels race on a 1-unit shelf; the subscriber gets every crossing, in
    version order, and its last OUT_OF_STOCK / BACK_IN_STOCK matches the stock."""
    h = hooked
    s = shop(h.db, stock1=1)
    h.subscribe(events=[WebhookEvent.OUT_OF_STOCK, WebhookEvent.BACK_IN_STOCK],
                seller=s.seller)
    for _ in range(20):
        order = orders.create(h.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                              lines=[orders.LineRequest(s.variant, 1)])
        orders.cancel(h.uow(), ADMIN, order.id)
    last = orders.create(h.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                         lines=[orders.LineRequest(s.variant, 1)])
    assert last.lines
    h.settled()
    kinds = [e["type"] for e in h.events()]
    assert kinds == ["stock.out_of_stock", "stock.back_in_stock"] * 20 + ["stock.out_of_stock"]
    versions = [e["data"]["version"] for e in h.events()]
    assert versions == sorted(versions)


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["order", "cancel", "adjust"]),
                                st.integers(1, 3)), min_size=1, max_size=12))
def test_after_it_settles_the_last_crossing_matches_the_stock(
    db: Database, steps: list[tuple[str, int]]
) -> None:
    """Any sequence of orders, cancels and adjustments: the crossings recorded for a stock
    alternate, and the last one says what the stock shows."""
    db.reset()
    s = shop(db, stock1=2)
    background = sync.Sync(db.engine, lambda _c: None, deliver=lambda _s: None)
    uow = lambda: UnitOfWork(db.writer, background, reader=db.reader)  # noqa: E731
    subscriptions.create(uow(), ADMIN, seller_id=None, data=subscriptions.SubscriptionInput(
        url="http://127.0.0.1:9/hook",
        events=[WebhookEvent.OUT_OF_STOCK, WebhookEvent.BACK_IN_STOCK]))
    placed: list[int] = []
    for kind, n in steps:
        try:
            if kind == "order":
                placed.append(orders.create(uow(), ADMIN, type=OrderType.REGULAR,
                                            shipping_country="DE",
                                            lines=[orders.LineRequest(s.variant, n)]).id)
            elif kind == "cancel" and placed:
                orders.cancel(uow(), ADMIN, placed.pop(0))
            elif kind == "adjust":
                stock.adjust(uow(), ADMIN, variant_id=s.variant, warehouse_id=s.w1,
                             delta=n, reason="found")
        except DomainError:
            pass  # refused (no stock): nothing changed
        background.relay.run_once()
    rows = db.rows("SELECT d.event FROM webhook_delivery d JOIN stock st ON st.id = d.stock_id "
                   "WHERE st.warehouse_id = :w ORDER BY d.version", w=s.w1)
    kinds = [r[0] for r in rows]
    assert all(a != b for a, b in itertools.pairwise(kinds)), kinds
    available = db.scalar("SELECT quantity - quantity_allocated FROM stock "
                          "WHERE variant_id = :v AND warehouse_id = :w", v=s.variant, w=s.w1)
    if kinds:
        assert kinds[-1] == ("OUT_OF_STOCK" if available == 0 else "BACK_IN_STOCK")
    else:
        assert available > 0


def test_the_signature_verifies_with_the_standard_webhooks_library(hooked: Hooked) -> None:
    h = hooked
    h.subscribe(events=[WebhookEvent.STOCK_UPDATED])
    stock.adjust(h.uow(), ADMIN, variant_id=h.shop.variant, warehouse_id=h.shop.w1, delta=1,
                 reason="found")
    h.settled()
    [request] = h.receiver.requests
    raw = json.dumps(request.body, separators=(",", ":"))
    Webhook(h.receiver.secret).verify(raw, request.headers)
    assert request.headers["content-type"] == "application/json"


def test_a_seller_token_cannot_subscribe_marketplace_wide(db: Database) -> None:
    s = shop(db)
    seller = Principal(token_id=1, role=Role.SELLER, seller_id=s.seller)
    created, secret = subscriptions.create(
        db.uow(), seller, seller_id=None,
        data=subscriptions.SubscriptionInput(url="https://example.com/h",
                                             events=[WebhookEvent.OUT_OF_STOCK]))
    assert created.seller_id == s.seller and secret.startswith("whsec_")


def test_an_event_recorded_during_a_slow_delivery_goes_out_right_after_it(db: Database) -> None:
    """Its kick finds the subscription held; the deliverer looks again when it lets go
    (without that, only the sweeper would send it, here not within the test)."""
    s = shop(db, stock1=5)
    with receiving() as receiver:
        receiver.answer(200, delay=0.5)  # the first event's delivery takes half a second
        post = HttpPost()
        deliverer = webhooks.Deliverer(db.engine, post)
        push, deliver = sync.ThreadKick(sync.Pusher(db.engine, post)), \
            sync.ThreadKick(deliverer.deliver)
        background = sync.Sync(db.engine, push, deliver=deliver)
        background.SWEEP_EVERY = 60.0
        background.start()
        h = Hooked(db, s, receiver, background)
        try:
            h.subscribe([WebhookEvent.STOCK_UPDATED])
            _order(h, 1)
            deadline = time.monotonic() + 5
            while receiver.script:  # until the first delivery reached the receiver
                assert time.monotonic() < deadline
                time.sleep(0.005)
            _order(h, 1)
            committed = time.monotonic()
            while [e["data"]["quantityAvailable"] for e in h.events()][-1:] != [3]:
                assert time.monotonic() - committed < 3.0, h.events()
                time.sleep(0.01)
        finally:
            background.close()
            push.close()
            deliver.close()
            post.close()
