"""Order use cases: create, edit lines, confirm, cancel, fulfil. Each call is one transaction.

Locking: an operation on an existing order locks the order row first, then every stock row
it may touch in one statement ordered by stock id. Creating an order locks only stocks. So
two operations never wait on each other in opposite orders (no deadlocks), and no stock is
read, changed in Python and written back without holding its lock (no oversell).
SQLite has no row locks: its writers are serialized by BEGIN IMMEDIATE (domain/db.py).
How a new order is written on each database is `domain/placement.py`'s; the rules it is
decided by (validation, retries, allocation) are here.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, cast

from sqlalchemy import (
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import ledger, metrics, permissions, placement, sync
from domain.allocation import Book, Demand, FulfilledPart
from domain.countries import normalize_country
from domain.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    InvalidState,
    NotFound,
    check_text,
    clip,
    raise_all,
)
from domain.events import StockChanged
from domain.models import (
    Allocation,
    Fulfillment,
    FulfillmentLine,
    Listing,
    MovementType,
    Order,
    OrderLine,
    OrderStatus,
    OrderType,
    OrderTypeAllocation,
    PickBatch,
    PickBatchLine,
    PickBatchStatus,
    ProductVariant,
    Role,
    SalesChannel,
    Stock,
    Warehouse,
)
from domain.permissions import Principal
from domain.uow import UnitOfWork

ALLOCATION = cast(Table, Allocation.__table__)

MAX_LINE_QUANTITY = 1_000_000
P = ParamSpec("P")
R = TypeVar("R")

MAX_LINES = 500  # per request and per order (the cost limit counts Order.lines so)
EDITABLE = frozenset({OrderStatus.DRAFT, OrderStatus.QUOTE, OrderStatus.OFFER})
FULFILLABLE = frozenset({OrderStatus.UNFULFILLED, OrderStatus.PARTIALLY_FULFILLED})
FINAL = frozenset({OrderStatus.FULFILLED, OrderStatus.CANCELED})
INITIAL_STATUS = {
    OrderType.DRAFT: OrderStatus.DRAFT,
    OrderType.QUOTE: OrderStatus.QUOTE,
    OrderType.OFFER: OrderStatus.OFFER,
    OrderType.REGULAR: OrderStatus.UNFULFILLED,
}


@dataclass(frozen=True, slots=True)
class LineRequest:
    variant_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class FulfillRequest:
    line_id: int
    quantity: int
    warehouse_id: int | None = None


@dataclass(frozen=True, slots=True)
class AllocationView:
    warehouse_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class LineView:
    id: int
    variant_id: int
    quantity: int
    quantity_fulfilled: int
    allocations: tuple[AllocationView, ...]


@dataclass(frozen=True, slots=True)
class OrderView:
    id: int
    type: OrderType
    status: OrderStatus
    shipping_country: str
    lines: tuple[LineView, ...]
    channel_id: int | None = None  # the sales channel that sent the order in, if one did
    external_id: str | None = None  # the channel's own id of it


@dataclass(frozen=True, slots=True)
class InboundLine:
    """A line of an order a sales channel sends in: a SKU of the seller, or the external
    id of one of the channel's listings."""

    sku: str | None
    external_id: str | None
    quantity: int


@dataclass(frozen=True, slots=True)
class FulfillmentView:
    id: int
    order_id: int
    lines: tuple[tuple[int, int, int], ...]  # (order line id, warehouse id, quantity)


def _check_quantity(quantity: int, field: str) -> DomainError | None:
    if not 1 <= quantity <= MAX_LINE_QUANTITY:
        return InvalidInput(f"quantity must be between 1 and {MAX_LINE_QUANTITY:,}", field=field)
    return None


def _check_lines(lines: Sequence[LineRequest], prefix: str = "lines") -> None:
    if not lines:
        raise InvalidInput("at least one line is needed", field=prefix)
    if len(lines) > MAX_LINES:
        raise InvalidInput(f"at most {MAX_LINES} lines per request", field=prefix)
    raise_all([e for i, line in enumerate(lines)
               if (e := _check_quantity(line.quantity, f"{prefix}.{i}.quantity"))])


_CREATED = metrics.ORDERS.labels("created", "")


def _counted(place: Callable[P, R]) -> Callable[P, R]:
    """The orders metric (domain/metrics.py): each call placed (or answered again) an
    order, or was refused with its first error's code."""
    @functools.wraps(place)
    def counted(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            placed = place(*args, **kwargs)
        except DomainError as exc:
            metrics.ORDERS.labels("refused", exc.errors[0].code.value).inc()
            raise
        _CREATED.inc()
        return placed

    return counted


@_counted
def create(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    type: OrderType,
    shipping_country: str,
    lines: Sequence[LineRequest],
    idempotency_key: str | None = None,
) -> OrderView:
    """Create an order and allocate all of its tracked lines, or nothing at all.

    An `idempotency_key` is the caller's own (unique per token): the same key again with
    the same input (type, country, lines as a set of variant and quantity) answers the
    order it placed; with other
    input, a CONFLICT that changes nothing. Another token's key is simply a new key.
    """
    principal = permissions.require_order_creation(principal, type)
    country = normalize_country(shipping_country)
    errors: list[DomainError] = []
    if country is None:
        errors.append(InvalidInput(f"{clip(shipping_country)!r} is not an ISO 3166-1 alpha-2 code",
                                   field="shippingCountry"))
    if idempotency_key is not None:
        try:
            check_text(idempotency_key, "idempotencyKey", what="idempotencyKey")
        except DomainError as exc:
            errors.append(exc)
    try:
        _check_lines(lines)
    except DomainError as exc:
        errors.extend(exc.errors)
    raise_all(errors)
    assert country is not None
    seller = permissions.own_variants(principal)
    if seller is not None:
        with uow, uow.unlocked_reads() as r:  # a variant's seller never changes
            _require_own_variants(r, seller, lines)
    try:
        request = placement.OrderRequest(principal.name, type, country, lines,
                                         idempotency_key, principal.token_id)
        return _create(uow, request)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # a concurrent request of this caller with the same key committed first: answer
        # with its order
        with uow:
            existing = placement.order_id_for_key(uow.session, idempotency_key,
                                                  principal.token_id)
            if existing is None:
                raise
            return _replayed(request, load_view(uow.session, existing))


OPTIMISTIC_ATTEMPTS = 2


def _create(uow: UnitOfWork, request: placement.OrderRequest) -> OrderView:
    # Optimistic first: plan from an unlocked read, then move the counters with a guarded
    # update in the write's last statement (on PostgreSQL the write is that one statement),
    # so a hot stock row is locked only that long. A guard that fails (the stock ran dry
    # meanwhile) rolls everything back; the last attempt locks the rows up front and
    # cannot fail that way.
    decide = functools.partial(_decide, uow, request)
    for attempt in range(OPTIMISTIC_ATTEMPTS + 1):
        try:
            placed = placement.place(uow, request, decide,
                                     locking=attempt == OPTIMISTIC_ATTEMPTS)
        except placement.Contended:
            metrics.ALLOCATION_RETRIES.inc()
            continue
        if isinstance(placed, placement.Replay):
            with uow, uow.unlocked_reads() as r:
                return _replayed(request, load_view(r, placed.order_id))
        return _answer(request, placed)
    raise AssertionError("the locking attempt never raises Contended")


def _replayed(request: placement.OrderRequest, order: OrderView) -> OrderView:
    """The caller's order that holds the key, if it was placed with the request's input."""
    if (order.type, order.shipping_country) != (request.type, request.country) or sorted(
            (ln.variant_id, ln.quantity) for ln in order.lines) != sorted(
            (ln.variant_id, ln.quantity) for ln in request.lines):
        raise Conflict("this idempotencyKey was already used for a different order",
                       field="idempotencyKey")
    return order


def _decide(uow: UnitOfWork, request: placement.OrderRequest, plan: placement.Plan
            ) -> placement.Decision:
    """Apply the rules to the planned levels: what the new order writes."""
    levels, tracked, enabled = plan
    lines = request.lines
    demands = [Demand(i, line.variant_id, line.quantity, f"lines.{i}.quantity")
               for i, line in enumerate(lines)]
    book = Book.of(levels)
    book.require_serving(demands)
    allocates = bool(enabled)
    if allocates:
        book.allocate(d for d in demands if tracked[d.variant_id])
    counters = {sid: da for sid, (_, da) in book.stock_deltas().items()}
    if counters:
        uow.emit(StockChanged(tuple(sorted({line.variant_id for line in lines}))))
    row = placement.OrderRow(request.type, INITIAL_STATUS[request.type], request.country,
                             allocates, request.idempotency_key, request.token_id)
    return placement.Decision(row, book.allocation_changes(), counters, book)


def _answer(request: placement.OrderRequest, placed: placement.Placed) -> OrderView:
    """The new order as written, without reading it back."""
    order_id, line_ids, decision = placed
    stocks = decision.book.stocks
    by_line: dict[int, list[AllocationView]] = defaultdict(list)
    for (i, stock_id), qty in sorted(decision.allocations.items()):
        by_line[line_ids[i]].append(AllocationView(stocks[stock_id].warehouse_id, qty))
    return OrderView(
        id=order_id, type=request.type, status=decision.row.status,
        shipping_country=request.country,
        lines=tuple(LineView(lid, ln.variant_id, ln.quantity, 0, tuple(by_line[lid]))
                    for lid, ln in zip(line_ids, request.lines, strict=True)),
    )


def add_lines(
    uow: UnitOfWork, principal: Principal | None, order_id: int, lines: Sequence[LineRequest]
) -> OrderView:
    """Add lines to a DRAFT/QUOTE/OFFER order, allocating them if the order allocates."""
    _check_lines(lines)
    with uow:
        s = uow.session
        order, caller = _lock_for_change(s, principal, order_id)
        _require_editable(order)
        seller = permissions.own_variants(caller)
        if seller is not None:
            _require_own_variants(s, seller, lines)
        count = s.scalar(select(func.count()).where(OrderLine.order_id == order_id)) or 0
        if count + len(lines) > MAX_LINES:
            raise InvalidInput(f"an order has at most {MAX_LINES} lines; this one has {count}",
                               field="lines")
        actor = caller.name
        variant_ids = {line.variant_id for line in lines}
        levels, tracked, _ = placement.lock_stocks(s, variant_ids, order.shipping_country)
        placement.require_variants(s, variant_ids, tracked, [
            (f"lines.{i}.variantId", line.variant_id) for i, line in enumerate(lines)])
        current = _order_lines(s, order_id, variant_ids)
        book = Book.of(levels, _line_allocations(s, [ln.id for ln in current]))
        # new lines are keyed by negative numbers until they have ids
        demands = [Demand(-1 - i, line.variant_id, line.quantity, f"lines.{i}.quantity")
                   for i, line in enumerate(lines)]
        book.require_serving(demands)
        if order.allocated:
            requested, held = _order_totals(book, current, demands)
            book.allocate((d for d in demands if tracked[d.variant_id]),
                          requested=requested, held=held)
        line_ids = placement.insert_lines(s, order_id, lines)
        changes = {((line_ids[-1 - key] if key < 0 else key), sid): q
                   for (key, sid), q in book.allocation_changes().items()}
        _write_allocations(s, changes, existing=set())
        return _finish(uow, book, variant_ids, order_id, actor, "lines added")


def update_line(
    uow: UnitOfWork, principal: Principal | None, line_id: int, quantity: int
) -> OrderView:
    """Change a line's quantity; an allocated order allocates or releases the difference."""
    raise_all([e for e in [_check_quantity(quantity, "input.quantity")] if e])
    with uow:
        s = uow.session
        line, order, actor = _lock_line_for_change(s, principal, line_id)
        levels, tracked, _ = placement.lock_stocks(s, {line.variant_id}, order.shipping_country)
        current = _order_lines(s, order.id, {line.variant_id})
        book = Book.of(levels, _line_allocations(s, [ln.id for ln in current]))
        change = quantity - line.quantity
        if change > 0 and order.allocated and tracked.get(line.variant_id, False):
            demand = Demand(line.id, line.variant_id, change, "input.quantity")
            requested, held = _order_totals(book, current, [demand])
            book.allocate([demand], requested=requested, held=held)
        elif change < 0:
            book.release(line.id, max(book.held(line.id) - quantity, 0))
        line.quantity = quantity
        _write_allocations(s, book.allocation_changes(), existing=book.allocation_keys_before())
        return _finish(uow, book, {line.variant_id}, order.id, actor, "line updated")


def delete_line(uow: UnitOfWork, principal: Principal | None, line_id: int) -> OrderView:
    """Remove a line from a DRAFT/QUOTE/OFFER order, releasing what it holds."""
    with uow:
        s = uow.session
        line, order, actor = _lock_line_for_change(s, principal, line_id)
        levels, _, _ = placement.lock_stocks(s, {line.variant_id}, order.shipping_country)
        book = Book.of(levels, _line_allocations(s, [line.id]))
        book.release(line.id)
        _write_allocations(s, book.allocation_changes(), existing=book.allocation_keys_before())
        s.delete(line)
        return _finish(uow, book, {line.variant_id}, order.id, actor, "line deleted")


def confirm(uow: UnitOfWork, principal: Principal | None, order_id: int) -> OrderView:
    """Turn a DRAFT/QUOTE/OFFER into a REGULAR order; allocate now if it held nothing."""
    with uow:
        s = uow.session
        order, caller = _lock_for_change(s, principal, order_id)
        actor = caller.name
        if order.status not in EDITABLE:
            raise InvalidState(f"a {order.status} order cannot be confirmed")
        lines = _order_lines(s, order_id)
        if not lines:
            raise InvalidInput("an order without lines cannot be confirmed", field="id")
        variant_ids = {ln.variant_id for ln in lines}
        book: Book | None = None
        if not order.allocated:
            levels, tracked, enabled = placement.lock_stocks(
                s, variant_ids, order.shipping_country, config_for=OrderType.REGULAR)
            if enabled is None:
                enabled = _allocation_enabled(s, OrderType.REGULAR)
            if enabled:
                book = Book.of(levels)
                demands = [Demand(ln.id, ln.variant_id, ln.quantity, f"lines.{i}.quantity")
                           for i, ln in enumerate(lines)]
                book.require_serving(demands)
                book.allocate(d for d in demands if tracked.get(d.variant_id, False))
                _write_allocations(s, book.allocation_changes(), existing=set())
                order.allocated = True
        order.type = OrderType.REGULAR
        order.status = OrderStatus.UNFULFILLED
        if book is None:
            book = Book.of([])
        return _finish(uow, book, variant_ids, order_id, actor, "order confirmed")


def cancel(uow: UnitOfWork, principal: Principal | None, order_id: int) -> OrderView:
    """Release every allocation of the order and mark it canceled."""
    with uow:
        order, caller = _lock_for_change(uow.session, principal, order_id, cancel=True)
        return _cancel(uow, order, caller.name)


def _cancel(uow: UnitOfWork, order: Order, actor: str) -> OrderView:
    """Cancel the locked order and commit."""
    s = uow.session
    if order.status in FINAL:
        raise InvalidState(f"a {order.status} order cannot be canceled")
    held = s.execute(
        select(Allocation.stock_id, Allocation.quantity, Stock.variant_id)
        .join(OrderLine, OrderLine.id == Allocation.order_line_id)
        .join(Stock, Stock.id == Allocation.stock_id)
        .where(OrderLine.order_id == order.id)
    ).all()
    released: dict[int, int] = defaultdict(int)
    for stock_id, qty, _ in held:
        released[stock_id] += qty
    # units an open pick batch holds leave the batch too
    holds = held_by_open_batches(s, order.id)
    unbatched: dict[int, int] = defaultdict(int)
    for hold in holds:
        unbatched[hold.stock_id] -= hold.quantity
    if holds:
        s.execute(delete(PickBatchLine).where(PickBatchLine.id.in_([h.id for h in holds])))
    if released or unbatched:
        ledger.apply(s, {sid: (0, -n) for sid, n in released.items()},
                     type=MovementType.DEALLOCATION, actor=actor, reason="order canceled",
                     order_id=order.id, batch_reserve=unbatched)
        s.execute(delete(Allocation).where(Allocation.order_line_id.in_(
            select(OrderLine.id).where(OrderLine.order_id == order.id))))
        uow.emit(StockChanged(tuple(sorted({v for _, _, v in held}))))
    order.status = OrderStatus.CANCELED
    s.flush()
    view = load_view(s, order.id)
    uow.commit()
    return view


# -- orders sent in by sales channels (API.md "Inbound orders") -----------------------------


@_counted
def receive_from_channel(uow: UnitOfWork, channel_id: int, *, external_id: str,
                         shipping_country: str, lines: Sequence[InboundLine]
                         ) -> tuple[OrderView, bool]:
    """Place the REGULAR order a channel sent in, allocated from the channel's warehouses
    only; the order and whether it is new. The same external id again answers the order
    it placed and allocates nothing. A refusal writes nothing and leaves the id free."""
    country = normalize_country(shipping_country) if isinstance(shipping_country, str) \
        else None
    errors: list[DomainError] = []
    try:
        external_id = check_text(external_id, "externalId", what="externalId")
    except DomainError as exc:
        errors.extend(exc.errors)
    if country is None:
        errors.append(InvalidInput(f"{clip(shipping_country)!r} is not an ISO 3166-1 "
                                   "alpha-2 code", field="shippingCountry"))
    if not lines:
        errors.append(InvalidInput("at least one line is needed", field="lines"))
    elif len(lines) > MAX_LINES:
        errors.append(InvalidInput(f"at most {MAX_LINES} lines per request", field="lines"))
    for i, line in enumerate(lines[:MAX_LINES]):
        if (line.sku is None) == (line.external_id is None):
            errors.append(InvalidInput("a line names either a sku or a listing's externalId",
                                       field=f"lines.{i}"))
        if (e := _check_quantity(line.quantity, f"lines.{i}.quantity")) is not None:
            errors.append(e)
    raise_all(errors)
    assert country is not None
    try:
        with uow:
            return _receive(uow, channel_id, external_id, country, lines)
    except IntegrityError:
        # the same order, sent twice at once: the first one's commit won
        with uow:
            existing = _channel_order(uow.session, channel_id, external_id)
            if existing is None:
                raise
            return load_view(uow.session, existing), False


def _channel_order(s: Session, channel_id: int, external_id: str) -> int | None:
    return s.scalar(select(Order.id).where(Order.channel_id == channel_id,
                                           Order.external_id == external_id))


def _receive(uow: UnitOfWork, channel_id: int, external_id: str, country: str,
             lines: Sequence[InboundLine]) -> tuple[OrderView, bool]:
    s = uow.session
    channel = s.get(SalesChannel, channel_id)
    if channel is None:
        raise NotFound("sales channel not found", field="channelId")
    existing = _channel_order(s, channel_id, external_id)
    if existing is not None:
        return load_view(s, existing), False
    variants = _inbound_variants(s, channel, lines)
    levels, tracked, enabled = placement.lock_stocks(s, set(variants), country,
                                                     config_for=OrderType.REGULAR)
    if enabled is None:
        enabled = _allocation_enabled(s, OrderType.REGULAR)
    warehouses = sync.channel_warehouses(s, [channel])[channel.id]
    for level in levels:  # the channel's warehouses alone may serve it
        level.serves = level.serves and level.warehouse_id in warehouses
    order = Order(type=OrderType.REGULAR, status=OrderStatus.UNFULFILLED,
                  shipping_country=country, allocated=enabled, channel_id=channel_id,
                  external_id=external_id)
    s.add(order)
    s.flush()
    line_ids = placement.insert_lines(
        s, order.id, [LineRequest(v, ln.quantity) for v, ln in zip(variants, lines,
                                                                       strict=True)])
    book = Book.of(levels)
    demands = [Demand(lid, v, ln.quantity, f"lines.{i}.quantity")
               for i, (lid, v, ln) in enumerate(zip(line_ids, variants, lines, strict=True))]
    book.require_serving(demands)
    if enabled:
        book.allocate(d for d in demands if tracked.get(d.variant_id, False))
        _write_allocations(s, book.allocation_changes(), existing=set())
    actor = f'channel:{channel_id} "{channel.name}"'[:64]  # the ledger's actor
    return _finish(uow, book, set(variants), order.id, actor, "order received"), True


def _inbound_variants(s: Session, channel: SalesChannel, lines: Sequence[InboundLine]
                      ) -> list[int]:
    """Each line's variant: the seller's variant of its SKU, or its listing's variant."""
    skus = {ln.sku for ln in lines if ln.sku is not None}
    listings = {ln.external_id for ln in lines if ln.external_id is not None}
    by_sku = dict(s.execute(select(ProductVariant.sku, ProductVariant.id).where(
        ProductVariant.seller_id == channel.seller_id,
        ProductVariant.sku.in_(skus))).all()) if skus else {}
    by_listing = dict(s.execute(select(Listing.external_id, Listing.variant_id).where(
        Listing.channel_id == channel.id, Listing.external_id.in_(listings))).all()) \
        if listings else {}
    errors: list[DomainError] = []
    variants: list[int] = []
    for i, ln in enumerate(lines):
        if ln.sku is not None:
            variant = by_sku.get(ln.sku)
            if variant is None:
                errors.append(NotFound(f"the seller has no variant of SKU {clip(ln.sku)!r}",
                                       field=f"lines.{i}.sku"))
        else:
            variant = by_listing.get(ln.external_id or "")
            if variant is None:
                errors.append(NotFound(
                    f"the channel has no matched listing {clip(ln.external_id or '')!r}",
                    field=f"lines.{i}.externalId"))
        variants.append(variant or 0)
    raise_all(errors)
    return variants


def cancel_from_channel(uow: UnitOfWork, channel_id: int, external_id: str) -> OrderView:
    """Cancel the order the channel sent in as `external_id`; one canceled already is
    answered as it is, and nothing changes."""
    with uow:
        order_id = _channel_order(uow.session, channel_id, external_id)
        if order_id is None:
            raise NotFound("the channel sent no order with this externalId",
                           field="externalId")
        order = _lock_order(uow.session, order_id)
        if order.status is OrderStatus.CANCELED:
            return load_view(uow.session, order_id)
        channel = uow.session.get(SalesChannel, channel_id)
        name = channel.name if channel is not None else ""
        return _cancel(uow, order, f'channel:{channel_id} "{name}"'[:64])


def fulfill(
    uow: UnitOfWork,
    principal: Principal | None,
    order_id: int,
    requests: Sequence[FulfillRequest],
) -> tuple[OrderView, FulfillmentView]:
    """Ship units of a REGULAR order's lines: lower on-hand and the allocations consumed."""
    caller = permissions.require_fulfiller(principal)
    actor = caller.name
    if not requests:
        raise InvalidInput("at least one line is needed", field="lines")
    if len(requests) > MAX_LINES:
        raise InvalidInput(f"at most {MAX_LINES} lines per request", field="lines")
    raise_all([e for i, r in enumerate(requests)
               if (e := _check_quantity(r.quantity, f"lines.{i}.quantity"))])
    with uow:
        s = uow.session
        order = _lock_order(s, order_id)
        seller = permissions.seller_scope(caller)
        line_sellers = _line_sellers(s, order_id) if seller is not None else {}
        if not permissions.can_read_order(caller, order.created_by_token_id,
                                          set(line_sellers.values())):
            raise NotFound("order not found", field="id")
        if order.type is not OrderType.REGULAR or order.status not in FULFILLABLE:
            raise InvalidState(f"a {order.type} order in status {order.status} "
                               "cannot be fulfilled")
        # a seller fulfils its own lines: another seller's are as unknown to it
        all_lines = _order_lines(s, order_id)
        lines = {ln.id: ln for ln in all_lines
                 if seller is None or line_sellers[ln.id] == seller}
        # units open pick batches hold ship only with their batch (pickBatchComplete)
        holds = held_by_open_batches(s, order_id)
        in_batches: dict[tuple[int, int], int] = {(h.line_id, h.stock_id): h.quantity
                                                  for h in holds}
        batched: dict[int, int] = defaultdict(int)
        for h in holds:
            batched[h.line_id] += h.quantity
        errors: list[DomainError] = []
        asked: dict[int, int] = defaultdict(int)
        for i, r in enumerate(requests):
            line = lines.get(r.line_id)
            if line is None:
                errors.append(NotFound("order line not found in this order",
                                       field=f"lines.{i}.orderLineId"))
                continue
            asked[r.line_id] += r.quantity
            left = line.quantity - line.quantity_fulfilled
            if asked[r.line_id] > left:
                errors.append(InvalidInput(
                    f"only {left} left to fulfil",
                    field=f"lines.{i}.quantity", variant_id=line.variant_id))
            elif asked[r.line_id] > left - batched[r.line_id]:
                batches = sorted({h.batch_id for h in holds if h.line_id == r.line_id})
                errors.append(InvalidState(
                    f"{batched[r.line_id]} of the {left} units left are held by open pick "
                    f"batch {', '.join(map(str, batches))}: complete or cancel it",
                    field=f"lines.{i}.quantity", variant_id=line.variant_id))
        warehouse_ids = {r.warehouse_id for r in requests if r.warehouse_id is not None}
        known_stmt = select(Warehouse.id).where(Warehouse.id.in_(warehouse_ids))
        if seller is not None:
            known_stmt = known_stmt.where(Warehouse.seller_id == seller)
        known = set(s.scalars(known_stmt))
        errors.extend(NotFound("warehouse not found", field=f"lines.{i}.warehouseId",
                               warehouse_id=r.warehouse_id)
                      for i, r in enumerate(requests)
                      if r.warehouse_id is not None and r.warehouse_id not in known)
        raise_all(errors)

        variant_ids = {lines[r.line_id].variant_id for r in requests}
        levels, tracked, _ = placement.lock_stocks(s, variant_ids, order.shipping_country)
        allocations = _line_allocations(s, list(asked))
        # the book sees only what the orders themselves hold; batch-held units stay put
        book = Book.of(levels, {k: q - in_batches.get(k, 0) for k, q in allocations.items()
                                if q > in_batches.get(k, 0)})
        parts: list[FulfilledPart] = []
        for i, r in enumerate(requests):
            line = lines[r.line_id]
            try:
                parts.extend(book.fulfill(
                    line.id, line.variant_id, r.quantity,
                    # an untracked line ships without touching stock; allocations it kept
                    # from when it was tracked are released below as no longer needed
                    tracked=tracked.get(line.variant_id, False),
                    warehouse_id=r.warehouse_id, field=f"lines.{i}.quantity"))
            except DomainError as exc:
                errors.extend(exc.errors)
        raise_all(errors)
        for line_id, qty in asked.items():
            line = lines[line_id]
            line.quantity_fulfilled += qty
            # allocations never exceed what is left to ship
            excess = book.held(line_id) + batched[line_id] \
                - (line.quantity - line.quantity_fulfilled)
            if excess > 0:
                book.release(line_id, excess)
        _write_allocations(s, {k: q + in_batches.get(k, 0)
                               for k, q in book.allocation_changes().items()},
                           existing=set(allocations))

        fulfillment = Fulfillment(order_id=order_id)
        s.add(fulfillment)
        s.flush()
        merged: dict[tuple[int, int], int] = defaultdict(int)
        for part in parts:
            merged[(part.line, part.warehouse_id)] += part.quantity
        s.execute(insert(FulfillmentLine), [
            {"fulfillment_id": fulfillment.id, "order_line_id": lid, "warehouse_id": wid,
             "quantity": q} for (lid, wid), q in merged.items()])
        done = all(ln.quantity_fulfilled == ln.quantity for ln in all_lines)
        order.status = OrderStatus.FULFILLED if done else OrderStatus.PARTIALLY_FULFILLED
        view = _finish(uow, book, variant_ids, order_id, actor, "order fulfilled")
        return view, FulfillmentView(
            fulfillment.id, order_id, tuple((lid, wid, q) for (lid, wid), q in merged.items()))


@dataclass(frozen=True, slots=True)
class BatchHold:
    """Units of an order line that an open pick batch holds."""

    id: int  # the pick batch line
    batch_id: int
    line_id: int
    stock_id: int
    quantity: int


def held_by_open_batches(s: Session, order_id: int) -> list[BatchHold]:
    """What open pick batches hold of the (locked) order."""
    return [BatchHold(*row) for row in s.execute(
        select(PickBatchLine.id, PickBatchLine.batch_id, PickBatchLine.order_line_id,
               PickBatchLine.stock_id, PickBatchLine.quantity)
        .join(PickBatch, PickBatch.id == PickBatchLine.batch_id)
        .where(PickBatchLine.order_id == order_id,
               PickBatch.status == PickBatchStatus.OPEN))]


# -- reading -------------------------------------------------------------------------------


def load_view(session: Session, order_id: int) -> OrderView:
    """The order with its lines and their allocations (two statements)."""
    rows = session.execute(
        select(Order.id, Order.type, Order.status, Order.shipping_country,
               OrderLine.id, OrderLine.variant_id, OrderLine.quantity,
               OrderLine.quantity_fulfilled, Order.channel_id, Order.external_id)
        .outerjoin(OrderLine, OrderLine.order_id == Order.id)
        .where(Order.id == order_id)
        .order_by(OrderLine.id)
    ).all()
    if not rows:
        raise NotFound("order not found", field="id")
    line_ids = [r[4] for r in rows if r[4] is not None]
    allocations: dict[int, list[AllocationView]] = defaultdict(list)
    if line_ids:
        for line_id, warehouse_id, qty in session.execute(
            select(Allocation.order_line_id, Stock.warehouse_id, Allocation.quantity)
            .join(Stock, Stock.id == Allocation.stock_id)
            .join(Warehouse, Warehouse.id == Stock.warehouse_id)
            .where(Allocation.order_line_id.in_(line_ids))
            .order_by(Warehouse.priority, Warehouse.id)
        ):
            allocations[line_id].append(AllocationView(warehouse_id, qty))
    first = rows[0]
    return OrderView(
        id=first[0], type=first[1], status=first[2], shipping_country=first[3],
        lines=tuple(LineView(r[4], r[5], r[6], r[7], tuple(allocations[r[4]]))
                    for r in rows if r[4] is not None),
        channel_id=first[8], external_id=first[9],
    )


# -- helpers -------------------------------------------------------------------------------


def _lock_order(s: Session, order_id: int) -> Order:
    order = s.scalars(select(Order).where(Order.id == order_id).with_for_update()).first()
    if order is None:
        raise NotFound("order not found", field="id")
    return order


def _lock_for_change(s: Session, principal: Principal | None, order_id: int, *,
                     cancel: bool = False, missing: NotFound | None = None
                     ) -> tuple[Order, Principal]:
    """Lock an order the caller may edit or confirm (or cancel); one it may not see is
    `missing`, as an unknown one is."""
    missing = missing or NotFound("order not found", field="id")
    order = s.scalars(select(Order).where(Order.id == order_id).with_for_update()).first()
    needs_lines = order is not None and principal is not None \
        and principal.role is not Role.ADMIN
    caller = permissions.require_order_change(
        principal, created_by=order.created_by_token_id if order else None,
        line_sellers=set(_line_sellers(s, order_id).values()) if needs_lines else (),
        cancel=cancel, missing=missing)
    if order is None:
        raise missing
    return order, caller


def _require_editable(order: Order) -> None:
    if order.status not in EDITABLE:
        raise InvalidState(f"lines of a {order.status} order cannot be edited")


def _lock_line_for_change(s: Session, principal: Principal | None, line_id: int
                          ) -> tuple[OrderLine, Order, str]:
    """A line of an editable order the caller may edit, its order locked, and the actor."""
    order_id = s.scalar(select(OrderLine.order_id).where(OrderLine.id == line_id))
    order, caller = _lock_for_change(s, principal, order_id if order_id is not None else 0,
                                     missing=NotFound("order line not found", field="id"))
    _require_editable(order)
    line = s.get(OrderLine, line_id)
    if line is None:  # deleted while we waited for the order's lock
        raise NotFound("order line not found", field="id")
    return line, order, caller.name


def _line_sellers(s: Session, order_id: int) -> dict[int, int]:
    """Line id -> the seller of its variant."""
    return dict(s.execute(
        select(OrderLine.id, OrderLine.seller_id).where(OrderLine.order_id == order_id)).all())


def _require_own_variants(s: Session, seller_id: int, lines: Sequence[LineRequest]) -> None:
    """A seller's order lines are its own variants; another seller's is NOT_FOUND, as an
    unknown variant is."""
    owners = dict(s.execute(
        select(ProductVariant.id, ProductVariant.seller_id)
        .where(ProductVariant.id.in_({ln.variant_id for ln in lines}))).all())
    raise_all([NotFound("variant not found", field=f"lines.{i}.variantId",
                        variant_id=ln.variant_id)
               for i, ln in enumerate(lines) if owners.get(ln.variant_id) != seller_id])


def _order_lines(s: Session, order_id: int, variant_ids: set[int] | None = None) -> list[OrderLine]:
    stmt = select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.id)
    if variant_ids is not None:
        stmt = stmt.where(OrderLine.variant_id.in_(variant_ids))
    return list(s.scalars(stmt))


def _line_allocations(s: Session, line_ids: Sequence[int]) -> dict[tuple[int, int], int]:
    if not line_ids:
        return {}
    return {(lid, sid): q for lid, sid, q in s.execute(
        select(Allocation.order_line_id, Allocation.stock_id, Allocation.quantity)
        .where(Allocation.order_line_id.in_(line_ids)))}


def _order_totals(
    book: Book, current: Sequence[OrderLine], demands: Sequence[Demand]
) -> tuple[dict[int, int], dict[int, int]]:
    """Per variant: the order's total after the edit, and what the order holds already."""
    requested: dict[int, int] = defaultdict(int)
    held: dict[int, int] = defaultdict(int)
    for line in current:
        requested[line.variant_id] += line.quantity
        held[line.variant_id] += book.held(line.id)
    for d in demands:
        requested[d.variant_id] += d.quantity
    return requested, held


def _allocation_enabled(s: Session, order_type: OrderType) -> bool:
    enabled = s.scalar(select(OrderTypeAllocation.enabled)
                       .where(OrderTypeAllocation.order_type == order_type))
    return True if enabled is None else bool(enabled)


_UPDATE_ALLOCATION = (
    update(ALLOCATION)
    .where(ALLOCATION.c.order_line_id == bindparam("lid"),
           ALLOCATION.c.stock_id == bindparam("sid"))
    .values(quantity=bindparam("q"))
)
_DELETE_ALLOCATION = delete(ALLOCATION).where(
    ALLOCATION.c.order_line_id == bindparam("lid"), ALLOCATION.c.stock_id == bindparam("sid"))


def _write_allocations(
    s: Session, changes: dict[tuple[int, int], int], *, existing: set[tuple[int, int]]
) -> None:
    """Apply (line, stock) -> quantity changes: insert new, update kept, delete emptied."""
    conn = s.connection()
    new: dict[tuple[int, int], int] = {}
    updates: list[dict[str, int]] = []
    deletes: list[dict[str, int]] = []
    for (lid, sid), q in changes.items():
        if not q:
            deletes.append({"lid": lid, "sid": sid})
        elif (lid, sid) in existing:
            updates.append({"lid": lid, "sid": sid, "q": q})
        else:
            new[(lid, sid)] = q
    inserts = placement.allocation_inserts(new)
    if inserts is not None:
        conn.execute(*inserts)
    if updates:
        conn.execute(_UPDATE_ALLOCATION, updates)
    if deletes:
        conn.execute(_DELETE_ALLOCATION, deletes)


def _finish(
    uow: UnitOfWork, book: Book, variant_ids: Iterable[int], order_id: int, actor: str,
    reason: str,
) -> OrderView:
    """Apply the book's stock changes through the ledger, read the order back, commit."""
    deltas = book.stock_deltas()
    ledger.apply(uow.session, deltas, type=None, actor=actor, reason=reason, order_id=order_id)
    if deltas:
        uow.emit(StockChanged(tuple(sorted(variant_ids))))
    uow.session.flush()
    view = load_view(uow.session, order_id)
    uow.commit()
    return view
