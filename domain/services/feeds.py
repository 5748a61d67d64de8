"""Supplier feeds (API.md "Supplier feeds"): a supplier's figure fills a merchant's
warehouse.

The merchant's stock `quantity` in the feed's warehouse follows the supplier's figure
(FEED_IMPORT movements, the feed's name as `reason`), never below what merchant orders
hold allocated there (the gap is the item's shortfall). An internal supplier's figure is
the sum of `quantityAvailable` of its variant with the item's SKU over all its warehouses;
the relay hands every committed stock change to `follow` (domain/sync.py), so a supplier's
change reaches the merchant's stock within a second, and from there the merchant's
channels, webhooks and the feeds that it supplies in turn.

Locking: a fill locks the merchant's stocks (ascending id) and only then reads the
supplier's figures, so of two fills of one stock the later one writes the later figure.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, insert, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session, sessionmaker

from domain import ledger, metrics, permissions, signing
from domain.db import READ_ONLY, IdsIn
from domain.errors import (
    DomainError,
    InvalidInput,
    InvalidState,
    NotFound,
    check_text,
    raise_all,
)
from domain.events import StockChanged
from domain.models import (
    MovementType,
    ProductVariant,
    Seller,
    Stock,
    SupplierFeed,
    SupplierFeedItem,
    Warehouse,
)
from domain.permissions import Principal
from domain.services.channels import secret_error
from domain.sync import global_id
from domain.uow import UnitOfWork

MAX_ITEMS = 1_000  # per supplierFeedItemsUpsert
MAX_TEXT = 255
ACTOR = "feed"


@dataclass(frozen=True, slots=True)
class FeedInput:
    """supplierFeedUpdate's input; None leaves a field as it is."""

    name: str | None = None
    secret: str | None = None
    paused: bool | None = None


@dataclass(frozen=True, slots=True)
class ItemInput:
    variant_id: int
    supplier_sku: str


def _check(name: str | None, secret: str | None) -> None:
    errors: list[DomainError] = []
    if name is not None:
        try:
            check_text(name, "input.name", max_length=MAX_TEXT, what="name")
        except InvalidInput as exc:
            errors.append(exc)
    if secret is not None and not signing.is_secret(secret):
        errors.append(secret_error("input.secret"))
    raise_all(errors)


def create(uow: UnitOfWork, principal: Principal | None, *, warehouse_id: int, name: str,
           supplier_seller_id: int | None = None, secret: str | None = None
           ) -> tuple[SupplierFeed, str]:
    """A feed into the merchant's warehouse and its secret (generated when none is given).
    An internal feed (`supplier_seller_id`) is an arrangement between two sellers: admin
    only; a seller creates external feeds into its own warehouses."""
    _check(name, secret)
    secret = secret or signing.new_secret()
    with uow:
        s = uow.session
        warehouse = s.get(Warehouse, warehouse_id)
        if supplier_seller_id is not None:
            permissions.require_admin(principal)
        permissions.require_seller_access(
            principal, warehouse.seller_id if warehouse else None,
            NotFound("warehouse not found", field="input.warehouseId"))
        assert warehouse is not None
        if supplier_seller_id is not None:
            if s.get(Seller, supplier_seller_id) is None:
                raise NotFound("seller not found", field="input.supplierSellerId")
            if _feeds_from(s, warehouse.seller_id, supplier_seller_id):
                raise InvalidInput("the feed would fill the warehouse from its own stock "
                                   "(the supplier is its seller, or is filled by it through "
                                   "other feeds)", field="input.supplierSellerId")
        feed = SupplierFeed(warehouse_id=warehouse_id, name=name.strip(),
                            supplier_seller_id=supplier_seller_id, secret=secret,
                            paused=False, failing=False)
        s.add(feed)
        s.flush()
        uow.commit()
    return feed, secret


def _feeds_from(s: Session, merchant: int, supplier: int) -> bool:
    """Whether the merchant's stock reaches the supplier already (or they are one seller):
    a feed from the supplier to the merchant would then close a loop."""
    edges: dict[int, set[int]] = defaultdict(set)  # supplier -> merchants it fills
    for source, target in s.execute(
            select(SupplierFeed.supplier_seller_id, Warehouse.seller_id)
            .join(Warehouse, Warehouse.id == SupplierFeed.warehouse_id)
            .where(SupplierFeed.supplier_seller_id.is_not(None))):
        if source is not None:
            edges[source].add(target)
    seen, todo = {merchant}, [merchant]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return supplier in seen


def _for_change(s: Session, principal: Principal | None, feed_id: int,
                field: str = "id") -> SupplierFeed:
    feed = s.get(SupplierFeed, feed_id, with_for_update=True)
    owner = s.scalar(select(Warehouse.seller_id).where(Warehouse.id == feed.warehouse_id)) \
        if feed is not None else None
    caller = permissions.require_seller_access(
        principal, owner, NotFound("supplier feed not found", field=field))
    if feed is not None and feed.supplier_seller_id is not None \
            and permissions.seller_scope(caller) is not None:
        # an internal feed is the admin's arrangement: a seller reads it, never changes it
        permissions.require_admin(caller)
    assert feed is not None
    return feed


def update(uow: UnitOfWork, principal: Principal | None, feed_id: int, data: FeedInput
           ) -> SupplierFeed:
    """Rename, give a new secret, pause or resume (resuming fills every item again)."""
    _check(data.name, data.secret)
    with uow:
        s = uow.session
        feed = _for_change(s, principal, feed_id)
        if data.name is not None:
            feed.name = data.name.strip()
        if data.secret is not None and data.secret != feed.secret:
            feed.secret, feed.failing = data.secret, False
        resumed = data.paused is False and feed.paused
        if data.paused is not None:
            feed.paused = data.paused
        s.flush()
        if resumed and feed.supplier_seller_id is not None:
            _fill_internal(uow, feed, None)
        uow.commit()
    return feed


def upsert_items(uow: UnitOfWork, principal: Principal | None, feed_id: int,
                 items: Sequence[ItemInput]) -> SupplierFeed:
    """Which merchant variants the feed fills, and the supplier's SKU of each; the same
    variant again changes its SKU. New items of an internal feed are filled at once."""
    if len(items) > MAX_ITEMS:
        raise InvalidInput(f"at most {MAX_ITEMS:,} items per call", field="items")
    errors: list[DomainError] = []
    wanted: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            wanted[item.variant_id] = check_text(item.supplier_sku, f"items.{i}.supplierSku",
                                                 max_length=MAX_TEXT, what="supplierSku")
        except InvalidInput as exc:
            errors.append(exc)
    raise_all(errors)
    with uow:
        s = uow.session
        feed = _for_change(s, principal, feed_id, field="feedId")
        merchant = s.scalar(select(Warehouse.seller_id)
                            .where(Warehouse.id == feed.warehouse_id))
        owners = dict(s.execute(select(ProductVariant.id, ProductVariant.seller_id)
                                .where(ProductVariant.id.in_(sorted(wanted)))).all())
        known_skus: set[str] = set()
        if feed.supplier_seller_id is not None:
            known_skus = set(s.scalars(select(ProductVariant.sku).where(
                ProductVariant.seller_id == feed.supplier_seller_id,
                ProductVariant.sku.in_(sorted(set(wanted.values()))))))
        for i, item in enumerate(items):
            if owners.get(item.variant_id) != merchant:
                errors.append(NotFound("variant not found among the merchant's",
                                       field=f"items.{i}.variantId",
                                       variant_id=item.variant_id))
            elif feed.supplier_seller_id is not None and \
                    wanted[item.variant_id] not in known_skus:
                errors.append(InvalidInput("the supplier has no variant with this SKU",
                                           field=f"items.{i}.supplierSku"))
        raise_all(errors)
        existing = dict(s.execute(select(SupplierFeedItem.variant_id, SupplierFeedItem.id)
                                  .where(SupplierFeedItem.feed_id == feed_id,
                                         SupplierFeedItem.variant_id.in_(sorted(wanted))))
                        .all())
        new = [{"feed_id": feed_id, "variant_id": v, "supplier_sku": sku}
               for v, sku in wanted.items() if v not in existing]
        if new:
            s.execute(insert(SupplierFeedItem), new)
        for v, sku in wanted.items():
            if v in existing:
                s.execute(sql_update(SupplierFeedItem).where(SupplierFeedItem.id == existing[v])
                          .values(supplier_sku=sku)
                          .execution_options(synchronize_session=False))
        s.flush()
        if feed.supplier_seller_id is not None and not feed.paused:
            _fill_internal(uow, feed, sorted(wanted))
        uow.commit()
    return feed


def remove(uow: UnitOfWork, principal: Principal | None, feed_id: int) -> None:
    """Delete the feed and its items; the merchant's stock keeps its last figures."""
    with uow:
        s = uow.session
        _for_change(s, principal, feed_id)
        s.execute(delete(SupplierFeedItem).where(SupplierFeedItem.feed_id == feed_id))
        s.execute(delete(SupplierFeed).where(SupplierFeed.id == feed_id))
        uow.commit()


# -- filling -------------------------------------------------------------------------------

_FIGURES = text(
    "SELECT v.sku, COALESCE(SUM(CASE WHEN st.quantity > st.quantity_allocated "
    "THEN st.quantity - st.quantity_allocated ELSE 0 END), 0) "
    "FROM product_variant v LEFT JOIN stock st ON st.variant_id = v.id "
    "WHERE v.seller_id = :seller AND v.sku IN :skus GROUP BY v.sku"
).bindparams(bindparam("skus", expanding=True))


def supplier_figures(s: Session, supplier_seller_id: int, skus: Sequence[str]
                     ) -> dict[str, int]:
    """An internal supplier's figure per SKU: its variant's quantityAvailable summed over
    all its warehouses."""
    if not skus:
        return {}
    return {sku: int(n) for sku, n in s.execute(
        _FIGURES, {"seller": supplier_seller_id, "skus": sorted(set(skus))})}


def _fill_internal(uow: UnitOfWork, feed: SupplierFeed, variant_ids: Sequence[int] | None
                   ) -> None:
    variants = fill(uow.session, feed, variant_ids)
    if variants:
        uow.emit(StockChanged(tuple(variants)))


def fill(s: Session, feed: SupplierFeed, variant_ids: Sequence[int] | None,
         figures: dict[str, int] | None = None, *, lower_only: bool = False) -> list[int]:
    """Set the merchant's stocks of these items (None: all of the feed's) to the supplier's
    figures (`figures` by supplier SKU; None: an internal supplier's, read after the
    merchant's stocks are locked); the variants whose stock changed. `lower_only`: bring
    down only what stands above its figure (and above what orders hold), raise nothing."""
    query = select(SupplierFeedItem.id, SupplierFeedItem.variant_id,
                   SupplierFeedItem.supplier_sku).where(SupplierFeedItem.feed_id == feed.id)
    if variant_ids is not None:
        query = query.where(SupplierFeedItem.variant_id.in_(sorted(set(variant_ids))))
    items = s.execute(query.order_by(SupplierFeedItem.id)).all()
    if figures is not None:
        items = [i for i in items if i.supplier_sku in figures]
    if not items:
        return []
    wanted = sorted({i.variant_id for i in items})
    levels = _lock(s, feed.warehouse_id, wanted)
    missing = [v for v in wanted if v not in levels]
    if missing:
        ledger.insert_stocks(s, [(v, feed.warehouse_id, 0) for v in missing])
        levels = _lock(s, feed.warehouse_id, wanted)
    if figures is None:
        assert feed.supplier_seller_id is not None
        figures = supplier_figures(s, feed.supplier_seller_id,
                                   [i.supplier_sku for i in items])
    rows: list[tuple[int, int, int]] = []
    changed: list[int] = []
    for item in items:
        figure = figures.get(item.supplier_sku, 0)
        sid, quantity, allocated = levels[item.variant_id]
        new = max(figure, allocated)  # never below what merchant orders hold
        if new != quantity and not (lower_only and new > quantity):
            rows.append((sid, quantity, new))
            changed.append(item.variant_id)
        if not lower_only:  # (bringing down uses the figure the item keeps already)
            s.execute(sql_update(SupplierFeedItem).where(SupplierFeedItem.id == item.id)
                      .values(supplier_quantity=figure)
                      .execution_options(synchronize_session=False))
    ledger.set_quantities(s, rows, type=MovementType.FEED_IMPORT, actor=ACTOR,
                          reason=feed.name)
    if not lower_only:
        feed.last_synced_at = datetime.now(UTC)
    return sorted(set(changed))


def _lock(s: Session, warehouse_id: int, variant_ids: Sequence[int]
          ) -> dict[int, tuple[int, int, int]]:
    """variant -> (stock id, quantity, allocated) of its stock in the warehouse, locked."""
    query = select(Stock.variant_id, Stock.id, Stock.quantity, Stock.quantity_allocated) \
        .where(Stock.warehouse_id == warehouse_id, Stock.variant_id.in_(variant_ids)) \
        .order_by(Stock.id).with_for_update(key_share=True)
    return {v: (sid, q, a) for v, sid, q, a in s.execute(query)}


# one statement per relay round: the items of internal feeds whose supplier variant changed
# ('f'), and merchant stocks a feed raised to what orders held there, standing above the
# supplier's figure now that orders hold less ('a': a cancel, an edit, a fulfilment)
_FOLLOWING = IdsIn(
    "SELECT 'f', i.feed_id, i.variant_id, NULL, NULL FROM supplier_feed_item i "
    "JOIN supplier_feed f ON f.id = i.feed_id "
    "JOIN product_variant v ON v.seller_id = f.supplier_seller_id AND v.sku = i.supplier_sku "
    "WHERE v.id IN :variants AND f.paused = :false "
    "UNION ALL "
    "SELECT 'a', i.feed_id, i.variant_id, i.supplier_sku, i.supplier_quantity "
    "FROM supplier_feed_item i JOIN supplier_feed f ON f.id = i.feed_id "
    "JOIN stock st ON st.variant_id = i.variant_id AND st.warehouse_id = f.warehouse_id "
    "WHERE i.variant_id IN :variants AND f.paused = :false "
    "AND i.supplier_quantity IS NOT NULL "
    "AND st.quantity > i.supplier_quantity AND st.quantity > st.quantity_allocated",
    "variants")


def follow(engine: Engine, variant_ids: Sequence[int], since: float | None = None
           ) -> list[int]:
    """The relay's hand-off (one transaction); the merchant variants whose stock changed.

    Items of internal feeds whose supplier variant changed are filled again. Items whose own
    (merchant) variant changed and whose stock stands above both the supplier's last
    figure and what orders hold are brought down to that: the units a feed kept for orders
    beyond the supplier's figure (the shortfall) are not for sale once the orders let go.
    `since`: when the change was committed (the relay's round), for the feed lag metric."""
    if not variant_ids:
        return []
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        found: list[Any] = list(_FOLLOWING.execute(conn, variant_ids, false=False))
    if not found:
        return []
    by_feed: dict[int, list[int]] = defaultdict(list)
    lowered: dict[int, dict[int, tuple[str, int]]] = defaultdict(dict)
    for kind, feed_id, variant_id, sku, figure in found:
        if kind == "f":
            by_feed[feed_id].append(variant_id)
        else:
            lowered[feed_id][variant_id] = (sku, figure)
    changed: list[int] = []
    filled: list[int] = []
    with sessionmaker(engine)() as s, s.begin():
        for feed_id in sorted(by_feed.keys() | lowered.keys()):
            feed = s.get(SupplierFeed, feed_id)
            if feed is None or feed.paused:
                continue
            if feed_id in by_feed:
                changed += fill(s, feed, by_feed[feed_id])
                filled.append(feed_id)
            rest = {v: f for v, f in lowered[feed_id].items() if v not in by_feed[feed_id]}
            if rest:
                changed += fill(s, feed, sorted(rest), {sku: n for sku, n in rest.values()},
                                lower_only=True)
        if since is not None:  # (before the commit: a reader of the stock sees it counted)
            lag = max(time.time() - since, 0.0)
            for feed_id in filled:
                metrics.FEED_LAG.labels(global_id("SupplierFeed", feed_id)).observe(lag)
    return sorted(set(changed))


def shortfalls(s: Session, item_ids: Sequence[int]) -> list[int]:
    """Per item: units allocated in the feed's warehouse that the supplier no longer has."""
    rows = dict(s.execute(
        select(SupplierFeedItem.id,
               func.max(Stock.quantity_allocated
                        - func.coalesce(SupplierFeedItem.supplier_quantity,
                                        Stock.quantity_allocated)))
        .join(SupplierFeed, SupplierFeed.id == SupplierFeedItem.feed_id)
        .join(Stock, (Stock.variant_id == SupplierFeedItem.variant_id)
              & (Stock.warehouse_id == SupplierFeed.warehouse_id))
        .where(SupplierFeedItem.id.in_(set(item_ids)))
        .group_by(SupplierFeedItem.id)).all())
    return [max(int(rows.get(i) or 0), 0) for i in item_ids]


# -- external suppliers --------------------------------------------------------------------

MAX_POSTED = 10_000  # items in one POST /feeds/{id}


def feed_secret(s: Session, feed_id: int) -> str | None:
    """The secret of an external feed (None: no such feed, or an internal one)."""
    row = s.execute(select(SupplierFeed.secret, SupplierFeed.supplier_seller_id)
                    .where(SupplierFeed.id == feed_id)).first()
    return row.secret if row is not None and row.supplier_seller_id is None else None


def receive(uow: UnitOfWork, feed_id: int, figures: dict[str, int]) -> list[str]:
    """An external supplier's figures by its SKUs (POST /feeds/{id}): the items of those
    SKUs are set, the others untouched; the SKUs no item has, in the order given."""
    if len(figures) > MAX_POSTED:
        raise InvalidInput(f"at most {MAX_POSTED:,} items per request", field="items")
    with uow:
        s = uow.session
        feed = s.get(SupplierFeed, feed_id, with_for_update=True)
        if feed is None or feed.supplier_seller_id is not None:
            raise NotFound("no such external supplier feed", field="feedId")
        if feed.paused:
            raise InvalidState("the feed is paused", field="feedId")
        known = set(s.scalars(select(SupplierFeedItem.supplier_sku).where(
            SupplierFeedItem.feed_id == feed_id,
            SupplierFeedItem.supplier_sku.in_(sorted(figures)))))
        changed = fill(s, feed, None, {k: v for k, v in figures.items() if k in known})
        if not known:
            feed.last_synced_at = datetime.now(UTC)
        if changed:
            uow.emit(StockChanged(tuple(changed)))
        uow.commit()
    return [sku for sku in figures if sku not in known]


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemView:
    id: int
    variant_id: int
    supplier_sku: str
    supplier_quantity: int | None
    shortfall: int


def items_page(s: Session, feed_id: int, first: int, before_id: int | None
               ) -> list[ItemView]:
    """The feed's items, newest first, at most `first + 1`, with their shortfalls."""
    stmt = select(SupplierFeedItem).where(SupplierFeedItem.feed_id == feed_id) \
        .order_by(SupplierFeedItem.id.desc()).limit(first + 1)
    if before_id is not None:
        stmt = stmt.where(SupplierFeedItem.id < before_id)
    items = list(s.scalars(stmt))
    gaps = shortfalls(s, [i.id for i in items]) if items else []
    return [ItemView(i.id, i.variant_id, i.supplier_sku, i.supplier_quantity, gap)
            for i, gap in zip(items, gaps, strict=True)]


def by_id(s: Session, keys: Sequence[int]) -> list[tuple[SupplierFeed, int] | None]:
    """Each feed with the seller of its warehouse (who may read it)."""
    found = {f.id: (f, seller) for f, seller in s.execute(
        select(SupplierFeed, Warehouse.seller_id)
        .join(Warehouse, Warehouse.id == SupplierFeed.warehouse_id)
        .where(SupplierFeed.id.in_(set(keys))))}
    return [found.get(k) for k in keys]
