"""Writing a new order: read the levels it is planned from, let the service decide, write.

`place` is the one entry point. `_STRATEGIES` picks one small strategy per database and
attempt: the optimistic attempts plan from an unlocked read and move the counters with a
guarded update in their last statement; the locking attempt (the service's last) locks the
stock rows first, in ascending id, and cannot be refused. The service keeps the rules
(validation, retries, the allocation itself); this module knows how each database is
written to fastest:

- PostgreSQL, optimistic: the read and one statement (`_PLACE_SQL`: data-modifying CTEs
  insert the order, lines and allocations, run the guarded update and the ledger insert) on
  a pooled driver connection in autocommit, outside the session (`UnitOfWork.driver`).
- PostgreSQL, locking: the session locks the stocks, then sends the same statement and its
  COMMIT in one pipeline (`ledger.commit_last`).
- SQLite, optimistic: on one gated pysqlite connection, the read without a transaction,
  then BEGIN IMMEDIATE, the inserts, the guarded executemany and its movements, COMMIT.
- SQLite, locking: the session (BEGIN IMMEDIATE) reads, inserts, then allocates last
  (`ledger.allocate_last`).

An optimistic attempt that cannot use its driver connection (an order already holds the
idempotency key, a variant has no stock row, SQLite without a writer gate) runs in the
session instead, still optimistic. An idempotency key belongs to the token that sent it:
the order records its token, and only that token's requests find the order by the key.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import (
    Integer,
    Select,
    Table,
    TextClause,
    bindparam,
    insert,
    select,
    text,
)
from sqlalchemy.orm import Session

from domain import ledger, stock_rules
from domain.allocation import Book, StockLevel
from domain.db import DRIVER_DIALECTS, driver_errors, id_list, in_ids, pg_array
from domain.errors import NotFound, raise_all
from domain.models import (
    MovementType,
    Order,
    OrderStatus,
    OrderType,
    OrderTypeAllocation,
    ProductVariant,
    Stock,
    Warehouse,
)
from domain.uow import UnitOfWork

ORDERS = cast(Table, Order.__table__)
ORDER_CREATED = "order created"  # the reason of the new order's movements


class Line(Protocol):
    """A requested order line (`orders.LineRequest`)."""

    @property
    def variant_id(self) -> int: ...

    @property
    def quantity(self) -> int: ...


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated order to place."""

    actor: str
    type: OrderType
    country: str
    lines: Sequence[Line]
    idempotency_key: str | None
    token_id: int | None  # the caller's token: an idempotency key is unique per token


@dataclass(frozen=True, slots=True)
class OrderRow:
    """The columns of a new order."""

    type: OrderType
    status: OrderStatus
    shipping_country: str
    allocated: bool
    idempotency_key: str | None
    created_by_token_id: int | None

    def params(self) -> dict[str, object]:
        """Its values, named as every order insert here names them."""
        return {"type": self.type.value, "status": self.status.value,
                "shipping_country": self.shipping_country, "allocated": self.allocated,
                "idempotency_key": self.idempotency_key,
                "created_by_token_id": self.created_by_token_id}


class Plan(NamedTuple):
    """What an order is planned from (`read_stocks`, `lock_stocks`)."""

    levels: list[StockLevel]
    tracked: dict[int, bool]  # trackInventory by variant, for the variants found
    enabled: bool | None  # whether the order type allocates; None when no stock row exists


@dataclass(frozen=True, slots=True)
class Decision:
    """What the service's rules decided for a plan: the rows to write."""

    row: OrderRow
    allocations: Mapping[tuple[int, int], int]  # (line index, stock id) -> units
    counters: Mapping[int, int]  # stock id -> units its allocated counter grows by
    book: Book  # the rules' book, for the service's answer


class Placed(NamedTuple):
    order_id: int
    line_ids: list[int]  # in input order
    decision: Decision


class Replay(NamedTuple):
    """An order of the same caller already holds the request's idempotency key: it is the
    answer if it was placed with the same input (the service compares)."""

    order_id: int


class Contended(Exception):
    """A guarded stock update found less available than the plan promised; nothing was
    written."""


Decide = Callable[[Plan], Decision]


def place(uow: UnitOfWork, request: OrderRequest, decide: Decide, *, locking: bool
          ) -> Placed | Replay:
    """Read the levels, let `decide` apply the rules, write the order and commit, the way
    the database and the attempt (`locking` or optimistic) call for.

    Raises `Contended` (nothing committed) when an optimistic attempt's guard refused.
    """
    return _STRATEGIES[(uow.dialect, locking)](uow, request, decide)


class _Strategy(Protocol):
    def __call__(self, uow: UnitOfWork, request: OrderRequest, decide: Decide
                 ) -> Placed | Replay: ...


def _postgresql_optimistic(uow: UnitOfWork, request: OrderRequest, decide: Decide
                           ) -> Placed | Replay:
    """The read and the one statement on the driver's connection in autocommit: the
    statement alone is the transaction, so a hot stock row is locked only while it runs."""
    with uow.driver() as conn:
        plan = _read_on_driver(conn, "postgresql", request)
        if plan is not None:
            decision = decide(plan)
            statement, params = _one_statement(request, decision, lock_first=True)
            row = ledger.execute_last(conn, statement, params)
            if row is None:
                raise Contended()
            uow.committed_on_driver()
            return _placed(row, decision)
    return _in_session(uow, request, decide, locking=False, write=_write_postgresql)


def _postgresql_locking(uow: UnitOfWork, request: OrderRequest, decide: Decide
                        ) -> Placed | Replay:
    """The session locks the stocks, then the one statement and COMMIT share a pipeline."""
    return _in_session(uow, request, decide, locking=True, write=_write_postgresql)


def _sqlite_optimistic(uow: UnitOfWork, request: OrderRequest, decide: Decide
                       ) -> Placed | Replay:
    """The read without a transaction, then the writes in one writer turn, on one gated
    pysqlite connection: the turn spans only those statements."""
    with uow.driver() as conn:
        # SQLite without a writer gate (in memory) has no begin_immediate
        if hasattr(conn, "begin_immediate"):
            plan = _read_on_driver(conn, "sqlite", request)
            if plan is not None:
                placed: Placed = conn.together(functools.partial(
                    _write_sqlite_on_driver, request=request, decision=decide(plan)))
                uow.committed_on_driver()
                return placed
    return _in_session(uow, request, decide, locking=False, write=_write_sqlite)


def _sqlite_locking(uow: UnitOfWork, request: OrderRequest, decide: Decide
                    ) -> Placed | Replay:
    """The session reads in its writer turn (BEGIN IMMEDIATE), inserts, allocates last."""
    return _in_session(uow, request, decide, locking=True, write=_write_sqlite)


# (dialect, locking) -> how an attempt places the order
_STRATEGIES: dict[tuple[str, bool], _Strategy] = {
    ("postgresql", False): _postgresql_optimistic,
    ("postgresql", True): _postgresql_locking,
    ("sqlite", False): _sqlite_optimistic,
    ("sqlite", True): _sqlite_locking,
}

_SessionWrite = Callable[[UnitOfWork, OrderRequest, Decision, bool], Placed]


def _in_session(
    uow: UnitOfWork, request: OrderRequest, decide: Decide, *, locking: bool,
    write: _SessionWrite,
) -> Placed | Replay:
    """Plan in the session (locked) or beside it (`unlocked_reads`), decide, `write`."""
    lines = request.lines
    variant_ids = {line.variant_id for line in lines}
    with uow:
        s = uow.session
        reads = contextlib.nullcontext(s) if locking else uow.unlocked_reads()
        with reads as r:
            if request.idempotency_key is not None:
                existing = order_id_for_key(r, request.idempotency_key, request.token_id)
                if existing is not None:
                    return Replay(existing)
            read = lock_stocks if locking else read_stocks
            plan = read(r, variant_ids, request.country, config_for=request.type)
            require_variants(r, variant_ids, plan.tracked, [
                (f"lines.{i}.variantId", line.variant_id) for i, line in enumerate(lines)])
        return write(uow, request, decide(plan), locking)


def _write_postgresql(uow: UnitOfWork, request: OrderRequest, decision: Decision,
                      locked: bool) -> Placed:
    """The one statement, then COMMIT, in one pipeline as the transaction's last step."""
    statement, params = _one_statement(request, decision, lock_first=not locked)
    placed: list[Placed] = []

    def last(session: Session) -> bool:
        row = ledger.commit_last(session, statement, params)
        if row is not None:
            placed.append(_placed(row, decision))
        return row is not None

    if not uow.commit(last=last):
        raise Contended()
    return placed[0]


def _write_sqlite(uow: UnitOfWork, request: OrderRequest, decision: Decision,
                  locked: bool) -> Placed:
    """Insert the order, its lines and allocations, then allocate as the last step; commit.

    The whole database is held until COMMIT anyway, so the counters move last.
    """
    conn = uow.session.connection()
    order_id = conn.execute(_INSERT_ORDER, decision.row.params()).scalar()
    assert order_id is not None
    line_ids = insert_lines(uow.session, order_id, request.lines)
    inserts = allocation_inserts(_by_line(decision, line_ids))
    if inserts is not None:
        conn.execute(*inserts)
    if not uow.commit(last=functools.partial(
            ledger.allocate_last, allocations=decision.counters, actor=request.actor,
            reason=ORDER_CREATED, order_id=order_id)):
        raise Contended()
    return Placed(order_id, line_ids, decision)


def _write_sqlite_on_driver(conn: Any, *, request: OrderRequest, decision: Decision
                            ) -> Placed:
    """`_write_sqlite` on a gated pysqlite connection, in a writer turn it may share with
    other orders of this process (`together`: it begins and commits, or rolls back when
    this raises)."""
    with driver_errors("the order's inserts and allocation"):
        order_id = conn.execute(_INSERT_ORDER_SQLITE, decision.row.params()).fetchone()[0]
        statement, params = _insert_lines_sql(order_id, request.lines)
        line_ids = _line_ids(conn.execute(statement.text, params).fetchall(), request.lines)
        inserts = allocation_inserts(_by_line(decision, line_ids))
        if inserts is not None:
            conn.execute(inserts[0].text, inserts[1])
        if not ledger.allocate_on_sqlite(conn, decision.counters, actor=request.actor,
                                         reason=ORDER_CREATED, order_id=order_id):
            raise Contended()
    return Placed(order_id, line_ids, decision)


def _by_line(decision: Decision, line_ids: Sequence[int]) -> dict[tuple[int, int], int]:
    return {(line_ids[i], sid): q for (i, sid), q in decision.allocations.items()}


def _placed(row: Sequence[Any], decision: Decision) -> Placed:
    """From the one statement's row: (order id, line ids, ...)."""
    return Placed(row[0], list(row[1]), decision)


# -- PostgreSQL's one statement ------------------------------------------------------------


def _one_statement(request: OrderRequest, decision: Decision, *, lock_first: bool
                   ) -> tuple[str, dict[str, object]]:
    """`_PLACE_SQL` for the decision and its parameters.

    `lock_first`: the statement locks several stock rows in ascending id before the
    guarded update (when the transaction does not hold them already).
    """
    counters = sorted((sid, n) for sid, n in decision.counters.items() if n)
    lines = request.lines
    params = {**decision.row.params(),
              "line_variant_ids": pg_array(ln.variant_id for ln in lines),
              "line_quantities": pg_array(ln.quantity for ln in lines)}
    if counters:
        ordered = sorted(decision.allocations.items())
        params.update(
            allocation_line_numbers=pg_array(i + 1 for (i, _), _ in ordered),
            allocation_stock_ids=pg_array(sid for (_, sid), _ in ordered),
            allocation_quantities=pg_array(q for _, q in ordered),
            stock_ids=pg_array(sid for sid, _ in counters),
            allocated_changes=pg_array(n for _, n in counters), stock_count=len(counters),
            movement_type=MovementType.ALLOCATION.value, reason=ORDER_CREATED,
            actor=request.actor)
    return _PLACE_SQL[(bool(counters), len(counters) > 1 and lock_first)], params


def _place_sql(allocating: bool, lock_first: bool) -> str:
    """The statement of `_one_statement` (psycopg placeholders).

    Line ids ascend in input order: the INSERT takes its rows sorted by ordinality and
    PostgreSQL draws the serial ids as it inserts them (SQLAlchemy's "insertmanyvalues"
    relies on the same), so `row_number() OVER (ORDER BY id)` is the line's position.
    """
    sql = (
        "WITH o AS (INSERT INTO orders (type, status, shipping_country, allocated, "
        "idempotency_key, created_by_token_id) VALUES (%(type)s, %(status)s, "
        "%(shipping_country)s, %(allocated)s, %(idempotency_key)s, "
        "%(created_by_token_id)s) RETURNING id), "
        "l AS (INSERT INTO order_line (order_id, variant_id, seller_id, quantity, "
        "quantity_fulfilled) SELECT o.id, t.v, (SELECT seller_id FROM product_variant "
        "WHERE id = t.v), t.q, 0 FROM o, unnest(%(line_variant_ids)s::integer[], "
        "%(line_quantities)s::integer[]) WITH ORDINALITY AS t(v, q, n) ORDER BY t.n "
        "RETURNING id)"
    )
    if allocating:
        sql += (
            ", a AS (INSERT INTO allocation (order_line_id, stock_id, quantity) "
            "SELECT ln.id, t.s, t.q FROM (SELECT id, row_number() OVER (ORDER BY id) AS n "
            "FROM l) AS ln JOIN unnest(%(allocation_line_numbers)s::integer[], "
            "%(allocation_stock_ids)s::integer[], %(allocation_quantities)s::integer[]) "
            "AS t(n, s, q) ON t.n = ln.n RETURNING 1), "
            + ledger.guarded_allocation_sql(lock_first, order_id="(SELECT id FROM o)"))
    sql += " SELECT (SELECT id FROM o), ARRAY(SELECT id FROM l ORDER BY id)"
    if allocating:
        sql += ", stockyard_require((SELECT count(*) FROM moved) = %(stock_count)s)"
    return sql


_PLACE_SQL = {(allocating, lock_first): _place_sql(allocating, lock_first)
              for allocating in (False, True) for lock_first in (False, True)}


# -- the levels an order is planned from (the service's edits lock them too) ---------------


def _stock_statement(*, with_config: bool, lock: bool, array: str | None = None
                     ) -> Select[Any]:
    """Every stock of the variants, ascending id; built once, compiled once.

    `array`: the variants come as one parameter, for that dialect: a PostgreSQL array
    literal (`db.pg_array`) or a JSON array (SQLite's `json_each`).
    """
    columns: list[Any] = [
        Stock.id, Stock.variant_id, Stock.warehouse_id, Warehouse.priority,
        stock_rules.serves(bindparam("country")).label("serves"),
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
        .where(_variants_in(array))
        .order_by(Stock.id)
    )
    # NO KEY UPDATE: allocation rows referencing a locked stock can still be inserted
    return statement.with_for_update(of=Stock, key_share=True) if lock else statement


def _variants_in(array: str | None) -> Any:
    if array is None:
        return Stock.variant_id.in_(bindparam("variant_ids", expanding=True))
    return in_ids(Stock.variant_id, "variant_ids", array)


# a key is the caller's own: another token's order with the same key is never found
_ORDER_ID_FOR_KEY = select(Order.id).where(
    Order.idempotency_key == bindparam("key"),
    Order.created_by_token_id == bindparam("token_id", type_=Integer))
_INSERT_ORDER = insert(ORDERS).returning(ORDERS.c.id)
_STOCKS = {(config, lock): _stock_statement(with_config=config, lock=lock)
           for config in (False, True) for lock in (False, True)}
# dialect -> (stocks, order by key): `_read_on_driver`'s reads, compiled for the DBAPI
_DRIVER_READS = {
    name: (str(_stock_statement(with_config=True, lock=False, array=name)
               .compile(dialect=dialect)),
           str(_ORDER_ID_FOR_KEY.compile(dialect=dialect)))
    for name, dialect in DRIVER_DIALECTS.items()}
_INSERT_ORDER_SQLITE = str(
    insert(ORDERS).values({c: bindparam(c) for c in OrderRow.__slots__})
    .returning(ORDERS.c.id).compile(dialect=DRIVER_DIALECTS["sqlite"]))


def order_id_for_key(session: Session, key: str, token_id: int | None) -> int | None:
    """The order that holds an idempotency key of this token, if one does."""
    return session.connection().execute(_ORDER_ID_FOR_KEY,
                                        {"key": key, "token_id": token_id}).scalar()


def lock_stocks(
    s: Session, variant_ids: Iterable[int], country: str, config_for: OrderType | None = None,
) -> Plan:
    """Lock every stock of the variants in one statement, ascending id (the lock order).

    Returns the levels (flagged with whether the warehouse may serve the country), the
    variants' trackInventory found along the way, and, when `config_for` is given, whether
    that order type allocates (read in the same statement; None when no stock row exists).
    """
    return _levels(s, variant_ids, country, config_for, lock=True)


def read_stocks(
    s: Session, variant_ids: Iterable[int], country: str, config_for: OrderType | None = None,
) -> Plan:
    """`lock_stocks` without the locks: what an optimistic attempt plans from."""
    return _levels(s, variant_ids, country, config_for, lock=False)


def _levels(s: Session, variant_ids: Iterable[int], country: str,
            config_for: OrderType | None, *, lock: bool) -> Plan:
    params: dict[str, Any] = {"variant_ids": sorted(set(variant_ids)), "country": country}
    if config_for is not None:
        params["order_type"] = config_for.value
    statement = _STOCKS[(config_for is not None, lock)]
    return _plan_of(s.connection().execute(statement, params).all(),
                    with_config=config_for is not None)


def _read_on_driver(conn: Any, dialect: str, request: OrderRequest) -> Plan | None:
    """`read_stocks` on a DBAPI connection; None when the session must answer: an order
    of the caller already holds the idempotency key, or a variant has no stock."""
    stocks, order_for_key = _DRIVER_READS[dialect]
    variant_ids = {line.variant_id for line in request.lines}
    with driver_errors("the order's plan"):
        if request.idempotency_key is not None and conn.execute(
                order_for_key, {"key": request.idempotency_key,
                                "token_id": request.token_id}).fetchone() is not None:
            return None
        rows = conn.execute(stocks, {
            "variant_ids": id_list(variant_ids, dialect),
            "country": request.country, "order_type": request.type.value}).fetchall()
    plan = _plan_of(rows, with_config=True)
    return plan if variant_ids <= plan.tracked.keys() else None


def _plan_of(rows: Sequence[Sequence[Any]], *, with_config: bool) -> Plan:
    levels = [StockLevel(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]
    tracked = {r[1]: bool(r[7]) for r in rows}
    enabled: bool | None = None
    if with_config and rows:
        enabled = True if rows[0][8] is None else bool(rows[0][8])
    return Plan(levels, tracked, enabled)


def require_variants(
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


# -- lines and allocations (the service's edits insert them too) ---------------------------


@functools.cache
def _insert_lines_statement(count: int) -> TextClause:
    # text, not insert().values([...]): SQLAlchemy does not cache multi-row VALUES inserts
    rows = ", ".join(f"(:order_id, :v{i}, (SELECT seller_id FROM product_variant "
                     f"WHERE id = :v{i}), :q{i}, 0)" for i in range(count))
    return text("INSERT INTO order_line (order_id, variant_id, seller_id, quantity, "
                f"quantity_fulfilled) VALUES {rows} RETURNING id, variant_id, quantity")


def insert_lines(s: Session, order_id: int, lines: Sequence[Line]) -> list[int]:
    """Insert the lines in one statement; their ids in input order."""
    statement, params = _insert_lines_sql(order_id, lines)
    return _line_ids(s.connection().execute(statement, params).all(), lines)


def _insert_lines_sql(order_id: int, lines: Sequence[Line]
                      ) -> tuple[TextClause, dict[str, int]]:
    params: dict[str, int] = {"order_id": order_id}
    for i, ln in enumerate(lines):
        params[f"v{i}"] = ln.variant_id
        params[f"q{i}"] = ln.quantity
    return _insert_lines_statement(len(lines)), params


def _line_ids(rows: Iterable[Sequence[int]], lines: Sequence[Line]) -> list[int]:
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


def allocation_inserts(rows: Mapping[tuple[int, int], int]
                       ) -> tuple[TextClause, dict[str, int]] | None:
    """One insert of new allocations, (line, stock) -> quantity, and its parameters; None
    when there are none."""
    if not rows:
        return None
    params: dict[str, int] = {}
    for i, ((lid, sid), q) in enumerate(rows.items()):
        params.update({f"l{i}": lid, f"s{i}": sid, f"q{i}": q})
    return _insert_allocations_statement(len(rows)), params
