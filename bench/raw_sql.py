"""Raw SQL baseline: the same allocation as orderCreate, by threads on plain DB-API connections."""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.cpu import own_cpu_seconds
from bench.database import BenchDatabase
from bench.stats import Tally, WorkloadResult
from bench.workload import Timing, Workload

LOCK = ("SELECT s.id, s.variant_id, s.warehouse_id, w.priority, s.quantity, "
        "s.quantity_allocated FROM stock s JOIN warehouse w ON w.id = s.warehouse_id "
        "WHERE s.variant_id IN ({marks}) ORDER BY s.id")
Row = tuple[int, int, int, int, int, int]
# the columns the app's ledger writes for an order's allocation (every column of
# stock_movement in domain/models.py but id and created_at, the columns' defaults)
MOVEMENT_COLUMNS = ("stock_id", "variant_id", "warehouse_id", "type", "quantity_change",
                    "allocated_change", "quantity_after", "allocated_after", "reason",
                    "order_id", "actor")
ALLOCATION = "ALLOCATION"  # MovementType.ALLOCATION.value
ORDER_CREATED = "order created"  # domain/services/orders.py ORDER_CREATED


def choose_stocks(rows: list[Row], variant_ids: list[int]) -> list[tuple[int, int]] | None:
    """(variant, stock) per variant: first by (priority, warehouse) with a free unit."""
    picked = []
    for vid in variant_ids:
        free = sorted((r for r in rows if r[1] == vid and r[4] - r[5] >= 1),
                      key=lambda r: (r[3], r[2]))
        if not free:
            return None
        picked.append((vid, free[0][0]))
    return picked


def place_order(db: BenchDatabase, conn: Any, variant_ids: list[int], actor: str
                ) -> tuple[str | None, int | None]:
    """One order in one transaction: (None, order id) on success, else (a failure code,
    None)."""
    pg = db.kind == "postgresql"
    marks = ", ".join("?" for _ in variant_ids)
    lock = LOCK.format(marks=marks) + (" FOR UPDATE OF s" if pg else "")
    if not pg:
        conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(db.q(lock), variant_ids).fetchall()
        picked = choose_stocks(rows, variant_ids)
        if picked is None:
            _rollback(db, conn)
            return "INSUFFICIENT_STOCK", None
        order_id = conn.execute(db.q(
            "INSERT INTO orders (type, status, shipping_country, allocated) "
            "VALUES ('REGULAR', 'UNFULFILLED', 'DE', ?) RETURNING id"), (True,)).fetchone()[0]
        values = ", ".join("(?, ?, (SELECT seller_id FROM product_variant WHERE id = ?), "
                           "1, 0)" for _ in picked)
        line_rows = conn.execute(db.q(
            "INSERT INTO order_line (order_id, variant_id, seller_id, quantity, "
            f"quantity_fulfilled) VALUES {values} RETURNING id, variant_id"),
            [x for vid, _ in picked for x in (order_id, vid, vid)]).fetchall()
        line_of = {vid: lid for lid, vid in line_rows}
        values = ", ".join("(?, ?, 1)" for _ in picked)
        conn.execute(db.q(f"INSERT INTO allocation (order_line_id, stock_id, quantity) "
                          f"VALUES {values}"),
                     [x for vid, sid in picked for x in (line_of[vid], sid)])
        stock_ids = sorted(sid for _, sid in picked)
        _executemany(db, conn, db.q("UPDATE stock SET quantity_allocated = quantity_allocated + 1 "
                                "WHERE id = ?"), [(sid,) for sid in stock_ids])
        # the ledger, as the app writes it: one ALLOCATION movement per changed stock with
        # the levels after the change (known: this transaction holds the rows' locks)
        by_id = {r[0]: r for r in rows}
        values = ", ".join(f"({', '.join('?' * len(MOVEMENT_COLUMNS))})" for _ in stock_ids)
        conn.execute(db.q(f"INSERT INTO stock_movement ({', '.join(MOVEMENT_COLUMNS)}) "
                          f"VALUES {values}"),
                     [x for sid in stock_ids for x in _movement(by_id[sid], order_id, actor)])
        if pg:
            conn.commit()
        else:
            conn.execute("COMMIT")
        return None, int(order_id)
    except BaseException:
        _rollback(db, conn)
        raise


def _movement(row: Row, order_id: int, actor: str) -> tuple[object, ...]:
    """MOVEMENT_COLUMNS of one unit allocated from the locked stock `row`."""
    sid, vid, wid, _, quantity, allocated = row
    return (sid, vid, wid, ALLOCATION, 0, 1, quantity, allocated + 1, ORDER_CREATED,
            order_id, actor)


def _executemany(db: BenchDatabase, conn: Any, sql: str, params: list[tuple[int]]) -> None:
    if db.kind == "postgresql":
        with conn.cursor() as cur:
            cur.executemany(sql, params)
    else:
        conn.executemany(sql, params)


def _rollback(db: BenchDatabase, conn: Any) -> None:
    if db.kind == "postgresql":
        conn.rollback()
    elif conn.in_transaction:
        conn.execute("ROLLBACK")


def _client(db: BenchDatabase, conn: Any, workload: Workload, tally: Tally, seed: int,
            ready: threading.Barrier, actor: str) -> None:
    rng = random.Random(seed)
    ready.wait()
    try:
        while time.perf_counter() < tally.window[1]:
            variant_ids = workload.pick(rng)
            start = time.perf_counter()
            order_id = None
            try:
                code, order_id = place_order(db, conn, variant_ids, actor)
                deadlock = False
            except Exception as exc:
                deadlock = "deadlock" in str(exc).lower()
                code = "DEADLOCK" if deadlock else f"SQL_{type(exc).__name__}"
            placed = None if order_id is None else (order_id, tuple(variant_ids))
            tally.record(start, time.perf_counter(), code, deadlock, placed)
            if tally.given_up:
                return
    finally:
        conn.close()


def run_sql_workload(db: BenchDatabase, workload: Workload, timing: Timing, actor: str
                     ) -> WorkloadResult:
    """`timing.clients` threads, each on its own connection, for the warm-up plus window."""
    conns = [db.connect() for _ in range(timing.clients)]
    ready = threading.Barrier(timing.clients + 1)
    t0 = time.perf_counter() + timing.warmup + 0.2
    tallies = [Tally((t0, t0 + timing.seconds), workload.expected_refusals) for _ in conns]
    cpu_used = window_threads(
        [functools.partial(_client, db, c, workload, t, i, ready, actor)
         for i, (c, t) in enumerate(zip(conns, tallies, strict=True))],
        ready, (t0, t0 + timing.seconds))
    return WorkloadResult.merge(workload.name, "sql", timing.seconds, tallies,
                                client_cpu=cpu_used / timing.seconds)


def window_threads(clients: list[Callable[[], None]], ready: threading.Barrier,
                   window: tuple[float, float]) -> float:
    """Run each client on a thread of its own (each waits at `ready`, which this thread
    joins too), and return the CPU seconds this process used inside `window`."""
    threads = [threading.Thread(target=client, daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    ready.wait()
    time.sleep(max(0.0, window[0] - time.perf_counter()))
    cpu_start = own_cpu_seconds()
    time.sleep(max(0.0, window[1] - time.perf_counter()))
    cpu_used = own_cpu_seconds() - cpu_start
    for thread in threads:
        thread.join()
    return cpu_used
