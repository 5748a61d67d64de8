"""Integrity after a workload: no stock oversold, allocated figures match allocations;
the orders the clients received, read back."""

from __future__ import annotations

import http.client
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from bench.database import BenchDatabase
from bench.stats import Placed, ReadBack

OVERSOLD = "SELECT COUNT(*) FROM stock WHERE quantity_allocated > quantity"
MISMATCHED = """
SELECT COUNT(*) FROM stock s
LEFT JOIN (SELECT stock_id, SUM(quantity) AS total FROM allocation GROUP BY stock_id) a
       ON a.stock_id = s.id
WHERE s.quantity_allocated <> COALESCE(a.total, 0) OR s.quantity_allocated < 0
"""
VARIANT = """
SELECT COALESCE(SUM(s.quantity), 0), COALESCE(SUM(s.quantity_allocated), 0),
       (SELECT COUNT(*) FROM order_line WHERE variant_id = ?)
FROM stock s WHERE s.variant_id = ?
"""


@dataclass(frozen=True, slots=True)
class Integrity:
    """Stocks with allocated > quantity, and stocks whose allocated != sum of allocations."""

    oversold: int
    mismatched: int


@dataclass(frozen=True, slots=True)
class VariantFigures:
    """A variant's totals over its stocks and how many order lines it has."""

    quantity: int
    allocated: int
    order_lines: int


def integrity(db: BenchDatabase) -> Integrity:
    """Count stocks that break the books."""
    with db.connection() as conn:
        oversold = conn.execute(OVERSOLD).fetchone()[0]
        mismatched = conn.execute(MISMATCHED).fetchone()[0]
    return Integrity(int(oversold), int(mismatched))


def variant_figures(db: BenchDatabase, variant_id: int) -> VariantFigures:
    """Totals of one variant (the bounded one)."""
    with db.connection() as conn:
        row = conn.execute(db.q(VARIANT), (variant_id, variant_id)).fetchone()
    return VariantFigures(int(row[0]), int(row[1]), int(row[2]))


LAST_ORDER = "SELECT COALESCE(MAX(id), 0) FROM orders"
ORDERS_SINCE = "SELECT id FROM orders WHERE id > ?"
# per line of the new orders: its allocations' units, and allocations from a stock of
# another variant
LINES_SINCE = """
SELECT ol.order_id, ol.variant_id, ol.quantity, COALESCE(SUM(a.quantity), 0),
       COALESCE(SUM(CASE WHEN s.variant_id <> ol.variant_id THEN 1 ELSE 0 END), 0)
FROM order_line ol
LEFT JOIN allocation a ON a.order_line_id = ol.id
LEFT JOIN stock s ON s.id = a.stock_id
WHERE ol.order_id > ?
GROUP BY ol.id, ol.order_id, ol.variant_id, ol.quantity
"""
# the ledger's ALLOCATION units per new order
LEDGER_SINCE = """
SELECT order_id, COALESCE(SUM(allocated_change), 0), COUNT(*) FROM stock_movement
WHERE order_id > ? AND type = 'ALLOCATION' GROUP BY order_id
"""
# units per (order, stock) in allocations, to compare with the ledger's rows one by one
ALLOCATED_STOCKS_SINCE = """
SELECT COUNT(*) FROM (SELECT ol.order_id, a.stock_id FROM allocation a
                      JOIN order_line ol ON ol.id = a.order_line_id
                      WHERE ol.order_id > ? GROUP BY ol.order_id, a.stock_id) x
"""


def last_order_id(db: BenchDatabase) -> int:
    """The highest order id so far (orders created later have higher ids)."""
    with db.connection() as conn:
        return int(conn.execute(LAST_ORDER).fetchone()[0])


def read_back(db: BenchDatabase, placed: list[Placed], since: int) -> ReadBack:
    """Compare the orders created after order `since` with what the clients were told.

    Every order a client received must exist, be received once, have one line of quantity 1
    per variant asked for, allocations from that variant's stocks summing to the line's
    quantity (every bench variant tracks inventory), and ALLOCATION movements in the ledger
    summing to the order's units, one per (order, stock). No other order may exist.
    """
    out = ReadBack(received=len(placed))
    asked: dict[int, tuple[int, ...]] = {}
    for pk, variants in placed:
        if pk in asked:
            out.unexpected += 1
            out.note(f"order {pk} received twice")
        asked[pk] = tuple(sorted(variants))
    with db.connection() as conn:
        existing = {int(r[0]) for r in conn.execute(db.q(ORDERS_SINCE), (since,)).fetchall()}
        lines: dict[int, list[tuple[int, int, int, int]]] = {}
        for order_id, vid, qty, allocated, foreign in conn.execute(
                db.q(LINES_SINCE), (since,)).fetchall():
            lines.setdefault(int(order_id), []).append(
                (int(vid), int(qty), int(allocated), int(foreign)))
        ledger = {int(r[0]): (int(r[1]), int(r[2]))
                  for r in conn.execute(db.q(LEDGER_SINCE), (since,)).fetchall()}
        allocated_stocks = int(conn.execute(db.q(ALLOCATED_STOCKS_SINCE), (since,))
                               .fetchone()[0])
    out.in_database = len(existing)
    for pk in sorted(existing - asked.keys()):
        out.unexpected += 1
        out.note(f"order {pk} in the database, never received")
    for pk, variants in sorted(asked.items()):
        if pk not in existing:
            out.missing += 1
            out.note(f"order {pk} received, not in the database")
            continue
        got = sorted(lines.get(pk, []))
        units = sum(qty for _, qty, _, _ in got)
        problem = None
        if [vid for vid, *_ in got] != list(variants) or any(q != 1 for _, q, _, _ in got):
            problem = f"lines {[(v, q) for v, q, _, _ in got]}, asked {list(variants)} x 1"
        elif any(alloc != qty or foreign for _, qty, alloc, foreign in got):
            problem = f"allocations {[(v, q, a, f) for v, q, a, f in got]} (variant, " \
                      "quantity, allocated, from another variant's stock)"
        elif ledger.get(pk, (0, 0))[0] != units:
            problem = f"ledger ALLOCATION units {ledger.get(pk, (0, 0))[0]}, allocated {units}"
        if problem is not None:
            out.mismatched += 1
            out.note(f"order {pk}: {problem}")
    movements = sum(n for _, n in ledger.values())
    if movements != allocated_stocks:
        out.mismatched += 1
        out.note(f"{movements} ALLOCATION movements for {allocated_stocks} (order, stock) pairs")
    return out


NODE_QUERY = ("query BenchReadBack($id: ID!) { node(id: $id) { __typename ... on Order "
              "{ id lines { quantity variant { id } allocations { quantity } } } } }")


def read_back_graphql(post: Callable[[bytes], tuple[int, bytes]], close: Callable[[], None],
                      placed: list[Placed], out: ReadBack, sample: int = 20, seed: int = 0
                      ) -> None:
    """Read up to `sample` of the orders through GraphQL `node(id:)`: each must be the
    Order asked for, with one line of quantity 1 per variant, allocations summing to it."""
    from api import ids

    chosen = random.Random(seed).sample(placed, min(sample, len(placed)))
    close()  # a fresh connection: the server may have dropped the idle keep-alive one
    for pk, variants in chosen:
        gid = ids.encode("Order", pk)
        body = json.dumps({"query": NODE_QUERY, "variables": {"id": gid},
                           "operationName": "BenchReadBack"}).encode()
        out.graphql_sampled += 1
        try:
            status, payload = post(body)
            data = json.loads(payload) if status == 200 else {}
        except (OSError, ValueError, http.client.HTTPException) as exc:
            close()  # http.client cannot send on a connection left mid-request
            status, data = 0, {"errors": [repr(exc)]}
        node = (data.get("data") or {}).get("node") if isinstance(data, dict) else None
        problem = None
        if status != 200 or data.get("errors") or not isinstance(node, dict):
            problem = f"HTTP {status}, {str(data)[:200]}"
        elif node.get("__typename") != "Order" or node.get("id") != gid:
            problem = f"node is {node.get('__typename')} {node.get('id')}"
        else:
            want = sorted((ids.encode("ProductVariant", v), 1, 1) for v in variants)
            try:
                got = sorted((line["variant"]["id"], line["quantity"],
                              sum(a["quantity"] for a in line["allocations"]))
                             for line in node.get("lines") or [])
            except (KeyError, TypeError) as exc:
                problem = f"malformed lines ({exc!r}): {str(node)[:200]}"
            else:
                if got != want:
                    problem = f"lines {got}, expected {want}"
        if problem is not None:
            out.graphql_mismatched += 1
            out.note(f"node(id: Order {pk}): {problem}")
