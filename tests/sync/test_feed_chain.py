"""A chain of two internal feeds under a stream of supplier orders (API.md "Supplier feeds",
"Sales channels"), SQLite and PostgreSQL: supplier -> merchant A's feed warehouse, A's
variant -> merchant B's feed warehouse, and B's sales channel (a real loopback receiver)
listing B's fed variant.

"B never showed more than the supplier had at that moment" is not a sound claim: every
hop follows a committed change a relay round later, so B lags by design. What is sound,
and asserted: once the stream settles, every stock of the chain shows the supplier's
final figure (never below what B's orders hold), and every figure along the way is one
its source really had, in the order it had them. A fill locks the merchant's stock before
it reads the supplier's figures, and a stock's movements commit in id order (its row lock
is held from the change to the commit), so each stock's FEED_IMPORT figures are a
subsequence of its supplier's figures, and the channel's figures (by version) a
subsequence of B's available ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest

from domain import sync
from domain.models import OrderType, SyncMode
from domain.services import catalog, channels, feeds, orders
from domain.uow import UnitOfWork
from tests.conftest import Database
from tests.factories import ADMIN, Shop, World, shop
from tests.receiver import Receiver, receiving
from tests.sync.test_feeds import _sku
from workers.delivery import HttpPost

SETTLE = 5.0  # seconds: each hop is promised within a second; slack for a busy machine
THREADS = 4
QUANTITIES = [i % 3 + 1 for i in range(45)]  # 90 units in 45 orders of 1 to 3
STOCKED = 100  # the supplier's first figure, all in its first warehouse
RESTOCKED = 95  # its on-hand once the stock set mid-stream has run
HELD = 3  # units a customer of B orders from B's feed warehouse before the stream


@dataclass
class Chain:
    db: Database
    background: sync.Sync
    supplier: Shop
    a: Shop
    b: Shop
    a_variant: int  # A's variant the first feed fills (in a.w2)
    b_variant: int  # B's variant the second feed fills from A's (in b.w2)
    a_feed: int
    b_feed: int
    receiver: Receiver

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db.writer, self.background, reader=self.db.reader)

    def level(self, variant: int, warehouse: int) -> tuple[int, int]:
        q, a = self.db.rows("SELECT quantity, quantity_allocated FROM stock WHERE "
                            "variant_id = :v AND warehouse_id = :w", v=variant, w=warehouse)[0]
        return int(q), int(a)

    def supplier_figure(self) -> int:
        """The supplier's quantityAvailable summed over its warehouses."""
        return sum(max(q - a, 0) for q, a in (self.level(self.supplier.variant, w)
                                              for w in (self.supplier.w1, self.supplier.w2)))

    def available_history(self, variant: int, warehouse: int) -> list[int]:
        """The stock's available figure after each of its movements, in commit order."""
        return [max(int(q) - int(a), 0) for q, a in self.db.rows(
            "SELECT m.quantity_after, m.allocated_after FROM stock_movement m "
            "JOIN stock st ON st.id = m.stock_id "
            "WHERE st.variant_id = :v AND st.warehouse_id = :w ORDER BY m.id",
            v=variant, w=warehouse)]

    def imports(self, variant: int, warehouse: int) -> list[tuple[int, int, str]]:
        """(quantity after, allocated after, reason) of each FEED_IMPORT, in commit order."""
        return [(int(q), int(a), str(r)) for q, a, r in self.db.rows(
            "SELECT m.quantity_after, m.allocated_after, m.reason FROM stock_movement m "
            "JOIN stock st ON st.id = m.stock_id WHERE m.type = 'FEED_IMPORT' "
            "AND st.variant_id = :v AND st.warehouse_id = :w ORDER BY m.id",
            v=variant, w=warehouse)]

    def received(self) -> list[tuple[int, int]]:
        """(version, available) of every update B's store accepted, by version; a retry
        of a version must repeat its figure."""
        by_version: dict[int, int] = {}
        with self.receiver.lock:
            for r in self.receiver.requests:
                if not (200 <= r.status < 300 and r.signed):
                    continue
                for u in r.body["updates"]:
                    assert u["externalId"] == "B-1"
                    assert by_version.setdefault(u["version"], u["available"]) \
                        == u["available"], f"version {u['version']} came with two figures"
        return sorted(by_version.items())

    def settle(self, a: int, b: tuple[int, int], channel: int) -> float:
        """Until A's stock, B's stock and B's store show these; the seconds it took."""
        started = time.monotonic()
        deadline = started + SETTLE
        while True:
            with self.receiver.lock:
                shown = self.receiver.shown.get("B-1", (None, 0))[0]
            now = (self.level(self.a_variant, self.a.w2)[0],
                   self.level(self.b_variant, self.b.w2), shown)
            if now == (a, b, channel):
                return time.monotonic() - started
            assert time.monotonic() < deadline, \
                f"(A, B, B's store) show {now}, not {(a, b, channel)}"
            time.sleep(0.02)


def _in_order(levels: Sequence[tuple[int, int]], history: Sequence[int]) -> bool:
    """Whether these (quantity, allocated) can be read off `history` (the source's figures
    in the order it had them), one after another: each is a figure of the source, or the
    allocated amount where that figure was below it (the feed never goes below it)."""
    rest = iter(history)
    return all(any(q == max(figure, a) for figure in rest) for q, a in levels)


@pytest.fixture
def chain(db: Database) -> Iterator[Chain]:
    supplier = shop(db, stock1=STOCKED)  # its second warehouse: a stock of 0, never touched
    a, b = shop(db, stock1=5), shop(db, stock1=0)
    world = World(db)
    a_variant = world.variant(a.product, sku="A-TENT")
    b_variant = world.variant(b.product, sku="B-TENT")
    with receiving() as receiver:
        post = HttpPost()
        kick = sync.ThreadKick(sync.Pusher(db.engine, post))
        background = sync.Sync(db.engine, kick)
        background.SWEEP_EVERY = 0.1
        background.start()
        uow: Callable[[], UnitOfWork] = lambda: UnitOfWork(  # noqa: E731
            db.writer, background, reader=db.reader)
        try:
            a_feed, _ = feeds.create(uow(), ADMIN, warehouse_id=a.w2, name="Acme dropship",
                                     supplier_seller_id=supplier.seller)
            feeds.upsert_items(uow(), ADMIN, a_feed.id,
                               [feeds.ItemInput(a_variant, _sku(db, supplier.variant))])
            b_feed, _ = feeds.create(uow(), ADMIN, warehouse_id=b.w2, name="via A",
                                     supplier_seller_id=a.seller)
            feeds.upsert_items(uow(), ADMIN, b_feed.id, [feeds.ItemInput(b_variant, "A-TENT")])
            channel, _ = channels.create_channel(
                uow(), ADMIN, seller_id=b.seller, data=channels.ChannelInput(
                    name="B's shop", endpoint_url=receiver.url, secret=receiver.secret,
                    sync_mode=SyncMode.FEEDS_ONLY))
            channels.upsert_listings(uow(), ADMIN, channel.id,
                                     [channels.ListingInput("B-1", "B-TENT")])
            yield Chain(db, background, supplier, a, b, a_variant, b_variant, a_feed.id,
                        b_feed.id, receiver)
        finally:
            background.close()
            kick.close()
            post.close()


def _stream(c: Chain) -> list[int]:
    """45 supplier orders from four threads at once, over a second or so; the first
    thread cancels its first two orders (1 and 2 units) and the second sets the
    supplier's on-hand to RESTOCKED along the way. Every call must succeed: the figure
    never drops below 5. The ids of the canceled orders."""
    barrier = threading.Barrier(THREADS)
    failures: list[BaseException] = []
    canceled: list[int] = []

    def work(t: int) -> None:
        try:
            barrier.wait(10)
            placed: list[int] = []
            for i in range(t, len(QUANTITIES), THREADS):
                placed.append(orders.create(
                    c.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                    lines=[orders.LineRequest(c.supplier.variant, QUANTITIES[i])]).id)
                if t == 0 and len(placed) == 3:
                    for order in placed[:2]:
                        orders.cancel(c.uow(), ADMIN, order)
                        canceled.append(order)
                if t == 1 and len(placed) == 4:
                    catalog.set_stock_quantities(c.uow(), ADMIN, c.supplier.variant, [
                        catalog.StockQuantity(c.supplier.w1, RESTOCKED)])
                time.sleep(0.02)  # a stream, not one burst: the chain follows along
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)
    return canceled


def test_a_stream_of_supplier_orders_reaches_the_end_of_a_chain_of_feeds(chain: Chain
                                                                         ) -> None:
    c = chain
    assert c.level(c.a_variant, c.a.w2) == (STOCKED, 0)  # both filled at once
    assert c.level(c.b_variant, c.b.w2) == (STOCKED, 0)
    orders.create(c.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(c.b_variant, HELD)])
    c.settle(STOCKED, (STOCKED, HELD), STOCKED - HELD)
    before = c.received()[-1][0]  # the version B's store shows before the stream

    canceled = _stream(c)

    assert len(canceled) == 2
    figure = RESTOCKED - sum(QUANTITIES) + 1 + 2  # 8: the two canceled orders came back
    assert c.supplier_figure() == figure
    c.settle(figure, (figure, HELD), figure - HELD)
    assert c.received()[-1][0] > before

    # the supplier drops below what B's order holds: B stays at the held amount, 0 to sell
    held = c.level(c.supplier.variant, c.supplier.w1)[1]
    catalog.set_stock_quantities(c.uow(), ADMIN, c.supplier.variant,
                                 [catalog.StockQuantity(c.supplier.w1, held + 1)])
    c.settle(1, (HELD, HELD), 0)
    with c.db.reader() as s:
        item = int(c.db.scalar("SELECT id FROM supplier_feed_item WHERE feed_id = :f",
                               f=c.b_feed))
        assert feeds.shortfalls(s, [item]) == [HELD - 1]

    # every figure of the chain is one its source had, in the order it had them
    assert c.level(c.supplier.variant, c.supplier.w2) == (0, 0)
    supplier = c.available_history(c.supplier.variant, c.supplier.w1)
    a_imports = c.imports(c.a_variant, c.a.w2)
    b_imports = c.imports(c.b_variant, c.b.w2)
    assert {r for _, _, r in a_imports} == {"Acme dropship"}  # the feed's name as reason
    assert {r for _, _, r in b_imports} == {"via A"}
    assert all(a == 0 for _, a, _ in a_imports)
    assert _in_order([(q, a) for q, a, _ in a_imports], supplier), (a_imports, supplier)
    a_history = c.available_history(c.a_variant, c.a.w2)
    assert _in_order([(q, a) for q, a, _ in b_imports], a_history), (b_imports, a_history)
    assert b_imports[-1][:2] == (HELD, HELD)  # held, not below
    # only the feeds changed on-hand there; the ledger adds up to each stock
    for variant, warehouse in [(c.a_variant, c.a.w2), (c.b_variant, c.b.w2)]:
        assert c.db.scalar(
            "SELECT count(*) FROM stock_movement m JOIN stock st ON st.id = m.stock_id "
            "WHERE st.variant_id = :v AND st.warehouse_id = :w AND m.quantity_change <> 0 "
            "AND m.type <> 'FEED_IMPORT'", v=variant, w=warehouse) == 0
        assert c.level(variant, warehouse) == tuple(int(n) for n in c.db.rows(
            "SELECT sum(m.quantity_change), sum(m.allocated_change) FROM stock_movement m "
            "JOIN stock st ON st.id = m.stock_id WHERE st.variant_id = :v "
            "AND st.warehouse_id = :w", v=variant, w=warehouse)[0])

    # B's store: the figures B had, by version, ending with B's available now
    received = c.received()
    assert _in_order([(f, 0) for _, f in received],
                     c.available_history(c.b_variant, c.b.w2)), received
    assert received[-1][1] == 0 == c.level(c.b_variant, c.b.w2)[0] - HELD
    assert c.receiver.went_back == []
    assert all(r.signed for r in c.receiver.requests)
