"""The feeds-and-hooks workload (`python -m bench.run --feeds-hooks`): how long a supplier's
order takes to reach a merchant's sales channel through an internal supplier feed, and how
long an order takes to reach a stock webhook subscriber (API.md "Supplier feeds", "Stock
webhooks": each within a second of its commit; the issue's targets are p99 < 1.5 s for the
feed, which takes two relay rounds, and p99 < 1 s for the webhook).

On the seeded database (the bench seller, seller 1, is the supplier) and one `stockyard
serve` in embedded mode (no broker: the serve processes push and deliver themselves):

1. Setup, through GraphQL with the admin token: a merchant seller, its warehouse (serving
   DE), products with a variant per SKU of pool A (SKU `MERCH-<supplier pk>`), an
   internal feed (`supplierFeedCreate` with `supplierSellerId`: the bench seller) into
   that warehouse with one item per merchant variant (`supplierFeedItemsUpsert`,
   supplierSku: the supplier variant's `BENCH-...`), and a merchant sales channel listing
   every merchant variant (bench/sync.py's `create_channel`, its endpoint a path of the
   loopback receiver, bench/receiver.py). The bench waits until the channel shows every
   listing at its supplier's figure.
2. `feed`: orders of the supplier's variants of pool A at `rate` orders/s (open loop, as
   the sync workload's fixed-rate phase). The merchant's stock in the feed warehouse
   follows the supplier's figure (the sum of available over its 3 warehouses), and the
   merchant has no other stock of the variant, so the listing's figure is the supplier
   variant's figure: the sync latency of bench/sync.py applies as it is, with the
   supplier variant's rank and figure.
3. `webhooks`: a subscription (`webhookSubscriptionCreate`, admin, no seller: every stock,
   the four events) to another receiver path, then orders at the same rate of pool B (the
   next `pool` seeded variants; no feed item, no listing). Each event is one stock's
   figures; per variant, the bench adds up the latest `quantityAvailable` received of each
   of its stocks (a stock without an event yet: its figure when the subscription was
   made), a timeline of the variant's figure that the same rank rule measures: an order's
   latency is the first arrival of an event that brings the sum to base - rank or below.

Both phases are measured by bench/sync.py's `measure_phase` (settle, figures before, the
load from a spawned process, the drain, latencies, CPU).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.bulk import Client
from bench.database import VAR, BenchDatabase
from bench.load import Target
from bench.progress import say
from bench.receiver import Arrival, Receiver, new_secret, stock_key
from bench.seed import Seeded
from bench.server import HOST, Server
from bench.sync import (
    WAIT_SECONDS,
    Channel,
    ChannelWatch,
    Lowest,
    Stage,
    SyncConfig,
    SyncPhase,
    SyncRun,
    bench_sku,
    create_channel,
    db_figures,
    graphql,
    measure_phase,
    pools,
    receiver_totals,
    wait_shown,
)

MODE = "embedded"
FEED_PHASE = "feed"
HOOK_PHASE = "webhooks"
EVENTS = ("STOCK_UPDATED", "OUT_OF_STOCK", "BACK_IN_STOCK", "LOW_STOCK")
ITEMS_PER_CALL = 1_000
VARIANTS_PER_PRODUCT = 100  # the most a product may have

SELLER = ("mutation BenchSeller($input: SellerCreateInput!) { sellerCreate(input: $input) { "
          "seller { id } errors { code field message } } }")
WAREHOUSE = ("mutation BenchWarehouse($input: WarehouseCreateInput!) { warehouseCreate("
             "input: $input) { warehouse { id } errors { code field message } } }")
PRODUCT = ("mutation BenchProduct($input: ProductCreateInput!) { productCreate(input: $input) "
           "{ product { id } errors { code field message } } }")
VARIANT = ("mutation BenchVariant($input: ProductVariantCreateInput!) { productVariantCreate("
           "input: $input) { productVariant { id } errors { code field message } } }")
FEED = ("mutation BenchFeed($input: SupplierFeedCreateInput!) { supplierFeedCreate("
        "input: $input) { supplierFeed { id } secret errors { code field message } } }")
ITEMS = ("mutation BenchFeedItems($feedId: ID!, $items: [SupplierFeedItemInput!]!) { "
         "supplierFeedItemsUpsert(feedId: $feedId, items: $items) { supplierFeed { id } "
         "errors { code field message } } }")
HOOK = ("mutation BenchHook($input: WebhookSubscriptionCreateInput!) { "
        "webhookSubscriptionCreate(input: $input) { webhookSubscription { id } secret "
        "errors { code field message } } }")
STATE = ("query BenchFeedHookState($id: ID!) { node(id: $id) { "
         "... on SupplierFeed { status lastError lastSyncedAt } "
         "... on SalesChannel { status lastError lastSyncedAt pendingUpdates } "
         "... on WebhookSubscription { status lastError lastDeliveredAt pendingDeliveries } "
         "} }")
STOCKS = """
SELECT variant_id, warehouse_id, CASE WHEN quantity > quantity_allocated
                                      THEN quantity - quantity_allocated ELSE 0 END
FROM stock WHERE variant_id IN ({marks})
"""


def merchant_sku(supplier_variant: int) -> str:
    """The SKU of the merchant variant that the feed fills from a supplier variant."""
    return f"MERCH-{supplier_variant:06d}"


@dataclass(slots=True)
class FeedsHooksRun(SyncRun):
    """Both phases (bench/sync.py's figures), what the receiver saw, and the setup."""

    setup: dict[str, Any] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # webhook events by type

    def to_json(self) -> dict[str, Any]:
        return {**SyncRun.to_json(self), "setup": self.setup, "events": self.events}


# -- setup -------------------------------------------------------------------------------


def _pk(gid: str) -> int:
    from api import ids

    return ids.parse(gid)[1]


def create_merchant(client: Client, pool: Sequence[int]) -> tuple[int, str, dict[int, str]]:
    """(seller pk, warehouse global ID, supplier variant pk -> merchant variant global ID):
    a merchant with one warehouse serving DE and a variant per supplier variant."""
    from api import ids

    seller = graphql(client, SELLER, {"input": {"name": "Bench merchant"}})
    seller_gid = seller["sellerCreate"]["seller"]["id"]
    warehouse = graphql(client, WAREHOUSE, {"input": {
        "sellerId": seller_gid, "name": "Bench dropship warehouse",
        "shippingZoneIds": [ids.encode("ShippingZone", 1)]}})
    variants = {}
    for start in range(0, len(pool), VARIANTS_PER_PRODUCT):
        product = graphql(client, PRODUCT, {"input": {
            "sellerId": seller_gid, "name": f"Bench supplied product {start + 1}"}})
        product_gid = product["productCreate"]["product"]["id"]
        for v in pool[start:start + VARIANTS_PER_PRODUCT]:
            made = graphql(client, VARIANT, {"input": {"productId": product_gid,
                                                       "sku": merchant_sku(v)}})
            variants[v] = made["productVariantCreate"]["productVariant"]["id"]
    return _pk(seller_gid), warehouse["warehouseCreate"]["warehouse"]["id"], variants


def create_feed(client: Client, warehouse_gid: str, merchant_variants: dict[int, str]) -> str:
    """An internal feed from the bench seller into the warehouse, one item per merchant
    variant (supplierSku: its supplier variant's SKU); its global ID."""
    from api import ids

    created = graphql(client, FEED, {"input": {
        "warehouseId": warehouse_gid, "name": "Bench supplier feed",
        "supplierSellerId": ids.encode("Seller", 1)}})
    gid = str(created["supplierFeedCreate"]["supplierFeed"]["id"])
    items = [{"variantId": merchant, "supplierSku": bench_sku(supplier)}
             for supplier, merchant in merchant_variants.items()]
    for start in range(0, len(items), ITEMS_PER_CALL):
        graphql(client, ITEMS, {"feedId": gid, "items": items[start:start + ITEMS_PER_CALL]})
    return gid


def state(client: Client, gid: str) -> str:
    """status, lastError... of a feed, channel or subscription, for a progress line."""
    try:
        node = graphql(client, STATE, {"id": gid})["node"]
    except (RuntimeError, OSError) as exc:
        return f"(state unreadable: {exc})"
    return " ".join(f"{k}={v}" for k, v in (node or {}).items())


# -- the webhook receiver's figures --------------------------------------------------------


def stock_figures(db: BenchDatabase, variants: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Every stock of these variants: its receiver key -> (variant pk, available now)."""
    from api import ids

    sql = db.q(STOCKS.format(marks=", ".join("?" for _ in variants)))
    with db.connection() as conn:
        rows = conn.execute(sql, tuple(variants)).fetchall()
    return {stock_key(ids.encode("ProductVariant", int(v)), ids.encode("Warehouse", int(w))):
            (int(v), int(n)) for v, w, n in rows}


@dataclass(frozen=True, slots=True)
class HookWatch:
    """A subscription's events, as a figure per variant: the sum over its stocks of the
    latest `quantityAvailable` received (`stocks`: every stock of the pool, with its figure
    when the subscription was made, at `since`)."""

    receiver: Receiver
    url: str
    stocks: dict[str, tuple[int, int]]
    since: float  # time.monotonic()

    def shown(self) -> dict[int, int]:
        """variant -> its figure from what has arrived so far."""
        latest = self.receiver.latest(self.url)
        out: dict[int, int] = defaultdict(int)
        for key, (variant, initial) in self.stocks.items():
            out[variant] += latest.get(key, initial)
        return out

    def off(self, wanted: dict[int, int]) -> int:
        shown = self.shown()
        return sum(shown.get(v) != n for v, n in wanted.items())

    def lowest(self) -> list[dict[int, Lowest]]:
        with self.receiver.lock:
            arrivals = {key: list(a) for key, a in self.receiver.at(self.url).arrivals.items()}
        current: dict[int, dict[str, int]] = defaultdict(dict)
        merged: dict[int, list[tuple[float, str, Arrival]]] = defaultdict(list)
        for key, (variant, initial) in self.stocks.items():
            current[variant][key] = initial
            merged[variant] += [(a.at, key, a) for a in arrivals.get(key, [])]
        out: dict[int, Lowest] = {}
        for variant, events in merged.items():
            timeline = [Arrival(self.since, sum(current[variant].values()), 0)]
            for at, key, a in sorted(events, key=lambda e: e[0]):
                current[variant][key] = a.available
                timeline.append(Arrival(at, sum(current[variant].values()), a.version))
            out[variant] = Lowest(timeline)
        return [out]

    def strays(self) -> int:
        """Stocks outside the pool that events arrived for."""
        with self.receiver.lock:
            keys = set(self.receiver.at(self.url).arrivals)
        return len(keys - set(self.stocks))


def create_subscription(stage: Stage, pool: Sequence[int]) -> tuple[str, HookWatch]:
    """An admin subscription to every stock's four events, at a new receiver path; its
    global ID and the watch of the pool's figures."""
    secret = new_secret()
    url = stage.receiver.endpoint(secret, kind="webhook")
    created = graphql(stage.client, HOOK, {"input": {"url": url, "events": list(EVENTS),
                                                     "secret": secret}})
    gid = str(created["webhookSubscriptionCreate"]["webhookSubscription"]["id"])
    return gid, HookWatch(stage.receiver, url, stock_figures(stage.db, pool),
                          time.monotonic())


# -- phases --------------------------------------------------------------------------------


def _report(phase: SyncPhase, what: str) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    say(f"{phase.name}: {phase.load.orders_per_s:.1f} orders/s, order p99 "
        f"{ms(phase.load.p99_ms)} ms, failed {phase.load.failed}; {what} latency p50 "
        f"{ms(phase.sync_ms(50))} p99 {ms(phase.sync_ms(99))} max {ms(phase.sync_max_ms)} ms "
        f"over {len(phase.latencies_ms)} orders, unsynced {phase.unsynced}, "
        f"{phase.pushes} requests, {phase.updates} updates")
    for problem in phase.problems:
        say(f"  problem: {problem}")
    if phase.load.failures:
        say(f"  failures: {phase.load.failures}")


def feed_phase(stage: Stage, pool: tuple[int, ...], run: FeedsHooksRun) -> SyncPhase:
    """Merchant, feed and channel, then supplier orders at the rate over `pool`."""
    client = stage.client
    merchant, warehouse_gid, variants = create_merchant(client, pool)
    feed_gid = create_feed(client, warehouse_gid, variants)
    channel: Channel = create_channel(client, stage.receiver, "Bench merchant channel", pool,
                                      seller=merchant, sku=merchant_sku)
    watch = ChannelWatch(stage.receiver, [channel])
    waited = wait_shown(watch, db_figures(stage.db, pool))
    say(f"feeds: merchant seller {merchant}, feed {feed_gid} with {len(pool)} items, channel "
        f"{channel.gid}; supplier figures at the channel "
        + ("never all arrived" if waited is None else f"in {waited:.2f} s"))
    run.setup.update(merchant_seller=merchant, feed=feed_gid, channel=channel.gid,
                     feed_items=len(pool), initial_figures_s=waited)
    phase = measure_phase(stage, FEED_PHASE, pool, watch, stage.config.rate, 1, len(pool))
    _report(phase, "feed")
    if phase.problems:
        say(f"  feed {feed_gid}: {state(client, feed_gid)}")
        say(f"  channel {channel.gid}: {state(client, channel.gid)}")
    return phase


def hook_phase(stage: Stage, pool: tuple[int, ...], run: FeedsHooksRun) -> SyncPhase:
    """A subscription, then orders at the rate over `pool`."""
    gid, watch = create_subscription(stage, pool)
    say(f"webhooks: subscription {gid} ({', '.join(EVENTS)}) for every stock")
    run.setup.update(subscription=gid, subscribed_stocks=len(watch.stocks))
    phase = measure_phase(stage, HOOK_PHASE, pool, watch, stage.config.rate, 1,
                          len(watch.stocks))
    strays = watch.strays()
    if strays:
        phase.problems.append(f"events for {strays} stocks outside the pool")
    _report(phase, "webhook")
    if phase.problems:
        say(f"  subscription {gid}: {state(stage.client, gid)}")
    with stage.receiver.lock:
        run.events = dict(stage.receiver.at(watch.url).types)
    return phase


def run_feeds_hooks(db: BenchDatabase, seeded: Seeded, config: SyncConfig) -> FeedsHooksRun:
    """Both phases on one embedded `stockyard serve`, one receiver for both."""
    run = FeedsHooksRun()
    feed_pool, hook_pool = pools(seeded.spread_variants, config.pool, 0)
    log = VAR / f"server-{db.kind}-feeds-hooks.log"
    with Receiver() as receiver, \
            Server(db.url, config.workers, log, {"STOCKYARD_BROKER_URL": ""}) as server:
        say(f"feeds-hooks: server up on {server.url} (stderr: {log}), receiver on "
            f"{receiver.base_url}; waiting at most {WAIT_SECONDS:g} s for figures")
        client = Client(HOST, server.port, seeded.token)
        try:
            stage = Stage(db, config, receiver, client,
                          Target(HOST, server.port, seeded.token, config.http_client),
                          server.pid, None, MODE)
            run.phases.append(feed_phase(stage, feed_pool, run))
            run.phases.append(hook_phase(stage, hook_pool, run))
        finally:
            client.close()
        run.receiver = receiver_totals(receiver)
    return run
