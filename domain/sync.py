"""Sales-channel sync: what each listing should show, and pushing it (API.md "Sales channels").

Listings are state, not messages. `refresh` works out a listing's figure and, when it
changed, raises its `version` in the same transaction that caused it (a channel or listing
edit) or right after the relay saw the stock change commit (domain/relay.py moves its
position only once `refresh` returned). So whatever must be pushed is in the database
before anything is sent: a lost broker message or a killed process delays a push, and the
sweeper (`due_channels`) finds it again.

`Pusher.push(channel)` sends what is pending, 250 listings a request, under a lease on the
channel row: one pusher per channel at a time, so a receiver sees each listing's versions
in order, and the channel's `next_request_at` spaces its requests across every process.
A 2xx acknowledges what the request carried; 401/403 marks the channel failing; 429 waits
for Retry-After; anything else backs off exponentially with jitter (1 s, 2 s, ... 600 s).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy import Engine, exists, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from domain import metrics, signing
from domain.db import READ_ONLY, IdsIn
from domain.events import Event, ListingsChanged, StockChanged, SubscriptionsChanged
from domain.models import (
    Lease,
    Listing,
    Product,
    ProductVariant,
    SalesChannel,
    Stock,
    SupplierFeed,
    SupplierFeedItem,
    SyncMode,
    Warehouse,
    sales_channel_warehouse,
)
from domain.relay import Relay

log = logging.getLogger("stockyard.sync")

Kick = Callable[[int], None]  # "push this channel soon" (a dramatiq message, or a thread)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a receiver answered."""

    status: int
    retry_after: str | None = None


class Unreachable(Exception):
    """No answer: a timeout or a connection error (the message says which)."""


# POST url, body, headers -> the answer; an adapter with a pooled HTTP client
# (workers/delivery.py: the domain speaks no HTTP itself)
Post = Callable[[str, bytes, Mapping[str, str]], Answer]

PER_REQUEST = 250  # updates in one push
TIMEOUT = 10.0  # seconds a receiver has to answer
# seconds a pusher holds a channel without renewing: short, so that a process killed in
# the middle of a push holds its channel up for seconds, not minutes; `kept_while` renews
# it each second while a request is in flight
LEASE = 4.0
RENEW_EVERY = 1.0
BACKOFF_CAP = 600.0  # seconds at most between tries
DEFAULT_RETRY_AFTER = 5.0
LATE = 0.005  # seconds after its slot that a request counts as sent late
# requests to one channel go a little over 1/maxRequestsPerSecond apart, so that a
# receiver counting arrivals in any one-second window never sees more than the rate,
# whatever the jitter between sending and arriving
SPACING = 1.02
CREDENTIALS = ("the endpoint refused Stockyard's credentials (HTTP {status}): nothing is "
               "sent until the channel's endpoint or secret is updated")


# a listing's changed_at: when the oldest change it has not had acknowledged was committed
_NEW_FIGURE = text("UPDATE listing SET figure = :figure, version = version + 1, "
                   "changed_at = COALESCE(changed_at, :at) WHERE id = :listing")


# -- figures -------------------------------------------------------------------------------


def refresh(s: Session, *, variant_ids: Iterable[int] | None = None,
            channel_ids: Iterable[int] | None = None,
            listing_ids: Iterable[int] | None = None, committed: bool = False,
            since: float | None = None) -> set[int]:
    """Work out the figure of the listings of these variants, channels or ids, raising the
    version of each whose figure changed; the channels that have something new to push.

    The listing rows are locked first (in id order), so that of two refreshes of one
    listing the later one computes from what the earlier one committed. The stock rows
    are read under a share lock (PostgreSQL), so a stock change still in flight is either
    waited for or made to wait: a listing matched now that the relay does not find yet
    (its transaction has not committed) never misses a change the relay passed over.
    `committed`: the relay's call, for stock changes already committed: no share lock.
    `since`: when the change was committed (the relay's round), else now."""
    where = []
    if variant_ids is not None:
        where.append(Listing.variant_id.in_(sorted(set(variant_ids))))
    if channel_ids is not None:
        where.append(Listing.channel_id.in_(sorted(set(channel_ids))))
    if listing_ids is not None:
        where.append(Listing.id.in_(sorted(set(listing_ids))))
    assert where, "refresh needs variants, channels or listings"
    query = select(Listing.id, Listing.channel_id, Listing.variant_id, Listing.figure) \
        .where(*where).order_by(Listing.id)
    if s.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    rows = s.execute(query).all()
    if not rows:
        return set()
    figures = _figures(s, {r.channel_id for r in rows},
                       {r.variant_id for r in rows if r.variant_id is not None},
                       lock=not committed)
    at = time.time() if since is None else since
    changed = [{"listing": r.id, "figure": figures.get((r.channel_id, r.variant_id)),
                "at": at} for r in rows
               if figures.get((r.channel_id, r.variant_id)) != r.figure]
    if changed:
        s.execute(_NEW_FIGURE, changed)
    return {r.channel_id for r in rows
            if figures.get((r.channel_id, r.variant_id)) != r.figure}


def _figures(s: Session, channel_ids: set[int], variant_ids: set[int], *, lock: bool
             ) -> dict[tuple[int, int], int]:
    """(channel, variant) -> the figure: the sum of quantityAvailable over the channel's
    warehouses, or the channel's untrackedQuantity for an untracked variant."""
    if not variant_ids:
        return {}
    channels = s.execute(select(SalesChannel.id, SalesChannel.seller_id,
                                SalesChannel.all_warehouses, SalesChannel.untracked_quantity)
                         .where(SalesChannel.id.in_(sorted(channel_ids)))).all()
    feeding = channel_warehouses(s, channels)
    tracked = dict(s.execute(select(ProductVariant.id, ProductVariant.track_inventory)
                             .where(ProductVariant.id.in_(sorted(variant_ids)))).all())
    available: dict[int, dict[int, int]] = defaultdict(dict)
    levels = select(Stock.variant_id, Stock.warehouse_id,
                    Stock.quantity - Stock.quantity_allocated) \
        .where(Stock.variant_id.in_(sorted(variant_ids))).order_by(Stock.id)
    if lock and s.get_bind().dialect.name == "postgresql":
        levels = levels.with_for_update(read=True, of=Stock)
    for variant_id, warehouse_id, free in s.execute(levels):
        available[variant_id][warehouse_id] = max(free, 0)
    figures: dict[tuple[int, int], int] = {}
    for c in channels:
        warehouses = feeding[c.id]
        for variant_id in variant_ids:
            if variant_id not in tracked:
                continue
            figures[c.id, variant_id] = c.untracked_quantity if not tracked[variant_id] else \
                sum(q for w, q in available[variant_id].items() if w in warehouses)
    return figures


def channel_warehouses(s: Session, channels: Sequence[Any]) -> dict[int, set[int]]:
    """Channel id -> the warehouses whose stock feeds it (and serves its inbound orders):
    its chosen ones, or all of its seller's. `channels`: rows or models with `id`,
    `seller_id` and `all_warehouses`."""
    found: dict[int, set[int]] = {c.id: set() for c in channels}
    chosen = sorted(c.id for c in channels if not c.all_warehouses)
    if chosen:
        for channel_id, warehouse_id in s.execute(
                select(sales_channel_warehouse.c.channel_id,
                       sales_channel_warehouse.c.warehouse_id)
                .where(sales_channel_warehouse.c.channel_id.in_(chosen))):
            found[channel_id].add(warehouse_id)
    sellers: dict[int, list[int]] = defaultdict(list)
    for c in channels:
        if c.all_warehouses:
            sellers[c.seller_id].append(c.id)
    if sellers:
        for warehouse_id, seller_id in s.execute(
                select(Warehouse.id, Warehouse.seller_id)
                .where(Warehouse.seller_id.in_(sorted(sellers)))):
            for channel_id in sellers[seller_id]:
                found[channel_id].add(warehouse_id)
    return found


def pending_clause() -> Any:
    """The listings that wait for a push: matched, with a figure the channel has not
    acknowledged, of a product that syncs; under FEEDS_ONLY only those whose variant is an
    item of a supplier feed filling one of the channel's warehouses (a channel in mode
    NONE is left out apart)."""
    fed = exists().where(
        SupplierFeedItem.variant_id == Listing.variant_id,
        SupplierFeed.id == SupplierFeedItem.feed_id,
        SalesChannel.all_warehouses.is_(True) | SupplierFeed.warehouse_id.in_(
            select(sales_channel_warehouse.c.warehouse_id)
            .where(sales_channel_warehouse.c.channel_id == SalesChannel.id)
            .correlate(SalesChannel))
    ).correlate(Listing, SalesChannel)
    in_mode = exists().where(
        SalesChannel.id == Listing.channel_id,
        (SalesChannel.sync_mode == SyncMode.ALL)
        | ((SalesChannel.sync_mode == SyncMode.FEEDS_ONLY) & fed)).correlate(Listing)
    return (Listing.variant_id.is_not(None) & Listing.figure.is_not(None)
            & (Listing.acked_version.is_(None) | (Listing.acked_version < Listing.version))
            & Listing.variant_id.in_(
                select(ProductVariant.id).join(Product, Product.id == ProductVariant.product_id)
                .where(Product.inventory_sync.is_(True)))
            & in_mode)


def pushes(mode: SyncMode) -> bool:
    """Whether a channel in this mode pushes anything (FEEDS_ONLY: its feed-filled
    listings, `pending_clause`)."""
    return mode is not SyncMode.NONE


_DUE = text(
    "SELECT c.id FROM sales_channel c WHERE c.paused = :false AND c.failing = :false "
    "AND c.sync_mode IN ('ALL', 'FEEDS_ONLY') AND c.retry_at <= :now "
    "AND c.lease_until < :now")
_DUE_ONE = text(_DUE.text + " AND c.id = :id")


def due_channels(engine: Engine, now: float | None = None, only: int | None = None
                 ) -> list[int]:
    """Channels (or the channel `only`) with something pending that no pusher holds and
    no backoff holds back."""
    now = time.time() if now is None else now
    # a read: on SQLite it must not take the writer's turn every second
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        if only is None:
            rows = conn.execute(_DUE, {"now": now, "false": False})
        else:
            rows = conn.execute(_DUE_ONE, {"now": now, "false": False, "id": only})
        candidates = [r[0] for r in rows]
        if not candidates:
            return []
        return sorted(set(conn.execute(
            select(Listing.channel_id).where(Listing.channel_id.in_(candidates),
                                             pending_clause())).scalars()))


# -- pushing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Update:
    listing: int
    external_id: str
    sku: str
    available: int
    version: int
    changed_at: float | None  # when the oldest change not acknowledged yet was committed


class Pusher:
    """Pushes channels' pending listings through `post`."""

    def __init__(self, engine: Engine, post: Post,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._engine = engine
        self._post = post
        self._sleep = sleep

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def post(self) -> Post:
        return self._post

    def push(self, channel_id: int) -> None:
        """Send everything pending of the channel, unless another pusher holds it."""
        while True:
            fence = self._claim(channel_id)
            if fence is None:
                return
            try:
                while self._round(channel_id, fence):
                    pass
            finally:
                self._release(channel_id, fence)
            # a change committed while we held the lease may have had its kick refused
            if not due_channels(self._engine, only=channel_id):
                return

    def _claim(self, channel_id: int) -> int | None:
        now = time.time()
        with self._engine.begin() as conn:
            claimed = conn.execute(text(
                "UPDATE sales_channel SET lease = lease + 1, lease_until = :until "
                "WHERE id = :id AND lease_until < :now AND paused = :false "
                "AND failing = :false AND retry_at <= :now RETURNING lease"),
                {"id": channel_id, "now": now, "until": now + LEASE, "false": False}).all()
        return int(claimed[0][0]) if claimed else None

    def _release(self, channel_id: int, fence: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(text("UPDATE sales_channel SET lease_until = 0 "
                              "WHERE id = :id AND lease = :fence"),
                         {"id": channel_id, "fence": fence})

    def _round(self, channel_id: int, fence: int) -> bool:
        """One request of at most 250 updates; True if there may be more to send now."""
        with self._engine.begin() as conn:
            c = conn.execute(select(
                SalesChannel.paused, SalesChannel.failing, SalesChannel.sync_mode,
                SalesChannel.next_request_at, SalesChannel.max_requests_per_second,
                SalesChannel.endpoint_url, SalesChannel.secret).where(
                SalesChannel.id == channel_id, SalesChannel.lease == fence)).first()
            if c is None:
                return False  # deleted, or our lease was taken over
            if c.paused or c.failing or not pushes(SyncMode(c.sync_mode)):
                return False
            updates = [_Update(*r[:3], int(r[3] or 0), *r[4:]) for r in conn.execute(
                select(Listing.id, Listing.external_id, Listing.sku, Listing.figure,
                       Listing.version, Listing.changed_at)
                .where(Listing.channel_id == channel_id, pending_clause())
                .order_by(Listing.id).limit(PER_REQUEST))]
            if not updates:
                return False
            # a request slot: requests to this channel are 1/rate apart, across processes
            now = time.time()
            slot = max(float(c.next_request_at), now)
            spacing = SPACING / max(int(c.max_requests_per_second), 1)
            conn.execute(text("UPDATE sales_channel SET next_request_at = :next, "
                              "lease_until = :until WHERE id = :id AND lease = :fence"),
                         {"next": slot + spacing, "until": slot + LEASE, "id": channel_id,
                          "fence": fence})
            endpoint, secret = c.endpoint_url, c.secret
        if slot > now:
            self._sleep(slot - now)
        sent = time.time()
        if sent - slot > LATE:
            # a busy process sent after its slot: the next request keeps its distance from
            # this one, not from the slot (this pusher holds the channel until it is stored)
            with self._engine.begin() as conn:
                conn.execute(text(
                    "UPDATE sales_channel SET next_request_at = :next WHERE id = :id "
                    "AND lease = :fence AND next_request_at < :next"),
                    {"next": sent + spacing, "id": channel_id, "fence": fence})
        body = json.dumps({"type": "inventory.updated",
                           "channelId": global_id("SalesChannel", channel_id),
                           "updates": [{"externalId": u.external_id, "sku": u.sku,
                                        "available": u.available, "version": u.version}
                                       for u in updates]}, separators=(",", ":"))
        # the same content keeps its id on a retry
        message_id = "msg_" + hashlib.sha256(f"{channel_id}:{body}".encode()).hexdigest()[:32]
        try:
            with kept_while(self._engine, "sales_channel", channel_id, fence):
                answer = self._post(endpoint, body.encode(), {
                    "content-type": "application/json",
                    **signing.headers(secret, body, message_id)})
        except Unreachable as exc:
            metrics.PUSHES.labels(global_id("SalesChannel", channel_id), "failed").inc()
            return self._failed(channel_id, fence, str(exc)[:300])
        status = answer.status
        metrics.PUSHES.labels(global_id("SalesChannel", channel_id), _result(status)).inc()
        if 200 <= status < 300:
            # False: a reset (salesChannelSync, a new endpoint or secret) took the channel
            # away while the request was in flight; the next pusher sends everything again
            return self._acknowledged(channel_id, fence, updates)
        if status in (401, 403):
            self._record(channel_id, fence, CREDENTIALS.format(status=status), failing=True)
            return False
        if status == 429:
            wait = _retry_after(answer.retry_after)
            self._record(channel_id, fence,
                         f"the endpoint asked to slow down (HTTP 429): next try in {wait:g} s",
                         retry_at=time.time() + wait)
            return False
        return self._failed(channel_id, fence, f"the endpoint answered HTTP {status}")

    def _acknowledged(self, channel_id: int, fence: int, updates: Sequence[_Update]) -> bool:
        """Store what the channel acknowledged; False if the lease was taken meanwhile."""
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            # the channel row before its listings, as a channel's update locks them (a
            # listing first deadlocked with salesChannelUpdate's refresh)
            held = conn.execute(text(
                "UPDATE sales_channel SET last_synced_at = :now, last_error = NULL, "
                "failures = 0 WHERE id = :id AND lease = :fence"),
                {"now": now, "id": channel_id, "fence": fence}).rowcount
            if not held:
                return False
            # a listing changed again meanwhile waits from now (when its change was
            # committed is not kept)
            conn.execute(text(
                "UPDATE listing SET acked_version = :version, pushed_version = :version, "
                "pushed_quantity = :available, pushed_at = :now, changed_at = CASE WHEN "
                "version <= :version THEN NULL ELSE :epoch END WHERE id = :listing "
                "AND (acked_version IS NULL OR acked_version <= :version)"),
                [{"version": u.version, "available": u.available, "now": now,
                  "epoch": now.timestamp(), "listing": u.listing} for u in updates])
        lag = metrics.SYNC_LAG.labels(global_id("SalesChannel", channel_id))
        for u in updates:
            if u.changed_at is not None:
                lag.observe(max(now.timestamp() - u.changed_at, 0.0))
        return True

    def _failed(self, channel_id: int, fence: int, error: str) -> bool:
        with self._engine.begin() as conn:
            failures = conn.execute(text("SELECT failures FROM sales_channel WHERE id = :id"),
                                    {"id": channel_id}).scalar_one() + 1
        delay = min(BACKOFF_CAP, 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)
        self._record(channel_id, fence, f"{error}; try {failures} failed, next in {delay:.0f} s",
                     retry_at=time.time() + delay, failures=failures)
        return False

    def _record(self, channel_id: int, fence: int, error: str, *, failing: bool = False,
                retry_at: float = 0.0, failures: int | None = None) -> None:
        log.info("channel %s: %s", channel_id, error)
        with self._engine.begin() as conn:
            conn.execute(text(
                "UPDATE sales_channel SET last_error = :error, last_error_at = :now, "
                "failing = :failing, retry_at = :retry_at, failures = COALESCE(:failures, "
                "failures) WHERE id = :id AND lease = :fence"),
                {"error": error[:500], "now": datetime.now(UTC), "failing": failing,
                 "retry_at": retry_at, "failures": failures, "id": channel_id,
                 "fence": fence})


@contextlib.contextmanager
def kept_while(engine: Engine, table: str, row_id: int, fence: int,
               lease: float = LEASE) -> Iterator[None]:
    """Renew the lease on this row (a channel's or a webhook subscription's) every second
    while the block runs (a request a receiver takes up to TIMEOUT to answer), so the lease
    itself can be short. Stops before the block's caller writes again."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW_EVERY):
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"UPDATE {table} SET lease_until = :until "
                                      "WHERE id = :id AND lease = :fence AND lease_until > 0"),
                                 {"until": time.time() + lease, "id": row_id, "fence": fence})
            except Exception:  # the database is away: the lease may lapse, nothing worse
                log.warning("could not renew the lease of %s %s", table, row_id,
                            exc_info=True)

    keeper = threading.Thread(target=renew, name="stockyard-lease", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def _result(status: int) -> str:
    """A receiver's answer, as the push and delivery counters name it."""
    if 200 <= status < 300:
        return "ok"
    if status in (401, 403):
        return "credentials"
    return "slow_down" if status == 429 else "failed"


def _retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return min(max(float(value), 0.0), BACKOFF_CAP)
    except ValueError:
        pass
    try:
        return min(max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0),
                   BACKOFF_CAP)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER


def global_id(type_name: str, pk: int) -> str:
    """An object's global ID, as api/ids.py spells it (bodies sent out name objects so)."""
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


# -- reconciliation ------------------------------------------------------------------------


class Fenced(Exception):
    """The reconciler's lease was taken over: it stops without writing."""


class Reconciler:
    """Every `every` seconds, works out every listing's figure again and pushes each whose
    acknowledged figure differs from it (API.md: "a full reconciliation").

    At most one runs at a time, in whichever process takes the `lease` row first: taking it
    draws the next fencing number, every batch re-checks that number under the row's lock
    in its own transaction (and renews the expiry), and a holder whose lease expired and
    was taken over stops at its next batch without writing. When the run is due next is
    kept in the same row, so restarts keep the schedule. This works alike on both
    databases; an advisory lock would not survive a pooler."""

    NAME = "reconcile"
    LEASE = 60.0  # seconds a run may go without renewing
    CHANNELS_PER_BATCH = 20

    def __init__(self, engine: Engine, every: float, kick: Callable[[Iterable[int]], None],
                 holder: str | None = None) -> None:
        self._engine = engine
        self.every = every
        self._kick = kick
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def tick(self, now: float | None = None) -> bool:
        """Run a reconciliation if one is due and no other process holds the lease."""
        fence = self.take(now)
        if fence is None:
            return False
        try:
            self.run(fence)
        except Fenced:
            log.warning("reconciliation %s of %s was taken over", fence, self.holder)
        return True

    def take(self, now: float | None = None) -> int | None:
        """The lease's next fencing number, if the run is due and the lease free."""
        now = time.time() if now is None else now
        with self._engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            row = conn.execute(text("SELECT due_at, expires_at FROM lease WHERE name = :n"),
                               {"n": self.NAME}).first()
        if row is not None and (row.due_at > now or row.expires_at >= now):
            return None  # not due, or held: no write (on SQLite, no writer turn)
        with self._engine.begin() as conn:
            if row is None:  # the first run is one period after the first process
                conn.execute(text(
                    "INSERT INTO lease (name, fence, expires_at, due_at) "
                    "VALUES (:n, 0, 0, :due) ON CONFLICT (name) DO NOTHING"),
                    {"n": self.NAME, "due": now + self.every})
            taken = conn.execute(text(
                "UPDATE lease SET fence = fence + 1, holder = :me, expires_at = :until "
                "WHERE name = :n AND due_at <= :now AND expires_at < :now RETURNING fence"),
                {"me": self.holder, "until": now + self.LEASE, "n": self.NAME,
                 "now": now}).all()
        return int(taken[0][0]) if taken else None

    def run(self, fence: int) -> int:
        """Reconcile every channel that pushes; the listings it found to push."""
        with self._engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            channels = list(conn.execute(text(
                "SELECT id FROM sales_channel WHERE paused = :false AND failing = :false "
                "AND sync_mode IN ('ALL', 'FEEDS_ONLY') ORDER BY id"),
                {"false": False}).scalars())
        log.info("reconciliation %s by %s: %s channels", fence, self.holder, len(channels))
        found = 0
        for start in range(0, len(channels), self.CHANNELS_PER_BATCH):
            batch = channels[start:start + self.CHANNELS_PER_BATCH]
            with self._sessions() as s, s.begin():
                self._hold(s, fence)
                refresh(s, channel_ids=batch)
                # acknowledged at a figure that is not the figure now: push it again
                found += s.connection().execute(
                    update(Listing).where(
                        Listing.channel_id.in_(batch), Listing.variant_id.is_not(None),
                        Listing.figure.is_not(None), Listing.acked_version >= Listing.version,
                        Listing.pushed_quantity.is_(None)
                        | (Listing.pushed_quantity != Listing.figure))
                    .values(acked_version=None)).rowcount
            self._kick(batch)
        with self._sessions() as s, s.begin():
            self._hold(s, fence)
            s.execute(text("UPDATE lease SET expires_at = 0, due_at = :due WHERE name = :n"),
                      {"due": time.time() + self.every, "n": self.NAME})
        log.info("reconciliation %s by %s done: %s listings were off", fence, self.holder,
                 found)
        return found

    def _hold(self, s: Session, fence: int) -> None:
        """Lock the lease row, check it is still ours and renew it; Fenced if not."""
        query = select(Lease.fence).where(Lease.name == self.NAME)
        if s.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        if s.scalar(query) != fence:
            raise Fenced(fence)
        s.execute(text("UPDATE lease SET expires_at = :until WHERE name = :n"),
                  {"until": time.time() + self.LEASE, "n": self.NAME})


# -- in the background ---------------------------------------------------------------------

_LISTED = IdsIn("SELECT id FROM listing WHERE variant_id IN :variants LIMIT 1", "variants")



class Sync:
    """A server process's part of the sync, and its `Publish`: the relay's rounds work out
    the figures of the variants whose stock changed, committed channel changes kick their
    channel, and a sweeper kicks every second what is due (retries, lost kicks, work left
    by a process that died)."""

    SWEEP_EVERY = 1.0
    KICK_AGAIN_AFTER = 1.0  # seconds before the sweeper kicks a channel it kicked already

    def __init__(self, engine: Engine, kick: Kick,
                 stock_changed: Callable[[list[int]], None] | None = None, *,
                 reconcile_every: float = 600.0, deliver: Kick | None = None) -> None:
        self._engine = engine
        self._kick = kick
        self._stock_changed = stock_changed
        # "deliver this webhook subscription's events soon"; None: no stock webhooks
        self._deliver = deliver
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.relay = Relay(engine, self.variants_changed,
                           movements=self.movements_committed if deliver else None)
        # 0: no reconciliation from this process
        self.reconciler = Reconciler(engine, reconcile_every, self.kick) \
            if reconcile_every > 0 else None
        self._kicked: dict[int, float] = {}
        self._kicked_subscriptions: dict[int, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, ListingsChanged):
            self.kick(event.channel_ids)
        elif isinstance(event, SubscriptionsChanged):
            self.kick_subscriptions(event.subscription_ids)
        else:
            self.relay(event)

    def variants_changed(self, variant_ids: list[int]) -> None:
        """The relay's `send`: figures worked out and committed before the relay moves on.

        Most rounds name no listed variant: one plain read finds that out. A listing that
        commits after this read computed its figure after the change (`refresh`).
        Internal supplier feeds follow first (domain/services/feeds.py): what they change
        in merchants' stocks is a new movement, which the next round hands on."""
        from domain.services import feeds  # it builds on the ledger, as this module does

        if feeds.follow(self._engine, variant_ids, since=self.relay.round_since):
            self.relay(StockChanged(()))  # look again at once
        with self._engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            listed = _LISTED.execute(conn, variant_ids).first()
        if listed is not None:
            with self._sessions() as s, s.begin():
                channels = refresh(s, variant_ids=variant_ids, committed=True,
                                   since=self.relay.round_since)
            self.kick(channels)
        if self._stock_changed is not None:
            self._stock_changed(variant_ids)

    def movements_committed(self, movement_ids: list[int]) -> None:
        """The relay's first hand-off: the stock webhooks' events, recorded before the
        relay moves on (domain/webhooks.py)."""
        from domain import webhooks  # it builds on this module

        self.kick_subscriptions(webhooks.record(self._engine, movement_ids))

    def kick_subscriptions(self, subscription_ids: Iterable[int]) -> None:
        if self._deliver is None:
            return
        now = time.monotonic()
        for subscription_id in subscription_ids:
            self._kicked_subscriptions[subscription_id] = now
            try:
                self._deliver(subscription_id)
            except Exception:  # the broker is down: the sweeper tries again
                log.warning("could not queue a delivery to webhook subscription %s",
                            subscription_id, exc_info=True)
                self._kicked_subscriptions.pop(subscription_id, None)

    def kick(self, channel_ids: Iterable[int]) -> None:
        now = time.monotonic()
        for channel_id in channel_ids:
            self._kicked[channel_id] = now
            try:
                self._kick(channel_id)
            except Exception:  # the broker is down: the sweeper tries again
                log.warning("could not queue a push of channel %s", channel_id, exc_info=True)
                self._kicked.pop(channel_id, None)

    def sweep(self) -> None:
        now = time.monotonic()
        due = [c for c in due_channels(self._engine)
               if now - self._kicked.get(c, -1e9) >= self.KICK_AGAIN_AFTER]
        self.kick(due)
        if self._deliver is not None:
            from domain import webhooks

            self.kick_subscriptions(
                s for s in webhooks.due_subscriptions(self._engine)
                if now - self._kicked_subscriptions.get(s, -1e9) >= self.KICK_AGAIN_AFTER)

    def start(self) -> None:
        self.relay.start()
        if self._threads:
            return
        self._threads.append(threading.Thread(target=self._sweep_forever,
                                              name="sync-sweeper", daemon=True))
        if self.reconciler is not None:
            self._threads.append(threading.Thread(target=self._reconcile_forever,
                                                  name="sync-reconciler", daemon=True))
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.relay.close(timeout)
        for thread in self._threads:
            thread.join(timeout)

    def _sweep_forever(self) -> None:
        while not self._stop.wait(self.SWEEP_EVERY):
            try:
                self.sweep()
            except Exception:
                log.warning("sweep failed", exc_info=True)

    def _reconcile_forever(self) -> None:
        assert self.reconciler is not None
        # look often enough to start within a fifth of the period of when it is due
        every = min(max(self.reconciler.every / 5, 0.1), 5.0)
        while not self._stop.wait(every):
            try:
                self.reconciler.tick()
            except Exception:
                log.warning("reconciliation failed", exc_info=True)


class ThreadKick:
    """A `Kick` that pushes (or delivers) on a pool of threads of this process (tests,
    tools): `work` is a Pusher's `push`, a Deliverer's `deliver`, or the pusher itself."""

    def __init__(self, work: Pusher | Kick, threads: int = 8) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._work: Kick = work.push if isinstance(work, Pusher) else work
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="push")

    def __call__(self, target_id: int) -> None:
        self._pool.submit(self._push, target_id)

    def _push(self, target_id: int) -> None:
        try:
            self._work(target_id)
        except Exception:
            log.exception("push or delivery to %s failed", target_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
