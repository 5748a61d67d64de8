"""Prometheus metrics (API.md "Access and operations", Operations), defined once for every
process: `stockyard serve` (its requests, orders, pushes and deliveries) and `stockyard
worker` (pushes and deliveries).

Counters and histograms are recorded where things happen: requests by the access log
(api/observe.py), orders and allocation retries by the order service, pushes and
deliveries by the pusher and the deliverer. What is state rather than an event (pending
updates, FAILING, how fresh a feed is) is read from the database when scraped
(`StateCollector`), so every process reports the same truth and nothing goes stale when
the process that last pushed dies.

Several server processes (`serve --workers N`) share their counters through
prometheus-client's multiprocess mode: `serve` sets PROMETHEUS_MULTIPROC_DIR to a fresh
directory before it starts the workers, each worker writes its samples there, and
`/metrics` in any worker sums them all. This module must be imported after that variable
is set (a spawned worker imports it afresh), which is why no metric lives elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import Engine, text

from domain.db import READ_ONLY, epoch

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_METRICS_ENV = "STOCKYARD_WORKER_METRICS"  # host:port, set by `stockyard worker`
WORKER_METRICS_PORT = 9464

# request latencies: 1 ms to 10 s
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
# commit to acknowledgement: 10 ms to 10 minutes (a receiver's retries)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
               600.0)

REQUESTS = Counter(
    "stockyard_requests", "HTTP requests by GraphQL operation (type and root fields) and "
    "outcome (ok, refused, error, failed, unauthenticated, rate_limited)",
    ["operation", "outcome"])
REQUEST_SECONDS = Histogram(
    "stockyard_request_duration_seconds", "Time to answer a request, by GraphQL operation",
    ["operation"], buckets=LATENCY_BUCKETS)
ORDERS = Counter(
    "stockyard_orders", "Orders placed (outcome created) or refused (outcome refused, with "
    "the first error code), through GraphQL, sales channels or the command line",
    ["outcome", "code"])
ALLOCATION_RETRIES = Counter(
    "stockyard_allocation_retries",
    "Optimistic allocation attempts that found their stock changed and tried again")
PUSHES = Counter(
    "stockyard_channel_pushes", "Requests to sales channels by result (ok, failed, "
    "credentials, slow_down)", ["channel", "result"])
SYNC_LAG = Histogram(
    "stockyard_channel_sync_lag_seconds", "From a stock change's commit to the channel's "
    "acknowledgement of the figure it caused", ["channel"], buckets=LAG_BUCKETS)
FEED_LAG = Histogram(
    "stockyard_feed_lag_seconds", "From the commit of an internal supplier's stock change "
    "to the merchant's stock following it", ["feed"], buckets=LAG_BUCKETS)
DELIVERIES = Counter(
    "stockyard_webhook_deliveries", "Webhook events sent, by subscription and result (ok, "
    "failed, credentials, slow_down)", ["subscription", "result"])
DELIVERY_LAG = Histogram(
    "stockyard_webhook_delivery_lag_seconds", "From a stock change's commit to the "
    "subscriber's acknowledgement of its event", ["subscription"], buckets=LAG_BUCKETS)


def multiprocess() -> bool:
    """Whether this process shares its samples with its siblings (serve --workers N)."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


def registry(engine: Engine | None) -> CollectorRegistry:
    """What `/metrics` serves: this process's metrics (or, in multiprocess mode, every
    server process's), plus the state read from the database when `engine` is given."""
    from prometheus_client import multiprocess as shared

    served = CollectorRegistry(auto_describe=True)
    if multiprocess():
        shared.MultiProcessCollector(served)  # type: ignore[no-untyped-call]
    else:
        served.register(_Everything())
    if engine is not None:
        served.register(StateCollector(engine))
    return served


class _Everything(Collector):
    """The process's default registry, as one collector of another registry."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


_CHANNELS = text(
    "SELECT c.id, c.name, c.paused, c.failing, c.failures, c.last_synced_at, "
    "(SELECT count(*) FROM listing l WHERE l.channel_id = c.id AND l.variant_id IS NOT NULL "
    "AND (l.acked_version IS NULL OR l.acked_version < l.version)) "
    "FROM sales_channel c ORDER BY c.id")
_SUBSCRIPTIONS = text(
    "SELECT s.id, s.url, s.paused, s.failing, s.failures, "
    "(SELECT count(*) FROM webhook_delivery d WHERE d.subscription_id = s.id) "
    "FROM webhook_subscription s ORDER BY s.id")
_FEEDS = text(
    "SELECT f.id, f.name, f.paused, f.last_synced_at, "
    "(SELECT count(*) FROM supplier_feed_item i WHERE i.feed_id = f.id) "
    "FROM supplier_feed f ORDER BY f.id")


class StateCollector(Collector):
    """Per channel, subscription and feed, read at scrape time: pending updates, FAILING,
    PAUSED, consecutive failures and seconds since the last sync."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from domain.sync import global_id

        with self._engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            channels = conn.execute(_CHANNELS).all()
            subscriptions = conn.execute(_SUBSCRIPTIONS).all()
            feeds = conn.execute(_FEEDS).all()
        now = time.time()
        pending = GaugeMetricFamily(
            "stockyard_channel_pending_updates", "Listings whose figure the channel has not "
            "acknowledged yet", labels=["channel", "name"])
        failing = GaugeMetricFamily(
            "stockyard_channel_failing", "1 while the channel is FAILING (credentials "
            "refused or retries exhausted)", labels=["channel", "name"])
        paused = GaugeMetricFamily("stockyard_channel_paused", "1 while the channel is paused",
                                   labels=["channel", "name"])
        failures = GaugeMetricFamily(
            "stockyard_channel_consecutive_failures", "Failed pushes since the last "
            "acknowledged one", labels=["channel", "name"])
        synced = GaugeMetricFamily(
            "stockyard_channel_seconds_since_sync", "Seconds since the channel last "
            "acknowledged a push", labels=["channel", "name"])
        for c in channels:
            labels = [global_id("SalesChannel", c[0]), c[1]]
            pending.add_metric(labels, c[6])
            failing.add_metric(labels, 1 if c[3] else 0)
            paused.add_metric(labels, 1 if c[2] else 0)
            failures.add_metric(labels, c[4])
            if c[5] is not None:
                synced.add_metric(labels, max(now - epoch(c[5]), 0.0))
        yield from (pending, failing, paused, failures, synced)

        hook_pending = GaugeMetricFamily(
            "stockyard_webhook_pending_deliveries", "Events waiting for the subscriber",
            labels=["subscription", "url"])
        hook_failing = GaugeMetricFamily(
            "stockyard_webhook_failing", "1 while the subscription is FAILING",
            labels=["subscription", "url"])
        hook_failures = GaugeMetricFamily(
            "stockyard_webhook_consecutive_failures", "Failed tries of the oldest pending "
            "event", labels=["subscription", "url"])
        for s in subscriptions:
            labels = [global_id("WebhookSubscription", s[0]), s[1]]
            hook_pending.add_metric(labels, s[5])
            hook_failing.add_metric(labels, 1 if s[3] else 0)
            hook_failures.add_metric(labels, s[4])
        yield from (hook_pending, hook_failing, hook_failures)

        feed_paused = GaugeMetricFamily("stockyard_feed_paused", "1 while the feed is paused",
                                        labels=["feed", "name"])
        feed_items = GaugeMetricFamily("stockyard_feed_items", "Variants the feed fills",
                                       labels=["feed", "name"])
        feed_synced = GaugeMetricFamily(
            "stockyard_feed_seconds_since_sync", "Seconds since the feed last set its "
            "figures (an external feed: since its supplier's last accepted POST)",
            labels=["feed", "name"])
        for f in feeds:
            labels = [global_id("SupplierFeed", f[0]), f[1]]
            feed_paused.add_metric(labels, 1 if f[2] else 0)
            feed_items.add_metric(labels, f[4])
            if f[3] is not None:
                feed_synced.add_metric(labels, max(now - epoch(f[3]), 0.0))
        yield from (feed_paused, feed_items, feed_synced)
