"""The stock ledger: every change of a stock's counters goes through this module, recorded.

`apply` moves the counters in SQL (ascending stock id, like every lock taken elsewhere) and
appends one StockMovement per stock in the same transaction, with the levels the rows hold
afterwards (read back from the rows this transaction just changed and therefore holds).
The order path's guarded allocations (`allocate_last`, `allocate_on_sqlite`, and on
PostgreSQL `guarded_allocation_sql` inside the order's one statement) and the bulk helpers
(`set_quantities`, `insert_stocks` + `record_known`) do the same in fewer round trips.
Every movement insert, in each of its five forms, derives from one definition of the
movement's columns (`_insert_movements`), so a new column is one edit.
Nothing updates or deletes a movement; the database refuses it too (0002).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from domain import stock_rules
from domain.db import DRIVER_DIALECTS, driver_errors, pg_array
from domain.models import MovementType, Stock, StockMovement

STOCK = cast(Table, Stock.__table__)
MOVEMENT = cast(Table, StockMovement.__table__)

Deltas = Mapping[int, tuple[int, int]]  # stock id -> (quantity change, allocated change)


# -- the movement row: one definition, every insert below derives from it ------------------

# its columns, in table order, with the SQL types a parameter is CAST to; a column left out
# of an insert takes its default, so only the ones the database requires must be given
_COLUMNS = {c.name: str(c.type.compile(dialect=DRIVER_DIALECTS["postgresql"]))
            for c in MOVEMENT.columns if not c.primary_key and c.server_default is None}
_REQUIRED = frozenset(c.name for c in MOVEMENT.columns
                      if c.name in _COLUMNS and not c.nullable)
# movement column -> the stock column it copies: ids, and the levels after the change
_FROM_STOCK = {"stock_id": "id", "variant_id": "variant_id", "warehouse_id": "warehouse_id",
               "quantity_after": "quantity", "allocated_after": "quantity_allocated"}
# what the caller tells about the whole statement: why, for which order, who
_CONTEXT = ("reason", "order_id", "actor")


def _insert_movements(values: Mapping[str, str], source: str | None = None) -> str:
    """INSERT INTO stock_movement, each column's value an SQL expression: over `source`
    (the rest of a SELECT: FROM ...), or one VALUES row without it."""
    unknown, missing = values.keys() - _COLUMNS.keys(), _REQUIRED - values.keys()
    if unknown or missing:
        raise ValueError(f"movement columns unknown {unknown or ''} missing {missing or ''}")
    columns = [c for c in _COLUMNS if c in values]
    listed = ", ".join(values[c] for c in columns)
    return (f"INSERT INTO stock_movement ({', '.join(columns)}) "
            + (f"SELECT {listed} FROM {source}" if source else f"VALUES ({listed})"))


def _of_stock(row: str) -> dict[str, str]:
    """The columns a movement copies from its stock row, read from `row` (an alias)."""
    return {column: f"{row}.{of}" for column, of in _FROM_STOCK.items()}


def _stock_returning(table: str) -> str:
    """What an UPDATE of the stock returns for `_of_stock` to read."""
    return ", ".join(f"{table}.{of}" for of in _FROM_STOCK.values())


def _param(column: str, *, array: bool = False) -> str:
    """The bound parameter :column, cast to the column's type (or to an array of it)."""
    return f"CAST(:{column} AS {_COLUMNS[column]}{'[]' if array else ''})"


_CONTEXT_PARAMS = {c: _param(c) for c in _CONTEXT}

_ADD = (
    update(STOCK)
    .where(STOCK.c.id == bindparam("sid"))
    .values(quantity=STOCK.c.quantity + bindparam("dq"),
            quantity_allocated=STOCK.c.quantity_allocated + bindparam("da"))
)
# the same, also moving units out of (negative) the batch reserve, which is part of allocated
_ADD_BATCHED = (
    update(STOCK)
    .where(STOCK.c.id == bindparam("sid"))
    .values(quantity=STOCK.c.quantity + bindparam("dq"),
            quantity_allocated=STOCK.c.quantity_allocated + bindparam("da"),
            quantity_reserved_for_batches=STOCK.c.quantity_reserved_for_batches
            + bindparam("db"))
)
_RESERVE_FOR_BATCHES = (
    update(STOCK)
    .where(STOCK.c.id == bindparam("sid"))
    .values(quantity_reserved_for_batches=STOCK.c.quantity_reserved_for_batches
            + bindparam("db"))
)
# allocate only while enough is free: the optimistic order path relies on this guard
_ADD_GUARDED = (
    update(STOCK)
    .where(STOCK.c.id == bindparam("sid"),
           stock_rules.FREE >= bindparam("da"))  # noqa: SIM300 (FREE is SQL, not a constant)
    .values(quantity_allocated=STOCK.c.quantity_allocated + bindparam("da"))
)


def order_movement_type(quantity_change: int, allocated_change: int) -> MovementType:
    """What an order operation did to one stock."""
    if quantity_change:
        return MovementType.FULFILLMENT
    return MovementType.ALLOCATION if allocated_change > 0 else MovementType.DEALLOCATION


def apply(
    session: Session,
    deltas: Deltas,
    *,
    type: MovementType | None,
    actor: str,
    reason: str | None = None,
    order_id: int | None = None,
    guarded: bool = False,
    batch_reserve: Mapping[int, int] | None = None,
) -> bool:
    """Change the counters and record the movements; False when a guard refused a row.

    `type` None derives each movement's type from its deltas (order operations). With
    `guarded`, only allocated changes are applied and each must fit in the free stock.
    `batch_reserve` (stock id -> change) moves the batch reserve in the same statement, so
    that it never exceeds allocated in between (a pick or a cancel takes units out of both).
    """
    changed = {sid: d for sid, d in deltas.items() if d != (0, 0)}
    if not changed and not batch_reserve:
        return True
    conn = session.connection()
    if batch_reserve:
        assert not guarded
        conn.execute(_ADD_BATCHED, [
            {"sid": sid, "dq": changed.get(sid, (0, 0))[0], "da": changed.get(sid, (0, 0))[1],
             "db": batch_reserve.get(sid, 0)}
            for sid in sorted(changed.keys() | batch_reserve.keys())])
    elif guarded:
        moved = conn.execute(_ADD_GUARDED, [
            {"sid": sid, "da": da} for sid, (_, da) in sorted(changed.items())]).rowcount
        if moved != len(changed):
            return False
    else:
        conn.execute(_ADD, [{"sid": sid, "dq": dq, "da": da}
                            for sid, (dq, da) in sorted(changed.items())])
    record(session, changed, type=type, actor=actor, reason=reason, order_id=order_id)
    return True


def reserve_for_batches(session: Session, changes: Mapping[int, int]) -> None:
    """Move allocated units of (locked) stocks into the batch reserve (+n) or back to the
    order reserve (-n). Allocated itself does not change, so there is no movement."""
    rows = [{"sid": sid, "db": n} for sid, n in sorted(changes.items()) if n]
    if rows:
        session.connection().execute(_RESERVE_FOR_BATCHES, rows)


def allocate_last(
    session: Session, allocations: Mapping[int, int], *, actor: str, reason: str,
    order_id: int,
) -> bool:
    """Guarded ALLOCATION (stock id -> units) as the transaction's last step; False if refused.

    `UnitOfWork.commit(last=...)` calls it, after flushing the session, then commits; on
    False the unit of work rolls back.
    """
    return apply(session, {sid: (0, n) for sid, n in allocations.items() if n},
                 type=MovementType.ALLOCATION, actor=actor, reason=reason,
                 order_id=order_id, guarded=True)


def commit_last(session: Session, statement: str, params: Mapping[str, object]
                ) -> tuple[Any, ...] | None:
    """`execute_last` on the session's connection: only the transaction's last step
    (`UnitOfWork.commit(last=...)`) may use it."""
    return execute_last(session.connection().connection.driver_connection, statement, params)


def execute_last(raw: Any, statement: str, params: Mapping[str, object]
                 ) -> tuple[Any, ...] | None:
    """Run `statement` and commit (PostgreSQL, psycopg placeholders); its first row, or None
    when a `stockyard_require` in it refused (then nothing is committed).

    In autocommit (`UnitOfWork.driver`) the statement alone is the transaction: no BEGIN,
    no COMMIT. Otherwise it and the COMMIT leave in one pipeline. Either way it is one
    round trip.
    """
    import psycopg

    if not isinstance(raw, psycopg.Connection):
        raise TypeError(f"execute_last needs a psycopg connection, not {type(raw)!r}")
    # other errors as SQLAlchemy would raise them, so callers handle them like any other
    with driver_errors(statement, params, connection=raw):
        try:
            if raw.autocommit:
                cursor = raw.execute(statement, params)
            else:
                # libpq < 14 has no pipeline mode: then the COMMIT waits for the statement
                with (raw.pipeline() if psycopg.Pipeline.is_supported()
                      else contextlib.nullcontext()):
                    cursor = raw.execute(statement, params)
                    raw.commit()
        except psycopg.Error as exc:
            if exc.sqlstate == GUARD_REFUSED:
                return None
            raise
    return cursor.fetchone() or ()


def allocate_on_sqlite(
    conn: Any, allocations: Mapping[int, int], *, actor: str, reason: str, order_id: int,
) -> bool:
    """`allocate_last`'s guarded update and movements on a pysqlite connection that holds the
    writer turn; False, with nothing moved, when a guard refused (the caller rolls back)."""
    rows = sorted((sid, n) for sid, n in allocations.items() if n)
    if not rows:
        return True
    moved = conn.executemany(_ADD_GUARDED_SQLITE, [{"sid": sid, "da": n} for sid, n in rows])
    if moved.rowcount != len(rows):
        return False
    conn.executemany(_RECORD_SQL, _record_params(
        {sid: (0, n) for sid, n in rows}, type=MovementType.ALLOCATION, actor=actor,
        reason=reason, order_id=order_id))
    return True


GUARD_REFUSED = "SY001"  # stockyard_require()'s SQLSTATE


def guarded_allocation_sql(lock_first: bool, order_id: str) -> str:
    """CTEs `v`, `changed`, `moved`: the guarded ALLOCATION of the stocks %(stock_ids)s by
    %(allocated_changes)s units each, and their movements (%(movement_type)s, %(reason)s,
    %(actor)s, `order_id` an SQL expression).

    Follow them with `stockyard_require((SELECT count(*) FROM moved) = %(stock_count)s)`:
    a row the guard refused makes the count fall short. With `lock_first`, the rows are
    locked first, sorted by id, like every other lock (no deadlocks whatever join order
    the planner picks); one row, or rows the transaction holds already, need no such step.
    """
    locked = ("locked AS (SELECT id FROM stock WHERE id = ANY(%(stock_ids)s::integer[]) "
              "ORDER BY id FOR NO KEY UPDATE), ") if lock_first else ""
    source = "locked JOIN v ON v.id = locked.id WHERE stock.id = locked.id" \
        if lock_first else "v WHERE stock.id = v.id"
    return (
        f"{locked}v AS (SELECT * FROM unnest(%(stock_ids)s::integer[], "
        "%(allocated_changes)s::integer[]) AS v(id, da)), "
        "changed AS (UPDATE stock SET quantity_allocated = stock.quantity_allocated + v.da "
        f"FROM {source} AND {stock_rules.FREE_SQL} >= v.da "
        f"RETURNING {_stock_returning('stock')}, v.da), "
        "moved AS (" + _insert_movements({
            **_of_stock("c"), "type": "%(movement_type)s", "quantity_change": "0",
            "allocated_change": "c.da", "reason": "%(reason)s", "order_id": order_id,
            "actor": "%(actor)s"}, "changed AS c ORDER BY c.id") + " RETURNING 1)"
    )


def rebuild_allocated(
    session: Session, stock_id: int, *, allocated: int, ledger_allocated: int, actor: str,
    reason: str,
) -> None:
    """Set a (locked) stock's allocated counter; the movement brings the ledger's sum to it.

    Only the audit's repair uses this: the counter had drifted from its ledger or from the
    live allocations, so the counter's change and the ledger's differ.
    """
    session.connection().execute(
        update(STOCK).where(STOCK.c.id == stock_id).values(quantity_allocated=allocated))
    record(session, {stock_id: (0, allocated - ledger_allocated)},
           type=MovementType.ADJUSTMENT, actor=actor, reason=reason)


def set_batch_reserve(session: Session, stock_id: int, reserve: int) -> None:
    """Set a (locked) stock's batch reserve; only the audit's repair uses this (the reserve
    splits allocated and is no ledger counter, so there is no movement)."""
    session.connection().execute(
        update(STOCK).where(STOCK.c.id == stock_id)
        .values(quantity_reserved_for_batches=reserve))


def record(
    session: Session,
    deltas: Deltas,
    *,
    type: MovementType | None,
    actor: str,
    reason: str | None = None,
    order_id: int | None = None,
) -> None:
    """Append one movement per stock for changes already made in this transaction.

    The resulting levels come from the stock rows themselves. One executemany: a single
    round trip on PostgreSQL (psycopg pipelines it), and no parameter limit on SQLite.
    """
    if not deltas:
        return
    session.connection().execute(_RECORD, _record_params(
        deltas, type=type, actor=actor, reason=reason, order_id=order_id))


def _record_params(
    deltas: Deltas, *, type: MovementType | None, actor: str, reason: str | None,
    order_id: int | None,
) -> list[dict[str, object]]:
    """`_RECORD`'s parameters, one row per stock in ascending id."""
    return [{"sid": sid, "dq": dq, "da": da,
             "type": (type or order_movement_type(dq, da)).value, "reason": reason,
             "order_id": order_id, "actor": actor}
            for sid, (dq, da) in sorted(deltas.items())]


@dataclass(frozen=True, slots=True)
class Movement:
    """A movement whose resulting levels the caller knows (it holds the stock's lock)."""

    stock_id: int
    variant_id: int
    warehouse_id: int
    type: MovementType
    quantity_change: int
    allocated_change: int
    quantity_after: int
    allocated_after: int


# the movement fields a caller that knows the levels gives (`Movement`), in table order
_KNOWN = tuple(c for c in _COLUMNS if c in Movement.__slots__)
# per stock changed in this transaction: the levels after come from the row itself
_RECORD = text(_insert_movements({
    **_of_stock("s"), "type": _param("type"), "quantity_change": ":dq",
    "allocated_change": ":da", **_CONTEXT_PARAMS}, "stock AS s WHERE s.id = :sid"))
_RECORD_SQL = str(_RECORD)  # pysqlite takes the same :name placeholders
_ADD_GUARDED_SQLITE = str(_ADD_GUARDED.compile(dialect=DRIVER_DIALECTS["sqlite"]))
# levels known: one array per column (PostgreSQL), or one row per movement (elsewhere)
_RECORD_UNNEST = text(_insert_movements(
    {**{c: f"m.{c}" for c in _KNOWN}, **_CONTEXT_PARAMS},
    f"unnest({', '.join(_param(c, array=True) for c in _KNOWN)}) AS m({', '.join(_KNOWN)})"))
_RECORD_ROWS = text(_insert_movements(
    {**{c: f":{c}" for c in _KNOWN}, **_CONTEXT_PARAMS}))
# one round trip: set the counters and append the movements from the rows just changed
_SET_RECORDED_UNNEST = text(
    "WITH changed AS (UPDATE stock SET quantity = v.q FROM unnest(CAST(:ids AS INTEGER[]), "
    "CAST(:qs AS INTEGER[]), CAST(:changes AS INTEGER[])) AS v(id, q, change) "
    f"WHERE stock.id = v.id RETURNING {_stock_returning('stock')}, v.change) "
    + _insert_movements({**_of_stock("c"), "type": _param("type"),
                         "quantity_change": "c.change", "allocated_change": "0",
                         **_CONTEXT_PARAMS}, "changed c ORDER BY c.id"))
_INSERT_STOCKS_UNNEST = text(
    "INSERT INTO stock (variant_id, warehouse_id, quantity, quantity_allocated) "
    "SELECT v, w, q, 0 FROM unnest(CAST(:vs AS INTEGER[]), CAST(:ws AS INTEGER[]), "
    "CAST(:qs AS INTEGER[])) AS t(v, w, q) RETURNING id, variant_id, warehouse_id"
)
_SET = update(STOCK).where(STOCK.c.id == bindparam("sid")).values(quantity=bindparam("q"))


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def set_quantities(
    session: Session, rows: Sequence[tuple[int, int, int]], *, type: MovementType, actor: str,
    reason: str | None,
) -> None:
    """Set on-hand of locked stocks and record it: (stock id, old quantity, new quantity).

    One statement on PostgreSQL (UPDATE ... RETURNING feeding the ledger INSERT).
    """
    rows = [r for r in rows if r[1] != r[2]]
    if not rows:
        return
    conn = session.connection()
    if _is_postgresql(session):
        conn.execute(_SET_RECORDED_UNNEST, {
            "ids": pg_array(r[0] for r in rows), "qs": pg_array(r[2] for r in rows),
            "changes": pg_array(r[2] - r[1] for r in rows), "type": type.value,
            "reason": reason, "order_id": None, "actor": actor})
        return
    conn.execute(_SET, [{"sid": sid, "q": q} for sid, _, q in rows])
    record(session, {sid: (new - old, 0) for sid, old, new in rows}, type=type, actor=actor,
           reason=reason)


def insert_stocks(
    session: Session, rows: Sequence[tuple[int, int, int]]
) -> dict[tuple[int, int], int]:
    """Create stocks (variant, warehouse, quantity); their ids by (variant, warehouse)."""
    if not rows:
        return {}
    conn = session.connection()
    if _is_postgresql(session):
        result = conn.execute(_INSERT_STOCKS_UNNEST, {
            "vs": pg_array(r[0] for r in rows), "ws": pg_array(r[1] for r in rows),
            "qs": pg_array(r[2] for r in rows)})
        return {(v, w): sid for sid, v, w in result}
    conn.execute(insert(STOCK), [{"variant_id": v, "warehouse_id": w, "quantity": q,
                                  "quantity_allocated": 0} for v, w, q in rows])
    created: dict[tuple[int, int], int] = {}
    variant_ids = sorted({r[0] for r in rows})
    for i in range(0, len(variant_ids), 5000):
        for sid, v, w in conn.execute(
            select(STOCK.c.id, STOCK.c.variant_id, STOCK.c.warehouse_id)
            .where(STOCK.c.variant_id.in_(variant_ids[i:i + 5000]))):
            created[(v, w)] = sid
    return {(v, w): created[(v, w)] for v, w, _ in rows}


def record_known(
    session: Session, movements: Sequence[Movement], *, actor: str, reason: str | None
) -> None:
    """Append movements whose resulting levels are known: one statement on PostgreSQL."""
    if not movements:
        return
    conn = session.connection()
    context = {"actor": actor, "reason": reason, "order_id": None}
    if _is_postgresql(session):
        params: dict[str, object] = {
            name: pg_array(getattr(m, name) for m in movements) for name in _KNOWN}
        params["type"] = pg_array(m.type.value for m in movements)
        conn.execute(_RECORD_UNNEST, {**params, **context})
        return
    conn.execute(_RECORD_ROWS, [
        {**{name: getattr(m, name) for name in _KNOWN}, "type": m.type.value, **context}
        for m in movements])
