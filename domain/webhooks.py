"""Stock webhooks: events of committed stock changes, recorded and delivered (API.md "Stock
webhooks", "Signed deliveries").

Events are messages, recorded before anything is sent. The relay (domain/relay.py) hands
the ids of committed movements to `record`, and moves on only once it returned: every
movement of a subscribed stock becomes rows of `webhook_delivery` in one transaction, a
crossing (OUT_OF_STOCK, BACK_IN_STOCK, LOW_STOCK) one row per movement that made it,
STOCK_UPDATED one pending row per stock brought up to date (coalesced). A movement carries
the stock's figures after it and its changes, so a crossing is seen exactly as it
happened, however many came in between; its id is the event's `version`.

`Deliverer.deliver(subscription)` sends a subscription's pending events one POST each, in
version order, under a lease on the subscription row (one deliverer at a time, so a
receiver gets them in order). A 2xx deletes the row; a failure holds the subscription back
on the Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h,
with jitter), the oldest event first; when the whole schedule failed, or on 401/403, the
subscription turns FAILING and gets nothing until its url or secret changes.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from domain import metrics, signing
from domain.db import READ_ONLY, IdsIn
from domain.models import WebhookEvent
from domain.sync import (
    CREDENTIALS,
    LEASE,
    Post,
    Unreachable,
    _result,
    _retry_after,
    global_id,
    kept_while,
)

log = logging.getLogger("stockyard.webhooks")

# seconds after each failed try (Standard Webhooks); one more failure turns the
# subscription FAILING
SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.1  # +-10%
PER_ROUND = 50  # events read per round (each is one POST)
SCHEDULE_FAILED = ("every try of the retry schedule failed ({error}): nothing is sent "
                   "until the subscription's url or secret is updated")

TYPES = {WebhookEvent.STOCK_UPDATED: "stock.updated",
         WebhookEvent.OUT_OF_STOCK: "stock.out_of_stock",
         WebhookEvent.BACK_IN_STOCK: "stock.back_in_stock",
         WebhookEvent.LOW_STOCK: "stock.low"}


def encode_events(events: Iterable[WebhookEvent]) -> str:
    chosen = set(events)
    return ",".join(e.value for e in WebhookEvent if e in chosen)


def decode_events(stored: str) -> list[WebhookEvent]:
    return [WebhookEvent(name) for name in stored.split(",") if name]


# -- recording -----------------------------------------------------------------------------

_ACTIVE = text("SELECT id, seller_id, events, after_movement FROM webhook_subscription "
               "WHERE paused = :false AND failing = :false")
_MOVEMENTS = IdsIn(
    "SELECT m.id, m.stock_id, m.variant_id, m.warehouse_id, m.quantity_change, "
    "m.allocated_change, m.quantity_after, m.allocated_after, m.created_at, "
    "s.low_stock_threshold, v.sku, w.seller_id "
    "FROM stock_movement m JOIN stock s ON s.id = m.stock_id "
    "JOIN product_variant v ON v.id = m.variant_id "
    "JOIN warehouse w ON w.id = m.warehouse_id "
    "WHERE m.id IN :ids ORDER BY m.id", "ids")
_CROSSING = text(
    "INSERT INTO webhook_delivery (subscription_id, stock_id, event, version, body) "
    "VALUES (:subscription, :stock, :event, :version, :body) "
    "ON CONFLICT (subscription_id, stock_id, event, version) DO NOTHING")
# at most one pending STOCK_UPDATED per stock: an older one gives way to the newer figures
_STALE_UPDATE = text(
    "DELETE FROM webhook_delivery WHERE subscription_id = :subscription "
    "AND stock_id = :stock AND event = 'STOCK_UPDATED' AND version < :version")
_UPDATE = text(
    "INSERT INTO webhook_delivery (subscription_id, stock_id, event, version, body) "
    "SELECT :subscription, :stock, 'STOCK_UPDATED', :version, :body WHERE NOT EXISTS ("
    "SELECT 1 FROM webhook_delivery WHERE subscription_id = :subscription "
    "AND stock_id = :stock AND event = 'STOCK_UPDATED') "
    "ON CONFLICT (subscription_id, stock_id, event, version) DO NOTHING")


@dataclass(frozen=True, slots=True)
class _Subscription:
    id: int
    seller_id: int | None
    events: frozenset[WebhookEvent]
    after_movement: int


def crossings(before: int, after: int, threshold: int | None) -> list[WebhookEvent]:
    """The crossings of a stock's available figure going from `before` to `after`."""
    found = []
    if before > 0 and after == 0:
        found.append(WebhookEvent.OUT_OF_STOCK)
    if before == 0 and after > 0:
        found.append(WebhookEvent.BACK_IN_STOCK)
    if threshold is not None and after < threshold <= before:
        found.append(WebhookEvent.LOW_STOCK)
    return found


def record(engine: Engine, movement_ids: Sequence[int]) -> set[int]:
    """Record the events of these committed movements for every active subscription; the
    subscriptions that got something. Idempotent: the relay may hand a movement on twice."""
    if not movement_ids:
        return set()
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        subscriptions = [
            _Subscription(r.id, r.seller_id, frozenset(decode_events(r.events)),
                          r.after_movement)
            for r in conn.execute(_ACTIVE, {"false": False})]
        if not subscriptions:
            return set()
        first = min(s.after_movement for s in subscriptions)
        ids = [i for i in movement_ids if i > first]
        movements = _MOVEMENTS.execute(conn, ids).all() if ids else []
    updates: dict[tuple[int, int], dict[str, Any]] = {}  # latest per (subscription, stock)
    rows: list[dict[str, Any]] = []
    for m in movements:
        after = max(m.quantity_after - m.allocated_after, 0)
        before = max((m.quantity_after - m.quantity_change)
                     - (m.allocated_after - m.allocated_change), 0)
        events = crossings(before, after, m.low_stock_threshold)
        data = {"variantId": global_id("ProductVariant", m.variant_id), "sku": m.sku,
                "warehouseId": global_id("Warehouse", m.warehouse_id),
                "quantity": m.quantity_after, "quantityAllocated": m.allocated_after,
                "quantityAvailable": after, "lowStockThreshold": m.low_stock_threshold,
                "version": m.id}
        at = m.created_at if isinstance(m.created_at, datetime) else \
            datetime.fromisoformat(str(m.created_at))
        stamp = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
        for sub in subscriptions:
            if m.id <= sub.after_movement or (sub.seller_id is not None
                                              and sub.seller_id != m.seller_id):
                continue
            for event in events:
                if event in sub.events:
                    rows.append({"subscription": sub.id, "stock": m.stock_id,
                                 "event": event.value, "version": m.id,
                                 "body": _body(event, stamp, data)})
            if WebhookEvent.STOCK_UPDATED in sub.events:
                updates[sub.id, m.stock_id] = {
                    "subscription": sub.id, "stock": m.stock_id, "version": m.id,
                    "body": _body(WebhookEvent.STOCK_UPDATED, stamp, data)}
    if not rows and not updates:
        return set()
    with engine.begin() as conn:
        if rows:
            conn.execute(_CROSSING, rows)
        if updates:
            latest = list(updates.values())
            conn.execute(_STALE_UPDATE, latest)
            conn.execute(_UPDATE, latest)
    return {r["subscription"] for r in rows} | {s for s, _ in updates}


def _body(event: WebhookEvent, stamp: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": TYPES[event], "timestamp": stamp, "data": data},
                      separators=(",", ":"))


# -- delivering ----------------------------------------------------------------------------

_DUE = text(
    "SELECT DISTINCT d.subscription_id FROM webhook_delivery d "
    "JOIN webhook_subscription s ON s.id = d.subscription_id "
    "WHERE s.paused = :false AND s.failing = :false AND s.retry_at <= :now "
    "AND s.lease_until < :now")


_DUE_ONE = text(str(_DUE) + " AND s.id = :only")


def _since(body: str) -> float:
    """Seconds since the change an event tells of was written (its `timestamp`)."""
    stamp = datetime.fromisoformat(json.loads(body)["timestamp"])
    return max(time.time() - stamp.timestamp(), 0.0)


def due_subscriptions(engine: Engine, now: float | None = None, only: int | None = None
                      ) -> list[int]:
    """Subscriptions with events pending that no deliverer holds and no backoff holds back
    (`only`: that one, if so)."""
    now = time.time() if now is None else now
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        if only is not None:
            return list(conn.execute(_DUE_ONE, {"false": False, "now": now,
                                                "only": only}).scalars())
        return sorted(conn.execute(_DUE, {"false": False, "now": now}).scalars())


class Deliverer:
    """Delivers subscriptions' pending events through `post`."""

    def __init__(self, engine: Engine, post: Post,
                 now: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._post = post
        self._now = now

    def deliver(self, subscription_id: int) -> None:
        """Send what is pending of the subscription, unless another deliverer holds it."""
        while True:
            fence = self._claim(subscription_id)
            if fence is None:
                return
            try:
                while self._round(subscription_id, fence):
                    pass
            finally:
                with self._engine.begin() as conn:
                    conn.execute(text("UPDATE webhook_subscription SET lease_until = 0 "
                                      "WHERE id = :id AND lease = :fence"),
                                 {"id": subscription_id, "fence": fence})
            # an event recorded while we held the lease may have had its kick refused (the
            # sweeper would find it, a second or two later)
            if not due_subscriptions(self._engine, self._now(), only=subscription_id):
                return

    def _claim(self, subscription_id: int) -> int | None:
        now = self._now()
        with self._engine.begin() as conn:
            claimed = conn.execute(text(
                "UPDATE webhook_subscription SET lease = lease + 1, lease_until = :until "
                "WHERE id = :id AND lease_until < :now AND paused = :false "
                "AND failing = :false AND retry_at <= :now RETURNING lease"),
                {"id": subscription_id, "now": now, "until": now + LEASE,
                 "false": False}).all()
        return int(claimed[0][0]) if claimed else None

    def _round(self, subscription_id: int, fence: int) -> bool:
        """Up to PER_ROUND events, in order; True if there may be more to send now."""
        with self._engine.begin() as conn:
            sub = conn.execute(text(
                "SELECT url, secret, paused, failing FROM webhook_subscription "
                "WHERE id = :id AND lease = :fence"),
                {"id": subscription_id, "fence": fence}).first()
            if sub is None or sub.paused or sub.failing:
                return False  # deleted, taken over, paused or failing meanwhile
            events = conn.execute(text(
                "SELECT id, version, body FROM webhook_delivery WHERE subscription_id = :id "
                "ORDER BY version, id LIMIT :n"), {"id": subscription_id, "n": PER_ROUND}).all()
            conn.execute(text("UPDATE webhook_subscription SET lease_until = :until "
                              "WHERE id = :id AND lease = :fence"),
                         {"until": self._now() + LEASE, "id": subscription_id,
                          "fence": fence})
        delivered: list[dict[str, int]] = []
        outcome: tuple[str, str | float] | None = None
        label = global_id("WebhookSubscription", subscription_id)
        # the lease is renewed while the receiver takes its time (sync.kept_while)
        with kept_while(self._engine, "webhook_subscription", subscription_id, fence):
            for event in events:
                message_id = f"msg_{subscription_id}_{event.id}_{event.version}"
                try:
                    answer = self._post(sub.url, event.body.encode(), {
                        "content-type": "application/json",
                        **signing.headers(sub.secret, event.body, message_id)})
                except Unreachable as exc:
                    metrics.DELIVERIES.labels(label, "failed").inc()
                    outcome = ("failed", str(exc)[:300])
                    break
                metrics.DELIVERIES.labels(label, _result(answer.status)).inc()
                if 200 <= answer.status < 300:
                    delivered.append({"id": event.id, "version": event.version})
                    metrics.DELIVERY_LAG.labels(label).observe(_since(event.body))
                    continue
                if answer.status in (401, 403):
                    outcome = ("credentials", CREDENTIALS.format(status=answer.status))
                elif answer.status == 429:
                    outcome = ("slow down", _retry_after(answer.retry_after))
                else:
                    outcome = ("failed", f"the endpoint answered HTTP {answer.status}")
                break
        self._settle(subscription_id, fence, delivered, outcome)
        return outcome is None and len(events) == PER_ROUND

    def _settle(self, subscription_id: int, fence: int, delivered: list[dict[str, int]],
                outcome: tuple[str, str | float] | None) -> None:
        """Drop what was acknowledged (unless a newer figure replaced it meanwhile) and
        record how the round ended."""
        now = datetime.now(UTC)
        params: dict[str, Any] = {"id": subscription_id, "fence": fence, "now": now}
        with self._engine.begin() as conn:
            if delivered:
                conn.execute(text("DELETE FROM webhook_delivery WHERE id = :id "
                                  "AND version = :version"), delivered)
                conn.execute(text(
                    "UPDATE webhook_subscription SET last_delivered_at = :now, "
                    "last_error = NULL, failures = 0 WHERE id = :id AND lease = :fence"),
                    params)
            if outcome is None:
                return
            kind, detail = outcome
            if kind == "credentials":
                error, failing, retry_at, failures = str(detail), True, 0.0, 0
            elif kind == "slow down":
                wait = float(detail)
                error = f"the endpoint asked to slow down (HTTP 429): next try in {wait:g} s"
                failing, retry_at, failures = False, self._now() + wait, None
            else:
                failures = int(conn.execute(text(
                    "SELECT failures FROM webhook_subscription WHERE id = :id"),
                    {"id": subscription_id}).scalar_one()) + 1
                if failures > len(SCHEDULE):
                    error, failing, retry_at = SCHEDULE_FAILED.format(error=detail), True, 0.0
                    failures = 0
                else:
                    delay = SCHEDULE[failures - 1] * random.uniform(1 - JITTER, 1 + JITTER)
                    error = f"{detail}; try {failures} failed, next in {delay:.0f} s"
                    failing, retry_at = False, self._now() + delay
            log.info("webhook subscription %s: %s", subscription_id, error)
            conn.execute(text(
                "UPDATE webhook_subscription SET last_error = :error, last_error_at = :now, "
                "failing = :failing, retry_at = :retry_at, "
                "failures = COALESCE(:failures, failures) WHERE id = :id AND lease = :fence"),
                {**params, "error": error[:500], "failing": failing, "retry_at": retry_at,
                 "failures": failures})
