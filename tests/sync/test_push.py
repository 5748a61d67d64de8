"""Pushing listings to a real receiver on loopback (API.md "Sales channels", "Signed
deliveries"): figures, versions, coalescing, faults; SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from domain import signing, sync
from domain.errors import InvalidState
from domain.models import OrderType, SyncMode
from domain.services import catalog, channels, orders, stock
from domain.services.stock_import import import_stock
from domain.uow import UnitOfWork
from tests.commands import free_port
from tests.conftest import Database
from tests.factories import ADMIN, Shop, shop
from tests.receiver import Receiver, receiving
from workers.delivery import HttpPost


@dataclass
class Synced:
    db: Database
    shop: Shop
    receiver: Receiver
    sync: sync.Sync
    channel: int

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db.writer, self.sync, reader=self.db.reader)

    def listings(self, *pairs: tuple[str, str]) -> None:
        channels.upsert_listings(self.uow(), ADMIN, self.channel,
                                 [channels.ListingInput(e, s) for e, s in pairs])

    def row(self, external_id: str) -> dict[str, object]:
        return dict(self.db.rows(
            "SELECT figure, version, acked_version, pushed_quantity, pushed_version "
            "FROM listing WHERE external_id = :e", e=external_id)[0]._mapping)

    def settled(self, timeout: float = 10.0) -> None:
        """Until the channel acknowledged every listing (the receiver applies an update
        before its answer reaches the pusher)."""
        deadline = time.monotonic() + timeout
        while self.db.scalar("SELECT count(*) FROM listing WHERE variant_id IS NOT NULL "
                             "AND (acked_version IS NULL OR acked_version < version)"):
            assert time.monotonic() < deadline, "listings still pending"
            time.sleep(0.02)

    def channel_row(self) -> dict[str, object]:
        return dict(self.db.rows("SELECT failing, last_error, retry_at, failures "
                                 "FROM sales_channel WHERE id = :c", c=self.channel)[0]._mapping)


@pytest.fixture
def synced(db: Database) -> Iterator[Synced]:
    s = shop(db, stock1=10, stock2=5)
    with receiving() as receiver:
        post = HttpPost()
        pusher = sync.Pusher(db.engine, post)
        kick = sync.ThreadKick(pusher)
        background = sync.Sync(db.engine, kick)
        background.SWEEP_EVERY = 0.2
        channel, _ = channels.create_channel(
            UnitOfWork(db.writer, background), ADMIN, seller_id=s.seller,
            data=channels.ChannelInput(name="Shop", endpoint_url=receiver.url,
                                       secret=receiver.secret))
        background.start()
        try:
            yield Synced(db, s, receiver, background, channel.id)
        finally:
            background.close()
            kick.close()
            post.close()


def sku_of(s: Shop) -> str:
    return str(s.world.db.rows("SELECT sku FROM product_variant WHERE id = :v",
                               v=s.variant)[0][0])


def test_a_listing_gets_its_figure_signed_then_every_order_change(synced: Synced) -> None:
    sku = sku_of(synced.shop)
    synced.listings(("L1", sku), ("L2", sku), ("GHOST", "NO-SUCH-SKU"))
    synced.receiver.wait_for({"L1": 15, "L2": 15})

    order = orders.create(synced.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                          lines=[orders.LineRequest(synced.shop.variant, 4)])
    synced.receiver.wait_for({"L1": 11, "L2": 11})
    orders.cancel(synced.uow(), ADMIN, order.id)
    synced.receiver.wait_for({"L1": 15, "L2": 15})
    stock.adjust(synced.uow(), ADMIN, variant_id=synced.shop.variant,
                 warehouse_id=synced.shop.w2, delta=-5, reason="broken")
    synced.receiver.wait_for({"L1": 10, "L2": 10})
    synced.settled()

    received = synced.receiver.requests
    assert all(r.signed for r in received)
    assert {r.body["type"] for r in received} == {"inventory.updated"}
    assert "GHOST" not in {u["externalId"] for u in synced.receiver.updates()}
    assert synced.receiver.went_back == []
    row = synced.row("L1")
    assert row["figure"] == row["pushed_quantity"] == 10
    assert row["version"] == row["acked_version"] == row["pushed_version"] == 4


def test_track_inventory_and_untracked_quantity_reach_the_listing(synced: Synced) -> None:
    synced.listings(("L1", sku_of(synced.shop)))
    synced.receiver.wait_for({"L1": 15})
    catalog.update_variant(synced.uow(), ADMIN, synced.shop.variant, track_inventory=False)
    synced.receiver.wait_for({"L1": 100})
    channels.update_channel(synced.uow(), ADMIN, synced.channel,
                            channels.ChannelInput(untracked_quantity=7))
    synced.receiver.wait_for({"L1": 7})


def test_a_channel_counts_only_its_warehouses(synced: Synced) -> None:
    synced.listings(("L1", sku_of(synced.shop)))
    synced.receiver.wait_for({"L1": 15})
    channels.update_channel(synced.uow(), ADMIN, synced.channel,
                            channels.ChannelInput(warehouse_ids=[synced.shop.w2]))
    synced.receiver.wait_for({"L1": 5})


def test_a_variant_created_later_takes_its_unmatched_listing(synced: Synced) -> None:
    synced.listings(("LATER", "COMES-LATER"))
    assert synced.row("LATER")["figure"] is None
    variant = synced.shop.world.variant(synced.shop.product, sku="COMES-LATER",
                                        stocks={synced.shop.w1: 3})
    assert variant
    synced.receiver.wait_for({"LATER": 3})


def test_a_burst_of_changes_coalesces_and_versions_never_go_back(synced: Synced) -> None:
    synced.listings(("L1", sku_of(synced.shop)))
    synced.receiver.wait_for({"L1": 15})
    for _ in range(12):
        orders.create(synced.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                      lines=[orders.LineRequest(synced.shop.variant, 1)])
    synced.receiver.wait_for({"L1": 3})
    versions = [u["version"] for u in synced.receiver.updates() if u["externalId"] == "L1"]
    assert versions == sorted(versions) and versions[-1] == synced.row("L1")["version"]
    assert len(versions) < 12  # a few pushes, not one per order


def test_credentials_refused_fail_the_channel_until_its_secret_changes(
        synced: Synced) -> None:
    synced.receiver.answer(401)
    synced.listings(("L1", sku_of(synced.shop)))
    deadline = time.monotonic() + 10
    while not synced.channel_row()["failing"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "credentials" in str(synced.channel_row()["last_error"])
    stock.adjust(synced.uow(), ADMIN, variant_id=synced.shop.variant,
                 warehouse_id=synced.shop.w1, delta=-1, reason="count")
    time.sleep(0.5)
    assert len(synced.receiver.requests) == 1  # silence while failing
    with pytest.raises(InvalidState):
        channels.request_sync(synced.uow(), ADMIN, synced.channel)

    secret = signing.new_secret()
    synced.receiver.secret = secret
    channels.update_channel(synced.uow(), ADMIN, synced.channel,
                            channels.ChannelInput(secret=secret))
    synced.receiver.wait_for({"L1": 14})
    synced.settled()  # the pusher records the answer after the receiver applied it
    assert synced.channel_row()["failing"] is False or synced.channel_row()["failing"] == 0
    assert synced.channel_row()["last_error"] is None


def test_server_errors_are_retried_with_backoff_and_429_waits(synced: Synced) -> None:
    synced.receiver.answer(500, times=2)
    synced.listings(("L1", sku_of(synced.shop)))
    synced.receiver.wait_for({"L1": 15}, timeout=15)  # 1 s, then 2 s (with jitter)
    assert synced.receiver.requests[0].headers["webhook-id"] == \
        synced.receiver.requests[1].headers["webhook-id"]  # a retry keeps the message id
    synced.receiver.answer(429, headers={"Retry-After": "1"})
    started = time.monotonic()
    stock.adjust(synced.uow(), ADMIN, variant_id=synced.shop.variant,
                 warehouse_id=synced.shop.w1, delta=-1, reason="count")
    synced.receiver.wait_for({"L1": 14})
    assert time.monotonic() - started >= 0.9
    synced.settled()  # the pusher records the answer after the receiver applied it
    assert synced.channel_row()["last_error"] is None


def test_a_manual_sync_pushes_every_listing_again(synced: Synced) -> None:
    synced.listings(("L1", sku_of(synced.shop)))
    synced.receiver.wait_for({"L1": 15})
    # acknowledged first: a sync during the first push's acknowledgement is answered by
    # that push (it carried the same figure and version)
    synced.settled()
    before = len(synced.receiver.requests)
    channels.request_sync(synced.uow(), ADMIN, synced.channel)
    deadline = time.monotonic() + 10
    while len(synced.receiver.requests) == before:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert synced.receiver.updates()[-1] == {"externalId": "L1", "sku": sku_of(synced.shop),
                                             "available": 15, "version": 1}


@pytest.mark.parametrize("reset", ["salesChannelSync", "new secret", "product sync on"])
def test_a_reset_committed_while_a_push_is_in_flight_is_pushed_again(
        db: Database, reset: str) -> None:
    """The push in flight carried the same figure and version; its acknowledgement must not
    cover the reset (a new receiver behind a new secret would never get the listing)."""
    s = shop(db, stock1=10, stock2=5)
    with receiving() as receiver:
        http = HttpPost()
        holder: list[int] = []

        def post(url: str, body: bytes, headers: Mapping[str, str]) -> sync.Answer:
            answer = http(url, body, headers)
            if len(receiver.requests) == 1:  # the first push reached the store: reset now
                uow = db.uow()
                if reset == "salesChannelSync":
                    channels.request_sync(uow, ADMIN, holder[0])
                elif reset == "new secret":
                    receiver.secret = signing.new_secret()
                    channels.update_channel(uow, ADMIN, holder[0],
                                            channels.ChannelInput(secret=receiver.secret))
                else:
                    channels.update_product(uow, ADMIN, s.product, inventory_sync=False)
                    channels.update_product(db.uow(), ADMIN, s.product, inventory_sync=True)
            return answer

        pusher = sync.Pusher(db.engine, post)
        channel, _ = channels.create_channel(
            db.uow(), ADMIN, seller_id=s.seller,
            data=channels.ChannelInput(name="Shop", endpoint_url=receiver.url,
                                       secret=receiver.secret))
        holder.append(channel.id)
        channels.upsert_listings(db.uow(), ADMIN, channel.id,
                                 [channels.ListingInput("L1", sku_of(s))])
        pusher.push(channel.id)
        try:
            assert len(receiver.requests) == 2, [r.body for r in receiver.requests]
            assert [r.signed for r in receiver.requests] == [True, True]
            assert receiver.requests[1].body["updates"][0]["available"] == 15
            assert db.scalar("SELECT acked_version FROM listing") == 1
        finally:
            http.close()


def test_every_kind_of_change_reaches_the_listing(synced: Synced) -> None:
    """API.md's list: order edits, fulfilments, stock updates, transfers, purchase
    receiving, bulk and CSV imports, and the changes that move no stock (inventorySync, the
    channel's mode, a listing's SKU)."""
    s = synced.shop
    sku = sku_of(s)
    synced.listings(("L1", sku))
    synced.receiver.wait_for({"L1": 15})  # w1 10 + w2 5

    def expect(figure: int) -> None:
        synced.receiver.wait_for({"L1": figure})

    draft = orders.create(synced.uow(), ADMIN, type=OrderType.DRAFT, shipping_country="DE",
                          lines=[orders.LineRequest(s.variant, 2)])
    expect(13)
    orders.update_line(synced.uow(), ADMIN, draft.lines[0].id, 5)
    expect(10)
    regular = orders.confirm(synced.uow(), ADMIN, draft.id)
    orders.fulfill(synced.uow(), ADMIN, regular.id,
                   [orders.FulfillRequest(regular.lines[0].id, 5)])
    expect(10)  # shipped units were allocated already: on hand and allocated both fell
    assert synced.db.scalar("SELECT sum(quantity) FROM stock WHERE variant_id = :v",
                            v=s.variant) == 10
    catalog.set_stock_quantities(synced.uow(), ADMIN, s.variant,
                                 [catalog.StockQuantity(s.w1, 20)])
    expect(25)
    stock.transfer(synced.uow(), ADMIN, variant_id=s.variant, from_warehouse_id=s.w1,
                   to_warehouse_id=s.w2, quantity=3)
    channels.update_channel(synced.uow(), ADMIN, synced.channel,
                            channels.ChannelInput(warehouse_ids=[s.w2]))
    expect(8)  # w2: 5 + 3
    po = stock.create_purchase_order(synced.uow(), ADMIN, warehouse_id=s.w2,
                                     lines=[stock.PurchaseLine(s.variant, 4)])
    stock.receive_purchase_order(synced.uow(), ADMIN, po.id, [stock.PurchaseLine(s.variant, 4)])
    expect(12)
    stock.bulk_set_quantities(synced.uow(), ADMIN, [stock.BulkRow(s.w2, 30, sku=sku)],
                              reject_failed_rows=False)
    expect(30)
    import_stock(synced.uow(), ADMIN, [(2, {"sku": sku, "warehouse": str(s.w2),
                                            "quantity": "6"})],
                 decode_id=lambda text: int(text), reject_everything=True, source="test.csv")
    expect(6)

    # no stock moves: a product opted out is left alone, and pushed again when back in
    before = len(synced.receiver.updates())
    channels.update_product(synced.uow(), ADMIN, s.product, inventory_sync=False)
    stock.adjust(synced.uow(), ADMIN, variant_id=s.variant, warehouse_id=s.w2, delta=1,
                 reason="found")
    time.sleep(0.6)
    assert len(synced.receiver.updates()) == before
    channels.update_product(synced.uow(), ADMIN, s.product, inventory_sync=True)
    expect(7)
    # the mode: NONE pushes nothing, ALL again pushes the figure of now
    channels.update_channel(synced.uow(), ADMIN, synced.channel,
                            channels.ChannelInput(sync_mode=SyncMode.NONE))
    stock.adjust(synced.uow(), ADMIN, variant_id=s.variant, warehouse_id=s.w2, delta=1,
                 reason="found")
    time.sleep(0.6)
    assert synced.receiver.shown["L1"][0] == 7
    channels.update_channel(synced.uow(), ADMIN, synced.channel,
                            channels.ChannelInput(sync_mode=SyncMode.ALL))
    expect(8)
    # a listing's SKU: another variant's figure, a new version
    other = s.world.variant(s.product, sku="OTHER-SKU", stocks={s.w2: 2})
    assert other
    version = synced.receiver.shown["L1"][1]
    synced.listings(("L1", "OTHER-SKU"))
    expect(2)
    assert synced.receiver.shown["L1"][1] > version
    assert synced.receiver.went_back == []


def test_another_sellers_same_sku_is_not_counted(synced: Synced) -> None:
    s = synced.shop
    other = shop(synced.db, stock1=50)  # another seller
    sku = sku_of(s)
    with synced.db.engine.begin() as conn:
        conn.execute(text("UPDATE product_variant SET sku = :sku WHERE id = :v"),
                     {"sku": sku, "v": other.variant})
    synced.listings(("L1", sku_of(s)))
    synced.receiver.wait_for({"L1": 15})
    orders.create(synced.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(other.variant, 5)])
    stock.adjust(synced.uow(), ADMIN, variant_id=s.variant, warehouse_id=s.w1, delta=-1,
                 reason="count")
    synced.receiver.wait_for({"L1": 14})
    assert synced.row("L1")["figure"] == 14


def test_a_receiver_down_then_up_gets_every_listing_right(db: Database) -> None:
    """The endpoint refuses connections while orders come in; once it listens again (on
    the same port) every listing shows its figure of now."""
    s = shop(db, stock1=10, stock2=5)
    port = free_port()
    post = HttpPost()
    kick = sync.ThreadKick(sync.Pusher(db.engine, post))
    background = sync.Sync(db.engine, kick, reconcile_every=0)
    background.SWEEP_EVERY = 0.2
    uow = lambda: UnitOfWork(db.writer, background, reader=db.reader)  # noqa: E731
    background.start()
    try:
        with receiving() as probe:
            secret = probe.secret
        channel, _ = channels.create_channel(uow(), ADMIN, seller_id=s.seller,
                                             data=channels.ChannelInput(
                                                 name="Down", secret=secret,
                                                 endpoint_url=f"http://127.0.0.1:{port}/push"))
        channels.upsert_listings(uow(), ADMIN, channel.id, [
            channels.ListingInput(e, sku_of(s)) for e in ("L1", "L2")])
        for _ in range(3):
            orders.create(uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                          lines=[orders.LineRequest(s.variant, 2)])
        deadline = time.monotonic() + 10
        while not db.scalar("SELECT failures FROM sales_channel"):
            assert time.monotonic() < deadline, "no try was made"
            time.sleep(0.05)
        assert db.scalar("SELECT last_error FROM sales_channel") is not None
        with receiving(secret, port=port) as receiver:
            receiver.wait_for({"L1": 9, "L2": 9}, timeout=20)
            assert receiver.went_back == []
    finally:
        background.close()
        kick.close()
        post.close()


def test_a_slow_receiver_keeps_its_pusher_holding_the_channel(db: Database) -> None:
    """The lease is short (a killed pusher holds its channel up for seconds), so it is
    renewed while a request is in flight: another pusher does not send beside it."""
    s = shop(db, stock1=10)
    with receiving() as receiver:
        http = HttpPost()
        first, second = sync.Pusher(db.engine, http), sync.Pusher(db.engine, http)
        channel, _ = channels.create_channel(
            db.uow(), ADMIN, seller_id=s.seller,
            data=channels.ChannelInput(name="Shop", endpoint_url=receiver.url,
                                       secret=receiver.secret))
        channels.upsert_listings(db.uow(), ADMIN, channel.id,
                                 [channels.ListingInput("L1", sku_of(s))])
        receiver.answer(200, delay=sync.LEASE + 1.5)
        try:
            slow = threading.Thread(target=first.push, args=(channel.id,))
            slow.start()
            time.sleep(sync.LEASE + 0.5)  # the first lease would have lapsed by now
            second.push(channel.id)  # finds the channel held: sends nothing
            slow.join()
            assert len(receiver.requests) == 1
            assert db.scalar("SELECT acked_version FROM listing") == 1
        finally:
            http.close()
