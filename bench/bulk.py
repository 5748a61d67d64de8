"""`stockBulkUpdate` timing: one request of many rows at a time, repeated, checked via SQL."""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import checks, cpu
from bench.database import BenchDatabase
from bench.seed import BIG_STOCK, WAREHOUSES

QUERY = ("mutation BenchBulk($stocks: [StockBulkUpdateInput!]!) "
         "{ stockBulkUpdate(stocks: $stocks, errorPolicy: REJECT_EVERYTHING) "
         "{ count errors { code field message } } }")
MOVEMENTS = "SELECT COUNT(*) FROM stock_movement"
AT_LEVEL = "SELECT COUNT(*) FROM stock WHERE quantity = ?"
TIMEOUT = 300.0


@dataclass(slots=True)
class BulkResult:
    """`runs` requests of `rows` rows each: client-side round-trip times and checks."""

    rows: int
    times_ms: list[float] = field(default_factory=list)
    movements: list[int] = field(default_factory=list)  # ledger growth per run
    failures: Counter[str] = field(default_factory=Counter)  # per run, by first problem
    server_cpu_ms: float | None = None  # server process tree CPU per request (mean)
    machine_busy: float | None = None
    oversold_stocks: int | None = None
    mismatched_stocks: int | None = None
    deadlock_log_lines: int = 0

    @property
    def runs(self) -> int:
        return len(self.times_ms)

    @property
    def ok_runs(self) -> int:
        return self.runs - sum(self.failures.values())

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def min_ms(self) -> float | None:
        return min(self.times_ms) if self.times_ms else None

    @property
    def max_ms(self) -> float | None:
        return max(self.times_ms) if self.times_ms else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = dict(self.failures)
        data.update(runs=self.runs, ok_runs=self.ok_runs, median_ms=self.median_ms,
                    min_ms=self.min_ms, max_ms=self.max_ms)
        return data


def bulk_body(variants: tuple[int, ...], quantity: int) -> bytes:
    """Rows over `variants`: even rows by SKU, odd rows by variantId; warehouses round-robin.

    Every (variant, warehouse) pair appears once (the service rejects repeats)."""
    from api import ids

    stocks: list[dict[str, object]] = []
    for i, v in enumerate(variants):
        row: dict[str, object] = {"warehouseId": ids.encode("Warehouse", i % WAREHOUSES + 1),
                                  "quantity": quantity}
        if i % 2 == 0:
            row["sku"] = f"BENCH-{v:06d}"
        else:
            row["variantId"] = ids.encode("ProductVariant", v)
        stocks.append(row)
    return json.dumps({"query": QUERY, "variables": {"stocks": stocks},
                       "operationName": "BenchBulk"}).encode()


def graphql_answer(status: int, payload: bytes) -> dict[str, Any] | str:
    """The decoded GraphQL answer, or the failure code of a response that is not one:
    HTTP_<status>, BAD_JSON (not a JSON object), GRAPHQL_ERROR (top-level errors); the
    bulk and read workloads count failures by these same codes."""
    if status != 200:
        return f"HTTP_{status}"
    try:
        answer = json.loads(payload)
    except ValueError:
        return "BAD_JSON"
    if not isinstance(answer, dict):
        return "BAD_JSON"
    if answer.get("errors"):
        return "GRAPHQL_ERROR"
    return answer


def problem(status: int, payload: bytes, rows: int) -> str | None:
    """None if the request applied all `rows` without errors, else what went wrong."""
    answer = graphql_answer(status, payload)
    if isinstance(answer, str):
        return answer
    result = (answer.get("data") or {}).get("stockBulkUpdate") or {}
    if result.get("errors"):
        return "+".join(sorted({str(e.get("code")) for e in result["errors"]}))
    if result.get("count") != rows:
        return "COUNT_MISMATCH"
    return None


class Client:
    """One keep-alive HTTP/1.1 connection (http.client; the parent process, no load)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        self._headers = {"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json", "Accept": "application/json"}

    def post(self, body: bytes) -> tuple[int, bytes]:
        self._conn.request("POST", "/graphql", body=body, headers=self._headers)
        response = self._conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._conn.close()


class Levels:
    """Distinct target quantities: each request sets BIG_STOCK + a new number, so every row
    changes its stock (orders only move `quantity_allocated`, never `quantity`)."""

    def __init__(self) -> None:
        self._next = 0

    def take(self) -> int:
        self._next += 1
        return BIG_STOCK + self._next


def _count(db: BenchDatabase, sql: str, *params: object) -> int:
    with db.connection() as conn:
        return int(conn.execute(db.q(sql), params).fetchone()[0])


def run_bulk(db: BenchDatabase, client: Client, variants: tuple[int, ...], runs: int,
             levels: Levels, server_pid: int | None = None) -> BulkResult:
    """`runs` sequential requests over `variants`; movements and levels checked per run."""
    result = BulkResult(rows=len(variants))
    ticks = cpu.machine_ticks()
    server_cpu = 0.0
    for _ in range(runs):
        quantity = levels.take()
        body = bulk_body(variants, quantity)
        before = _count(db, MOVEMENTS)
        cpu_before = cpu.tree_cpu_seconds(server_pid) if server_pid else 0.0
        started = time.perf_counter()
        try:
            status, payload = client.post(body)
            failed = problem(status, payload, len(variants))
        except (OSError, http.client.HTTPException) as exc:
            client.close()  # reconnects on the next request
            failed = f"CLIENT_{type(exc).__name__}"
        result.times_ms.append((time.perf_counter() - started) * 1000.0)
        if server_pid:
            server_cpu += cpu.tree_cpu_seconds(server_pid) - cpu_before
        gained = _count(db, MOVEMENTS) - before
        result.movements.append(gained)
        if failed is None and gained != len(variants):
            failed = "LEDGER_MISMATCH"
        if failed is None and _count(db, AT_LEVEL, quantity) != len(variants):
            failed = "LEVEL_MISMATCH"
        if failed is not None:
            result.failures[failed] += 1
    result.machine_busy = cpu.busy_share(ticks, cpu.machine_ticks())
    if server_pid and runs:
        result.server_cpu_ms = server_cpu / runs * 1000.0
    books = checks.integrity(db)
    result.oversold_stocks, result.mismatched_stocks = books.oversold, books.mismatched
    return result
