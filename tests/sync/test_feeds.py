"""Internal supplier feeds through the services and the relay (API.md "Supplier feeds"),
SQLite and PostgreSQL: a supplier's figure fills the merchant's warehouse within a second,
never below what merchant orders hold there, and a feed cannot close a loop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY

from domain import sync
from domain.errors import DomainError, ErrorCode, PermissionDenied
from domain.models import OrderType, Role, SyncMode
from domain.permissions import Principal
from domain.services import channels, feeds, orders, stock
from domain.uow import UnitOfWork
from tests.conftest import Database
from tests.factories import ADMIN, Shop, World, shop
from tests.receiver import receiving
from workers.delivery import HttpPost


@dataclass
class Fed:
    db: Database
    supplier: Shop
    merchant: Shop
    sync: sync.Sync
    feed: int
    item_variant: int  # the merchant's variant the feed fills (in merchant.w2)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db.writer, self.sync, reader=self.db.reader)

    def level(self, variant: int | None = None) -> tuple[int, int]:
        q, a = self.db.rows("SELECT quantity, quantity_allocated FROM stock WHERE "
                            "variant_id = :v AND warehouse_id = :w",
                            v=variant or self.item_variant, w=self.merchant.w2)[0]
        return int(q), int(a)

    def wait_for(self, quantity: int, timeout: float = 5.0) -> float:
        started = time.monotonic()
        while self.level()[0] != quantity:
            assert time.monotonic() - started < timeout, f"stock is {self.level()}"
            time.sleep(0.01)
        return time.monotonic() - started


def _sku(db: Database, variant: int) -> str:
    return str(db.scalar("SELECT sku FROM product_variant WHERE id = :v", v=variant))


@pytest.fixture
def fed(db: Database) -> Iterator[Fed]:
    supplier = shop(db, stock1=7, stock2=3)  # the supplier's figure: 10
    merchant = shop(db, stock1=5)
    world = World(db)
    item_variant = world.variant(merchant.product, sku="MERCHANT-TENT")
    background = sync.Sync(db.engine, lambda _c: None)
    background.start()
    uow = UnitOfWork(db.writer, background, reader=db.reader)
    feed, secret = feeds.create(uow, ADMIN, warehouse_id=merchant.w2, name="Acme dropship",
                                supplier_seller_id=supplier.seller)
    assert secret.startswith("whsec_")
    try:
        yield Fed(db, supplier, merchant, background, feed.id, item_variant)
    finally:
        background.close()


def test_a_new_item_is_filled_at_once_and_follows_every_supplier_change(fed: Fed) -> None:
    f = fed
    feeds.upsert_items(f.uow(), ADMIN, f.feed,
                       [feeds.ItemInput(f.item_variant, _sku(f.db, f.supplier.variant))])
    assert f.level() == (10, 0)  # created and filled in the same transaction
    movement = f.db.rows("SELECT type, reason, quantity_change FROM stock_movement "
                         "WHERE variant_id = :v ORDER BY id", v=f.item_variant)
    assert [tuple(m) for m in movement] == [("FEED_IMPORT", "Acme dropship", 10)]

    lag = {"feed": sync.global_id("SupplierFeed", f.feed)}
    followed = REGISTRY.get_sample_value("stockyard_feed_lag_seconds_count", lag) or 0.0
    order = orders.create(f.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                          lines=[orders.LineRequest(f.supplier.variant, 4)])
    assert f.wait_for(6) < 1.0  # within a second
    # and timed from the supplier's commit (domain/metrics.py)
    assert REGISTRY.get_sample_value("stockyard_feed_lag_seconds_count", lag) == followed + 1
    orders.cancel(f.uow(), ADMIN, order.id)
    f.wait_for(10)
    stock.adjust(f.uow(), ADMIN, variant_id=f.supplier.variant, warehouse_id=f.supplier.w2,
                 delta=-3, reason="broken")
    f.wait_for(7)
    assert f.db.scalar("SELECT supplier_quantity FROM supplier_feed_item") == 7


def test_never_below_what_merchant_orders_hold_and_the_shortfall_shows(fed: Fed) -> None:
    f = fed
    feeds.upsert_items(f.uow(), ADMIN, f.feed,
                       [feeds.ItemInput(f.item_variant, _sku(f.db, f.supplier.variant))])
    # the merchant sells 6 of the 10 from the feed warehouse
    orders.create(f.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(f.item_variant, 6)])
    assert f.level() == (10, 6)
    # the supplier sells 8 of its own: its figure drops to 2
    orders.create(f.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(f.supplier.variant, 8)])
    f.wait_for(6)
    assert f.level() == (6, 6)  # held at the allocated amount: available 0
    item = int(f.db.scalar("SELECT id FROM supplier_feed_item"))
    with f.db.reader() as s:
        assert feeds.shortfalls(s, [item]) == [4]


def test_units_kept_for_a_shortfall_are_not_for_sale_once_the_orders_let_go(
        fed: Fed) -> None:
    f = fed
    feeds.upsert_items(f.uow(), ADMIN, f.feed,
                       [feeds.ItemInput(f.item_variant, _sku(f.db, f.supplier.variant))])
    merchant_order = orders.create(f.uow(), ADMIN, type=OrderType.REGULAR,
                                   shipping_country="DE",
                                   lines=[orders.LineRequest(f.item_variant, 6)])
    orders.create(f.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(f.supplier.variant, 8)])
    f.wait_for(6)  # held at 6 for the merchant's order; the supplier has 2
    orders.cancel(f.uow(), ADMIN, merchant_order.id)
    assert f.wait_for(2) < 1.0  # back to the supplier's figure: 2 for sale, not 6
    assert f.db.rows("SELECT type, reason, quantity_change FROM stock_movement WHERE "
                     "variant_id = :v ORDER BY id DESC LIMIT 1", v=f.item_variant)[0] \
        == ("FEED_IMPORT", "Acme dropship", -4)

    # a manual raise above the supplier's figure comes down too; a lowering stays
    stock.adjust(f.uow(), ADMIN, variant_id=f.item_variant, warehouse_id=f.merchant.w2,
                 delta=3, reason="counted")
    f.wait_for(2)
    stock.adjust(f.uow(), ADMIN, variant_id=f.item_variant, warehouse_id=f.merchant.w2,
                 delta=-1, reason="broken")
    time.sleep(0.3)
    assert f.level() == (1, 0)


def test_a_chain_of_two_feeds_reaches_the_second_merchant(fed: Fed) -> None:
    f = fed
    feeds.upsert_items(f.uow(), ADMIN, f.feed,
                       [feeds.ItemInput(f.item_variant, _sku(f.db, f.supplier.variant))])
    second = shop(f.db, stock1=0)
    world = World(f.db)
    far = world.variant(second.product, sku="FAR-TENT")
    feed2, _ = feeds.create(f.uow(), ADMIN, warehouse_id=second.w2, name="via merchant",
                            supplier_seller_id=f.merchant.seller)
    feeds.upsert_items(f.uow(), ADMIN, feed2.id, [feeds.ItemInput(far, "MERCHANT-TENT")])
    # the merchant's figure: 10 in w2 (its other variant is another SKU)
    far_level = lambda: f.db.scalar(  # noqa: E731
        "SELECT quantity FROM stock WHERE variant_id = :v AND warehouse_id = :w",
        v=far, w=second.w2)
    assert far_level() == 10
    orders.create(f.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(f.supplier.variant, 5)])
    deadline = time.monotonic() + 5
    while far_level() != 5:
        assert time.monotonic() < deadline, far_level()
        time.sleep(0.01)

    # and a feed back from the second merchant to the supplier would close a loop
    with pytest.raises(DomainError) as refused:
        feeds.create(f.uow(), ADMIN, warehouse_id=f.supplier.w1, name="loop",
                     supplier_seller_id=second.seller)
    assert refused.value.errors[0].code is ErrorCode.INVALID
    with pytest.raises(DomainError):
        feeds.create(f.uow(), ADMIN, warehouse_id=f.supplier.w1, name="itself",
                     supplier_seller_id=f.supplier.seller)


def test_refusals_change_nothing(fed: Fed) -> None:
    f = fed
    other = shop(f.db)
    before = f.db.scalar("SELECT count(*) FROM supplier_feed_item")
    with pytest.raises(DomainError) as refused:
        feeds.upsert_items(f.uow(), ADMIN, f.feed, [
            feeds.ItemInput(other.variant, _sku(f.db, f.supplier.variant)),  # not merchant's
            feeds.ItemInput(f.item_variant, "NO-SUCH-SKU")])
    assert [(e.code, e.field) for e in refused.value.errors] == [
        (ErrorCode.NOT_FOUND, "items.0.variantId"), (ErrorCode.INVALID, "items.1.supplierSku")]
    assert f.db.scalar("SELECT count(*) FROM supplier_feed_item") == before
    seller = Principal(token_id=1, role=Role.SELLER, seller_id=f.merchant.seller)
    with pytest.raises(PermissionDenied):  # an internal feed is the admin's arrangement
        feeds.create(f.uow(), seller, warehouse_id=f.merchant.w1, name="x",
                     supplier_seller_id=f.supplier.seller)
    with pytest.raises(DomainError) as refused:  # another seller's warehouse looks unknown
        feeds.create(f.uow(), seller, warehouse_id=other.w1, name="x")
    assert refused.value.errors[0].code is ErrorCode.NOT_FOUND
    external, _ = feeds.create(f.uow(), seller, warehouse_id=f.merchant.w1, name="own")
    assert external.supplier_seller_id is None


def test_a_paused_feed_does_not_follow_until_resumed(fed: Fed) -> None:
    f = fed
    feeds.upsert_items(f.uow(), ADMIN, f.feed,
                       [feeds.ItemInput(f.item_variant, _sku(f.db, f.supplier.variant))])
    feeds.update(f.uow(), ADMIN, f.feed, feeds.FeedInput(paused=True, name="Acme 2"))
    stock.adjust(f.uow(), ADMIN, variant_id=f.supplier.variant, warehouse_id=f.supplier.w1,
                 delta=5, reason="found")
    time.sleep(0.5)
    assert f.level() == (10, 0)
    feeds.update(f.uow(), ADMIN, f.feed, feeds.FeedInput(paused=False))
    assert f.level() == (15, 0)  # resuming fills every item at once
    assert f.db.scalar("SELECT reason FROM stock_movement WHERE variant_id = :v "
                       "ORDER BY id DESC LIMIT 1", v=f.item_variant) == "Acme 2"


def test_feeds_only_pushes_exactly_the_feed_filled_listings(db: Database) -> None:
    supplier = shop(db, stock1=4)
    merchant = shop(db, stock1=5)
    fed_variant = World(db).variant(merchant.product, sku="FED")
    with receiving() as receiver:
        post = HttpPost()
        kick = sync.ThreadKick(sync.Pusher(db.engine, post))
        background = sync.Sync(db.engine, kick)
        background.SWEEP_EVERY = 0.1
        background.start()
        uow = lambda: UnitOfWork(db.writer, background, reader=db.reader)  # noqa: E731
        try:
            feed, _ = feeds.create(uow(), ADMIN, warehouse_id=merchant.w2, name="dropship",
                                   supplier_seller_id=supplier.seller)
            feeds.upsert_items(uow(), ADMIN, feed.id,
                               [feeds.ItemInput(fed_variant, _sku(db, supplier.variant))])
            channel, _ = channels.create_channel(
                uow(), ADMIN, seller_id=merchant.seller, data=channels.ChannelInput(
                    name="Shop", endpoint_url=receiver.url, secret=receiver.secret,
                    sync_mode=SyncMode.FEEDS_ONLY))
            channels.upsert_listings(uow(), ADMIN, channel.id, [
                channels.ListingInput("FED-1", "FED"),
                channels.ListingInput("OWN-1", _sku(db, merchant.variant))])
            receiver.wait_for({"FED-1": 4})
            orders.create(uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                          lines=[orders.LineRequest(supplier.variant, 1)])
            receiver.wait_for({"FED-1": 3})  # supplier -> merchant stock -> channel
            time.sleep(0.3)
            assert "OWN-1" not in {u["externalId"] for u in receiver.updates()}
        finally:
            background.close()
            kick.close()
            post.close()
