"""Order use cases: create, edit lines, confirm, cancel, fulfil. Each call is one transaction.

Locking: an operation on an existing order locks the order row first, then every stock row
it may touch in one statement ordered by stock id. Creating an order locks only stocks. So
two operations never wait on each other in opposite orders (no deadlocks), and no stock is
read, changed in Python and written back without holding its lock (no oversell).
SQLite has no row locks: its writers are serialized by BEGIN IMMEDIATE (domain/db.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import (
    Integer,
    Select,
    String,
    Table,
    TextClause,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import ledger, permissions
from domain.allocation import Book, Demand, FulfilledPart, StockLevel
from domain.countries import normalize_country
from domain.db import DRIVER_DIALECTS, driver_errors, pg_array
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
    Allocation,
    Fulfillment,
    FulfillmentLine,
    MovementType,
    Order,
    OrderLine,
    OrderStatus,
    OrderType,
    OrderTypeAllocation,
    Product,
    ProductVariant,
    ShippingZoneCountry,
    Stock,
    Warehouse,
    warehouse_shipping_zone,
)
from domain.permissions import Principal
from domain.uow import UnitOfWork

ALLOCATION = cast(Table, Allocation.__table__)
ORDER_LINE = cast(Table, OrderLine.__table__)
ORDERS = cast(Table, Order.__table__)

MAX_LINE_QUANTITY = 1_000_000
MAX_LINES = 500
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


@dataclass(frozen=True, slots=True)
class FulfillmentView:
    id: int
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


def create(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    type: OrderType,
    shipping_country: str,
    lines: Sequence[LineRequest],
    idempotency_key: str | None = None,
) -> OrderView:
    """Create an order and allocate all of its tracked lines, or nothing at all."""
    principal = permissions.require_order_placement(principal)
    country = normalize_country(shipping_country)
    errors: list[DomainError] = []
    if country is None:
        errors.append(InvalidInput(f"{shipping_country!r} is not an ISO 3166-1 alpha-2 code",
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
    try:
        return _create(uow, principal.name, type, country, lines, idempotency_key)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # a concurrent request with the same key committed first: answer with its order
        with uow:
            existing = _order_id_for_key(uow.session, idempotency_key)
            if existing is None:
                raise
            return load_view(uow.session, existing)


_ORDER_ID_FOR_KEY = select(Order.id).where(Order.idempotency_key == bindparam("key"))
_INSERT_ORDER = insert(ORDERS).returning(ORDERS.c.id)


def _order_id_for_key(session: Session, key: str) -> int | None:
    return session.connection().execute(_ORDER_ID_FOR_KEY, {"key": key}).scalar()


@dataclass(frozen=True, slots=True)
class OrderRow:
    """The columns of a new order."""

    type: OrderType
    status: OrderStatus
    shipping_country: str
    allocated: bool
    idempotency_key: str | None

    def params(self) -> dict[str, object]:
        """Its values, named as every order insert here names them."""
        return {"type": self.type.value, "status": self.status.value,
                "shipping_country": self.shipping_country, "allocated": self.allocated,
                "idempotency_key": self.idempotency_key}


class Placement(NamedTuple):
    order_id: int
    line_ids: list[int]  # in input order

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Placement:
        """From the one statement's row: (order id, line ids, ...)."""
        return cls(row[0], list(row[1]))


class _Place(Protocol):
    """Writes a decided order (`_place`, `_place_in_one_statement`, `_place_on_driver`,
    `_place_on_sqlite`, with their connection and unit bound)."""

    def __call__(
        self, *, row: OrderRow, lines: Sequence[LineRequest],
        by_index: Mapping[tuple[int, int], int], allocations: Mapping[int, int], actor: str,
    ) -> Placement: ...


def _place(
    *, uow: UnitOfWork, row: OrderRow, lines: Sequence[LineRequest],
    by_index: Mapping[tuple[int, int], int], allocations: Mapping[int, int], actor: str,
) -> Placement:
    """Insert the order, its lines and allocations, then allocate as the last step; commit.

    The session path on SQLite (its locking attempt). Raises `_Contended` (nothing
    committed) when a guard finds less free stock than planned.
    """
    s = uow.session
    order_id = s.connection().execute(_INSERT_ORDER, row.params()).scalar()
    assert order_id is not None
    line_ids = _insert_lines(s, order_id, lines)
    _write_allocations(s, {(line_ids[i], sid): q for (i, sid), q in by_index.items()},
                       existing=set())
    # the counters move last: on SQLite the whole database is held until COMMIT anyway
    if not uow.commit(last=functools.partial(
            ledger.allocate_last, allocations=allocations, actor=actor,
            reason=ORDER_CREATED, order_id=order_id)):
        raise _Contended()
    return Placement(order_id, line_ids)


def _place_in_one_statement(
    *, uow: UnitOfWork, row: OrderRow, lines: Sequence[LineRequest],
    by_index: Mapping[tuple[int, int], int], allocations: Mapping[int, int], actor: str,
    lock: bool,
) -> Placement:
    """`_place` on PostgreSQL, in the session that locked the rows: the one statement and
    the COMMIT leave in one pipeline."""
    statement, params = _one_statement(row, lines, by_index, allocations, actor,
                                       lock_in_order=not lock)
    placed: list[Placement] = []

    def last(session: Session) -> bool:
        result = ledger.commit_last(session, statement, params)
        if result is not None:
            placed.append(Placement.of_row(result))
        return result is not None

    if not uow.commit(last=last):
        raise _Contended()
    return placed[0]


def _place_on_driver(
    conn: Any, *, uow: UnitOfWork, row: OrderRow, lines: Sequence[LineRequest],
    by_index: Mapping[tuple[int, int], int], allocations: Mapping[int, int], actor: str,
) -> Placement:
    """`_place` on PostgreSQL's driver connection (autocommit): the statement alone is the
    transaction, so a hot stock row is locked only while PostgreSQL executes it."""
    statement, params = _one_statement(row, lines, by_index, allocations, actor,
                                       lock_in_order=True)
    result = ledger.execute_last(conn, statement, params)
    if result is None:
        raise _Contended()
    uow.committed_on_driver()
    return Placement.of_row(result)


def _place_on_sqlite(
    conn: Any, *, uow: UnitOfWork, row: OrderRow, lines: Sequence[LineRequest],
    by_index: Mapping[tuple[int, int], int], allocations: Mapping[int, int], actor: str,
) -> Placement:
    """`_place` on a gated pysqlite connection: the writer turn spans only these statements."""
    with driver_errors("BEGIN IMMEDIATE"):
        conn.begin_immediate()
    with driver_errors("the order's inserts and allocation"):
        order_id = conn.execute(_INSERT_ORDER_SQLITE, row.params()).fetchone()[0]
        statement, params = _insert_lines_sql(order_id, lines)
        line_ids = _line_ids(conn.execute(statement.text, params).fetchall(), lines)
        inserts = _numbered({(line_ids[i], sid): q for (i, sid), q in by_index.items()})
        if inserts:
            conn.execute(_insert_allocations_statement(len(inserts) // 3).text, inserts)
        if not ledger.allocate_on_sqlite(conn, allocations, actor=actor,
                                         reason=ORDER_CREATED, order_id=order_id):
            conn.rollback()
            raise _Contended()
        conn.commit()
    uow.committed_on_driver()
    return Placement(order_id, line_ids)


def _one_statement(
    row: OrderRow, lines: Sequence[LineRequest], by_index: Mapping[tuple[int, int], int],
    allocations: Mapping[int, int], actor: str, *, lock_in_order: bool,
) -> tuple[str, dict[str, object]]:
    """PostgreSQL's one-statement placement (`_place_sql`) and its parameters."""
    rows = sorted((sid, n) for sid, n in allocations.items() if n)
    params = {**row.params(), "lv": pg_array(ln.variant_id for ln in lines),
              "lq": pg_array(ln.quantity for ln in lines)}
    if rows:
        ordered = sorted(by_index.items())
        params.update(
            an=pg_array(i + 1 for (i, _), _ in ordered),
            asid=pg_array(sid for (_, sid), _ in ordered),
            aq=pg_array(q for _, q in ordered),
            ids=pg_array(sid for sid, _ in rows),
            das=pg_array(n for _, n in rows), n=len(rows),
            movement_type=MovementType.ALLOCATION.value, reason=ORDER_CREATED, actor=actor)
    return _PLACE_SQL[(bool(rows), len(rows) > 1 and lock_in_order)], params


def _place_sql(allocating: bool, lock_in_order: bool) -> str:
    """The statement of `_one_statement` (psycopg placeholders).

    Line ids ascend in input order: the INSERT takes its rows sorted by ordinality and
    PostgreSQL draws the serial ids as it inserts them (SQLAlchemy's "insertmanyvalues"
    relies on the same), so `row_number() OVER (ORDER BY id)` is the line's position.
    """
    sql = (
        "WITH o AS (INSERT INTO orders (type, status, shipping_country, allocated, "
        "idempotency_key) VALUES (%(type)s, %(status)s, %(shipping_country)s, "
        "%(allocated)s, %(idempotency_key)s) RETURNING id), "
        "l AS (INSERT INTO order_line (order_id, variant_id, quantity, quantity_fulfilled) "
        "SELECT o.id, t.v, t.q, 0 FROM o, unnest(%(lv)s::integer[], %(lq)s::integer[]) "
        "WITH ORDINALITY AS t(v, q, n) ORDER BY t.n RETURNING id)"
    )
    if allocating:
        sql += (
            ", a AS (INSERT INTO allocation (order_line_id, stock_id, quantity) "
            "SELECT ln.id, t.s, t.q FROM (SELECT id, row_number() OVER (ORDER BY id) AS n "
            "FROM l) AS ln JOIN unnest(%(an)s::integer[], %(asid)s::integer[], "
            "%(aq)s::integer[]) AS t(n, s, q) ON t.n = ln.n RETURNING 1), "
            + ledger.guarded_allocation_sql(lock_in_order, order_id="(SELECT id FROM o)"))
    sql += " SELECT (SELECT id FROM o), ARRAY(SELECT id FROM l ORDER BY id)"
    if allocating:
        sql += ", stockyard_require((SELECT count(*) FROM moved) = %(n)s)"
    return sql


_PLACE_SQL = {(allocating, several): _place_sql(allocating, several)
              for allocating in (False, True) for several in (False, True)}
ORDER_CREATED = "order created"


class _Contended(Exception):
    """A guarded stock update found less available than the snapshot promised."""


OPTIMISTIC_ATTEMPTS = 2


def _create(
    uow: UnitOfWork,
    actor: str,
    type: OrderType,
    country: str,
    lines: Sequence[LineRequest],
    idempotency_key: str | None,
) -> OrderView:
    # Optimistic first: plan from an unlocked read, then move the counters with a guarded
    # update in the write's last statement (on PostgreSQL the write is that one statement),
    # so a hot stock row is locked only that long. A guard that fails (the stock ran dry
    # meanwhile) rolls everything back; the last attempt locks the rows up front and
    # cannot fail that way.
    for attempt in range(OPTIMISTIC_ATTEMPTS + 1):
        try:
            return _create_once(uow, actor, type, country, lines, idempotency_key,
                                lock=attempt == OPTIMISTIC_ATTEMPTS)
        except _Contended:
            continue
    raise AssertionError("the locking attempt never raises _Contended")


def _create_once(
    uow: UnitOfWork,
    actor: str,
    type: OrderType,
    country: str,
    lines: Sequence[LineRequest],
    idempotency_key: str | None,
    *,
    lock: bool,
) -> OrderView:
    request = _Request(actor, type, country, lines, idempotency_key)
    variant_ids = {line.variant_id for line in lines}
    dialect = uow.dialect
    if not lock and dialect in _DRIVER_READS:
        # the optimistic attempt runs on one pooled connection, without a session: its read
        # needs no transaction, and its write frames its own
        with uow.driver() as conn:
            # SQLite without a writer gate (in memory) has no begin_immediate
            on_driver = _place_on_driver if dialect == "postgresql" else \
                _place_on_sqlite if hasattr(conn, "begin_immediate") else None
            with driver_errors("the order's plan"):
                plan = _plan_on_driver(conn, dialect, variant_ids, request) \
                    if on_driver else None
            if on_driver and plan is not None:
                return _decide_and_place(
                    uow, request, plan, functools.partial(on_driver, conn, uow=uow))
    with uow:
        s = uow.session
        reads = contextlib.nullcontext(s) if lock else uow.unlocked_reads()
        with reads as r:
            if idempotency_key is not None:
                existing = _order_id_for_key(r, idempotency_key)
                if existing is not None:
                    return load_view(r, existing)
            planned = _lock_stocks(r, variant_ids, country, config_for=type, lock=lock)
            _require_variants(r, variant_ids, planned.tracked, [
                (f"lines.{i}.variantId", line.variant_id) for i, line in enumerate(lines)])
        place = functools.partial(_place_in_one_statement, uow=uow, lock=lock) \
            if dialect == "postgresql" else functools.partial(_place, uow=uow)
        return _decide_and_place(uow, request, planned, place)


@dataclass(frozen=True, slots=True)
class _Request:
    actor: str
    type: OrderType
    country: str
    lines: Sequence[LineRequest]
    idempotency_key: str | None


class Plan(NamedTuple):
    """What an order is planned from (`_lock_stocks`)."""

    levels: list[StockLevel]
    tracked: dict[int, bool]  # trackInventory by variant, for the variants found
    enabled: bool | None  # whether the order type allocates; None when no stock row exists


def _decide_and_place(
    uow: UnitOfWork, request: _Request, plan: Plan, place: _Place,
) -> OrderView:
    """Apply the rules to the planned levels, then `place` the order and commit."""
    levels, tracked, enabled = plan
    lines = request.lines
    demands = [Demand(i, line.variant_id, line.quantity, f"lines.{i}.quantity")
               for i, line in enumerate(lines)]
    book = Book.of(levels)
    book.require_serving(demands)
    allocates = bool(enabled)
    if allocates:
        book.allocate(d for d in demands if tracked[d.variant_id])

    status = INITIAL_STATUS[request.type]
    by_index = book.allocation_changes()  # (line index, stock id) -> units
    allocations = {sid: da for sid, (_, da) in book.stock_deltas().items()}
    if allocations:
        uow.emit(StockChanged(tuple(sorted({line.variant_id for line in lines}))))
    row = OrderRow(request.type, status, request.country, allocates, request.idempotency_key)
    order_id, line_ids = place(row=row, lines=lines, by_index=by_index,
                               allocations=allocations, actor=request.actor)

    by_line: dict[int, list[AllocationView]] = defaultdict(list)
    for (i, stock_id), qty in sorted(by_index.items()):
        by_line[line_ids[i]].append(AllocationView(book.stocks[stock_id].warehouse_id, qty))
    return OrderView(
        id=order_id, type=request.type, status=status, shipping_country=request.country,
        lines=tuple(LineView(lid, ln.variant_id, ln.quantity, 0, tuple(by_line[lid]))
                    for lid, ln in zip(line_ids, lines, strict=True)),
    )


def _plan_on_driver(conn: Any, dialect: str, variant_ids: set[int],
                    request: _Request) -> Plan | None:
    """`_lock_stocks` without locks, on a DBAPI connection; None when the session path
    must answer: an order already holds the idempotency key, or a variant has no stock."""
    stocks, order_for_key = _DRIVER_READS[dialect]
    if request.idempotency_key is not None and conn.execute(
            order_for_key, {"key": request.idempotency_key}).fetchone() is not None:
        return None
    ids = sorted(variant_ids)
    rows = conn.execute(stocks, {
        "variant_ids": pg_array(ids) if dialect == "postgresql" else json.dumps(ids),
        "country": request.country, "order_type": request.type.value}).fetchall()
    plan = _plan_of(rows, with_config=True)
    return plan if variant_ids <= plan.tracked.keys() else None


def add_lines(
    uow: UnitOfWork, principal: Principal | None, order_id: int, lines: Sequence[LineRequest]
) -> OrderView:
    """Add lines to a DRAFT/QUOTE/OFFER order, allocating them if the order allocates."""
    actor = permissions.require_admin(principal).name
    _check_lines(lines)
    with uow:
        s = uow.session
        order = _lock_editable(s, order_id)
        variant_ids = {line.variant_id for line in lines}
        levels, tracked, _ = _lock_stocks(s, variant_ids, order.shipping_country)
        _require_variants(s, variant_ids, tracked, [(f"lines.{i}.variantId", line.variant_id)
                          for i, line in enumerate(lines)])
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
        line_ids = _insert_lines(s, order_id, lines)
        changes = {((line_ids[-1 - key] if key < 0 else key), sid): q
                   for (key, sid), q in book.allocation_changes().items()}
        _write_allocations(s, changes, existing=set())
        return _finish(uow, book, variant_ids, order_id, actor, "lines added")


def update_line(
    uow: UnitOfWork, principal: Principal | None, line_id: int, quantity: int
) -> OrderView:
    """Change a line's quantity; an allocated order allocates or releases the difference."""
    actor = permissions.require_admin(principal).name
    raise_all([e for e in [_check_quantity(quantity, "input.quantity")] if e])
    with uow:
        s = uow.session
        line = _line(s, line_id)
        order = _lock_editable(s, line.order_id)
        levels, tracked, _ = _lock_stocks(s, {line.variant_id}, order.shipping_country)
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
    actor = permissions.require_admin(principal).name
    with uow:
        s = uow.session
        line = _line(s, line_id)
        order = _lock_editable(s, line.order_id)
        levels, _, _ = _lock_stocks(s, {line.variant_id}, order.shipping_country)
        book = Book.of(levels, _line_allocations(s, [line.id]))
        book.release(line.id)
        _write_allocations(s, book.allocation_changes(), existing=book.allocation_keys_before())
        s.delete(line)
        return _finish(uow, book, {line.variant_id}, order.id, actor, "line deleted")


def confirm(uow: UnitOfWork, principal: Principal | None, order_id: int) -> OrderView:
    """Turn a DRAFT/QUOTE/OFFER into a REGULAR order; allocate now if it held nothing."""
    actor = permissions.require_admin(principal).name
    with uow:
        s = uow.session
        order = _lock_order(s, order_id)
        if order.status not in EDITABLE:
            raise InvalidState(f"a {order.status} order cannot be confirmed")
        lines = _order_lines(s, order_id)
        if not lines:
            raise InvalidInput("an order without lines cannot be confirmed", field="id")
        variant_ids = {ln.variant_id for ln in lines}
        book: Book | None = None
        if not order.allocated:
            levels, tracked, enabled = _lock_stocks(
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
    actor = permissions.require_admin(principal).name
    with uow:
        s = uow.session
        order = _lock_order(s, order_id)
        if order.status in FINAL:
            raise InvalidState(f"a {order.status} order cannot be canceled")
        held = s.execute(
            select(Allocation.stock_id, Allocation.quantity, Stock.variant_id)
            .join(OrderLine, OrderLine.id == Allocation.order_line_id)
            .join(Stock, Stock.id == Allocation.stock_id)
            .where(OrderLine.order_id == order_id)
        ).all()
        released: dict[int, int] = defaultdict(int)
        for stock_id, qty, _ in held:
            released[stock_id] += qty
        if released:
            ledger.apply(s, {sid: (0, -n) for sid, n in released.items()},
                         type=MovementType.DEALLOCATION, actor=actor, reason="order canceled",
                         order_id=order_id)
            s.execute(delete(Allocation).where(Allocation.order_line_id.in_(
                select(OrderLine.id).where(OrderLine.order_id == order_id))))
            uow.emit(StockChanged(tuple(sorted({v for _, _, v in held}))))
        order.status = OrderStatus.CANCELED
        s.flush()
        view = load_view(s, order_id)
        uow.commit()
        return view


def fulfill(
    uow: UnitOfWork,
    principal: Principal | None,
    order_id: int,
    requests: Sequence[FulfillRequest],
) -> tuple[OrderView, FulfillmentView]:
    """Ship units of a REGULAR order's lines: lower on-hand and the allocations consumed."""
    actor = permissions.require_admin(principal).name
    if not requests:
        raise InvalidInput("at least one line is needed", field="lines")
    if len(requests) > MAX_LINES:
        raise InvalidInput(f"at most {MAX_LINES} lines per request", field="lines")
    raise_all([e for i, r in enumerate(requests)
               if (e := _check_quantity(r.quantity, f"lines.{i}.quantity"))])
    with uow:
        s = uow.session
        order = _lock_order(s, order_id)
        if order.type is not OrderType.REGULAR or order.status not in FULFILLABLE:
            raise InvalidState(f"a {order.type} order in status {order.status} "
                               "cannot be fulfilled")
        lines = {ln.id: ln for ln in _order_lines(s, order_id)}
        errors: list[DomainError] = []
        asked: dict[int, int] = defaultdict(int)
        for i, r in enumerate(requests):
            line = lines.get(r.line_id)
            if line is None:
                errors.append(NotFound("order line not found in this order",
                                       field=f"lines.{i}.orderLineId"))
                continue
            asked[r.line_id] += r.quantity
            if asked[r.line_id] > line.quantity - line.quantity_fulfilled:
                errors.append(InvalidInput(
                    f"only {line.quantity - line.quantity_fulfilled} left to fulfil",
                    field=f"lines.{i}.quantity", variant_id=line.variant_id))
        warehouse_ids = {r.warehouse_id for r in requests if r.warehouse_id is not None}
        known = set(s.scalars(select(Warehouse.id).where(Warehouse.id.in_(warehouse_ids))))
        errors.extend(NotFound("warehouse not found", field=f"lines.{i}.warehouseId",
                               warehouse_id=r.warehouse_id)
                      for i, r in enumerate(requests)
                      if r.warehouse_id is not None and r.warehouse_id not in known)
        raise_all(errors)

        variant_ids = {lines[r.line_id].variant_id for r in requests}
        levels, tracked, _ = _lock_stocks(s, variant_ids, order.shipping_country)
        book = Book.of(levels, _line_allocations(s, list(asked)))
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
            excess = book.held(line_id) - (line.quantity - line.quantity_fulfilled)
            if excess > 0:
                book.release(line_id, excess)
        _write_allocations(s, book.allocation_changes(), existing=book.allocation_keys_before())

        fulfillment = Fulfillment(order_id=order_id)
        s.add(fulfillment)
        s.flush()
        merged: dict[tuple[int, int], int] = defaultdict(int)
        for part in parts:
            merged[(part.line, part.warehouse_id)] += part.quantity
        s.execute(insert(FulfillmentLine), [
            {"fulfillment_id": fulfillment.id, "order_line_id": lid, "warehouse_id": wid,
             "quantity": q} for (lid, wid), q in merged.items()])
        done = all(ln.quantity_fulfilled == ln.quantity for ln in lines.values())
        order.status = OrderStatus.FULFILLED if done else OrderStatus.PARTIALLY_FULFILLED
        view = _finish(uow, book, variant_ids, order_id, actor, "order fulfilled")
        return view, FulfillmentView(
            fulfillment.id, tuple((lid, wid, q) for (lid, wid), q in merged.items()))


# -- reading -------------------------------------------------------------------------------


def load_view(session: Session, order_id: int) -> OrderView:
    """The order with its lines and their allocations (two statements)."""
    rows = session.execute(
        select(Order.id, Order.type, Order.status, Order.shipping_country,
               OrderLine.id, OrderLine.variant_id, OrderLine.quantity,
               OrderLine.quantity_fulfilled)
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
    )


# -- helpers -------------------------------------------------------------------------------


def _lock_order(s: Session, order_id: int) -> Order:
    order = s.scalars(select(Order).where(Order.id == order_id).with_for_update()).first()
    if order is None:
        raise NotFound("order not found", field="id")
    return order


def _lock_editable(s: Session, order_id: int) -> Order:
    order = _lock_order(s, order_id)
    if order.status not in EDITABLE:
        raise InvalidState(f"lines of a {order.status} order cannot be edited")
    return order


def _line(s: Session, line_id: int) -> OrderLine:
    line = s.get(OrderLine, line_id)
    if line is None:
        raise NotFound("order line not found", field="id")
    return line


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


def _stock_statement(*, with_config: bool, lock: bool, array: str | None = None
                     ) -> Select[Any]:
    """Every stock of the variants, ascending id; built once, compiled once.

    `array`: the variants come as one parameter, for that dialect: a PostgreSQL array
    literal (`pg_array`) or a JSON array (SQLite's `json_each`).
    """
    serves = exists().where(
        warehouse_shipping_zone.c.warehouse_id == Warehouse.id,
        ShippingZoneCountry.zone_id == warehouse_shipping_zone.c.zone_id,
        ShippingZoneCountry.country == bindparam("country"),
    )
    columns: list[Any] = [
        Stock.id, Stock.variant_id, Stock.warehouse_id, Warehouse.priority,
        and_(Warehouse.seller_id == Product.seller_id, serves).label("serves"),
        Stock.quantity, Stock.quantity_allocated, ProductVariant.track_inventory,
    ]
    if with_config:
        columns.append(
            select(OrderTypeAllocation.enabled)
            .where(OrderTypeAllocation.order_type == bindparam("order_type"))
            .scalar_subquery().label("enabled"))
    statement = (
        select(*columns)
        .join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .join(ProductVariant, ProductVariant.id == Stock.variant_id)
        .join(Product, Product.id == ProductVariant.product_id)
        .where(_variants_in(array))
        .order_by(Stock.id)
    )
    # NO KEY UPDATE: allocation rows referencing a locked stock can still be inserted
    return statement.with_for_update(of=Stock, key_share=True) if lock else statement


def _variants_in(array: str | None) -> Any:
    if array is None:
        return Stock.variant_id.in_(bindparam("variant_ids", expanding=True))
    variant_ids = bindparam("variant_ids", type_=String)
    if array == "postgresql":
        return Stock.variant_id == any_(sql_cast(variant_ids, ARRAY(Integer)))
    return Stock.variant_id.in_(select(literal_column("value"))
                                .select_from(func.json_each(variant_ids)))


_STOCKS = {(config, lock): _stock_statement(with_config=config, lock=lock)
           for config in (False, True) for lock in (False, True)}
# dialect -> (stocks, order by key): `_plan_on_driver`'s reads, compiled for the DBAPI
_DRIVER_READS = {
    name: (str(_stock_statement(with_config=True, lock=False, array=name)
               .compile(dialect=dialect)),
           str(_ORDER_ID_FOR_KEY.compile(dialect=dialect)))
    for name, dialect in DRIVER_DIALECTS.items()}
_INSERT_ORDER_SQLITE = str(
    insert(ORDERS).values({c: bindparam(c) for c in OrderRow.__slots__})
    .returning(ORDERS.c.id).compile(dialect=DRIVER_DIALECTS["sqlite"]))


def _lock_stocks(
    s: Session, variant_ids: Iterable[int], country: str, config_for: OrderType | None = None,
    *, lock: bool = True,
) -> Plan:
    """Lock (or, with lock=False, just read) every stock of the variants, ascending id.

    Returns the levels (flagged with whether the warehouse may serve the country), the
    variants' trackInventory found along the way, and, when `config_for` is given, whether
    that order type allocates (read in the same statement; None when no stock row exists).
    """
    params: dict[str, Any] = {"variant_ids": sorted(set(variant_ids)), "country": country}
    if config_for is not None:
        params["order_type"] = config_for.value
    statement = _STOCKS[(config_for is not None, lock)]
    return _plan_of(s.connection().execute(statement, params).all(),
                    with_config=config_for is not None)


def _plan_of(rows: Sequence[Sequence[Any]], *, with_config: bool) -> Plan:
    levels = [StockLevel(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]
    tracked = {r[1]: bool(r[7]) for r in rows}
    enabled: bool | None = None
    if with_config and rows:
        enabled = True if rows[0][8] is None else bool(rows[0][8])
    return Plan(levels, tracked, enabled)


def _require_variants(
    s: Session,
    variant_ids: set[int],
    tracked: dict[int, bool],
    fields: Iterable[tuple[str, int]],
) -> None:
    """NOT_FOUND for unknown variants; fills `tracked` for variants without any stock."""
    missing = variant_ids - tracked.keys()
    if not missing:
        return
    for vid, track in s.execute(select(ProductVariant.id, ProductVariant.track_inventory)
                                .where(ProductVariant.id.in_(missing))):
        tracked[vid] = bool(track)
    raise_all([NotFound("variant not found", field=field, variant_id=vid)
               for field, vid in fields if vid not in tracked])


@functools.cache
def _insert_lines_statement(count: int) -> TextClause:
    # text, not insert().values([...]): SQLAlchemy does not cache multi-row VALUES inserts
    rows = ", ".join(f"(:order_id, :v{i}, :q{i}, 0)" for i in range(count))
    return text("INSERT INTO order_line (order_id, variant_id, quantity, quantity_fulfilled) "
                f"VALUES {rows} RETURNING id, variant_id, quantity")


def _insert_lines(s: Session, order_id: int, lines: Sequence[LineRequest]) -> list[int]:
    """Insert the lines in one statement; their ids in input order."""
    statement, params = _insert_lines_sql(order_id, lines)
    return _line_ids(s.connection().execute(statement, params).all(), lines)


def _insert_lines_sql(order_id: int, lines: Sequence[LineRequest]
                      ) -> tuple[TextClause, dict[str, int]]:
    params: dict[str, int] = {"order_id": order_id}
    for i, ln in enumerate(lines):
        params[f"v{i}"] = ln.variant_id
        params[f"q{i}"] = ln.quantity
    return _insert_lines_statement(len(lines)), params


def _line_ids(rows: Iterable[Sequence[int]], lines: Sequence[LineRequest]) -> list[int]:
    """The inserted lines' ids (rows of id, variant, quantity) in input order."""
    # ids ascend in VALUES order; lines with equal (variant, quantity) are interchangeable,
    # so matching on those keeps every allocation with a line that asked for it
    free: dict[tuple[int, int], list[int]] = defaultdict(list)
    for line_id, variant_id, quantity in sorted(tuple(r) for r in rows):
        free[(variant_id, quantity)].append(line_id)
    return [free[(ln.variant_id, ln.quantity)].pop(0) for ln in lines]


@functools.cache
def _insert_allocations_statement(count: int) -> TextClause:
    rows = ", ".join(f"(:l{i}, :s{i}, :q{i})" for i in range(count))
    return text(f"INSERT INTO allocation (order_line_id, stock_id, quantity) VALUES {rows}")


_UPDATE_ALLOCATION = (
    update(ALLOCATION)
    .where(ALLOCATION.c.order_line_id == bindparam("lid"),
           ALLOCATION.c.stock_id == bindparam("sid"))
    .values(quantity=bindparam("q"))
)
_DELETE_ALLOCATION = delete(ALLOCATION).where(
    ALLOCATION.c.order_line_id == bindparam("lid"), ALLOCATION.c.stock_id == bindparam("sid"))


def _numbered(rows: Mapping[tuple[int, int], int]) -> dict[str, int]:
    """Parameters of `_insert_allocations_statement` for (line, stock) -> quantity."""
    params: dict[str, int] = {}
    for i, ((lid, sid), q) in enumerate(rows.items()):
        params.update({f"l{i}": lid, f"s{i}": sid, f"q{i}": q})
    return params


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
    inserts = _numbered(new)
    if inserts:
        conn.execute(_insert_allocations_statement(len(inserts) // 3), inserts)
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
