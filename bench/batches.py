"""Pick batches: `pickBatchCreate` and `pickBatchComplete` of one batch of 500 orders,
timed by the client, `--batch-runs` rounds (bench/README.md "Pick batches").

Each round places `orders` REGULAR orders (shippingCountry DE, 1-3 lines of quantity 1 over
distinct random variants of the spread pool) through the running server, `PLACERS` keep-alive
connections at once, then sends `pickBatchCreate` for all of them in warehouse 1 and
`pickBatchComplete` of that batch, one request each on a warm keep-alive connection. Every
spread variant holds a million units in each warehouse and warehouse 1 has priority 1, so
every order allocates all its units there (checked in SQL before the batch is made: a batch
only takes orders with units allocated in its warehouse).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import checks, cpu
from bench.bulk import Client
from bench.database import BenchDatabase
from bench.http_client import RawPoster
from bench.load import REQUEST_TIMEOUT, classify, order_body, order_pk, run_loop, variant_gid
from bench.progress import say, settle
from bench.report import Check
from bench.stats import Spread

BATCH_ORDERS = 500  # the size the target is set for
COMPLETE_MAX_MS = 1_000.0  # pickBatchComplete of 500 orders, PostgreSQL
WAREHOUSE = 1  # priority 1: every spread order allocates here
MAX_LINES = 3
PLACERS = 16  # concurrent orderCreate connections while placing a round's orders

CREATE = ("mutation BenchBatchCreate($input: PickBatchCreateInput!) { pickBatchCreate("
          "input: $input) { pickBatch { id status } errors { code field message } } }")
COMPLETE = ("mutation BenchBatchComplete($id: ID!) { pickBatchComplete(id: $id) { "
            "pickBatch { id status } fulfillments { id } errors { code field message } } }")
PING = b'{"query": "{ __typename }"}'

LAST_MOVEMENT = "SELECT COALESCE(MAX(id), 0) FROM stock_movement"
# the bench's own integers only are formatted into these ({ids})
ALLOCATED_WHERE = """
SELECT s.warehouse_id, COALESCE(SUM(a.quantity), 0) FROM allocation a
JOIN order_line ol ON ol.id = a.order_line_id JOIN stock s ON s.id = a.stock_id
WHERE ol.order_id IN ({ids}) GROUP BY s.warehouse_id
"""
LEVELS = ("SELECT id, quantity, quantity_allocated, quantity_reserved_for_batches FROM stock "
          "WHERE id IN ({ids})")
STOCK_IDS = "SELECT variant_id, id FROM stock WHERE warehouse_id = ? AND variant_id IN ({ids})"
STATUSES = "SELECT status, COUNT(*) FROM orders WHERE id IN ({ids}) GROUP BY status"
UNSHIPPED = ("SELECT COALESCE(SUM(quantity - quantity_fulfilled), 0), COUNT(*) "
             "FROM order_line WHERE order_id IN ({ids})")
FULFILLMENTS = "SELECT COUNT(*) FROM fulfillment WHERE order_id IN ({ids})"
SHIPPED_FROM = """
SELECT fl.warehouse_id, SUM(fl.quantity) FROM fulfillment_line fl
JOIN order_line ol ON ol.id = fl.order_line_id
WHERE ol.order_id IN ({ids}) GROUP BY fl.warehouse_id
"""
MOVED = """
SELECT type, COUNT(*), COUNT(DISTINCT stock_id), COALESCE(SUM(quantity_change), 0),
       COALESCE(SUM(allocated_change), 0)
FROM stock_movement WHERE id > ? GROUP BY type
"""

Order = tuple[int, str, tuple[int, ...]]  # (pk, global ID, variant pks, one unit each)


@dataclass(slots=True)
class BatchRun:
    """One round: the orders placed, the two timed requests and what was checked."""

    run: int
    orders: int = 0  # placed
    lines: int = 0
    stocks: int = 0  # distinct stocks of warehouse 1 the batch takes units from
    place_s: float | None = None  # placing the orders (not a target)
    create_ms: float | None = None  # the request's wall time, whatever it answered
    complete_ms: float | None = None
    create_ok: bool = False  # answered without errors (only those count in the medians)
    complete_ok: bool = False
    create_server_ms: float | None = None  # CPU of the server process tree
    complete_server_ms: float | None = None
    fulfillments: int | None = None  # in pickBatchComplete's answer
    fulfilled_orders: int | None = None  # orders FULFILLED afterwards (SQL)
    batch_status: str | None = None  # pickBatch.status in pickBatchComplete's answer
    movements: dict[str, int] = field(default_factory=dict)  # ledger rows by type
    problems: list[str] = field(default_factory=list)  # empty: the round is correct

    @property
    def ok(self) -> bool:
        return not self.problems and self.complete_ms is not None


@dataclass(slots=True)
class BatchResult:
    """Every round, and what the whole part left behind."""

    orders: int
    warehouse: int = WAREHOUSE
    runs: list[BatchRun] = field(default_factory=list)
    oversold_stocks: int | None = None
    mismatched_stocks: int | None = None
    deadlock_log_lines: int = 0

    @property
    def create(self) -> Spread:
        """pickBatchCreate ms of the runs where it answered without errors."""
        return Spread.of([r.create_ms for r in self.runs if r.create_ok])

    @property
    def complete(self) -> Spread:
        """pickBatchComplete ms of the runs where it answered without errors."""
        return Spread.of([r.complete_ms for r in self.runs if r.complete_ok])

    @property
    def ok_runs(self) -> int:
        return sum(r.ok for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {"orders": self.orders, "warehouse": self.warehouse,
                "runs": [asdict(r) | {"ok": r.ok} for r in self.runs],
                "create_ms": self.create.to_json(), "complete_ms": self.complete.to_json(),
                "ok_runs": self.ok_runs, "oversold_stocks": self.oversold_stocks,
                "mismatched_stocks": self.mismatched_stocks,
                "deadlock_log_lines": self.deadlock_log_lines}


# -- placing the orders --------------------------------------------------------------------


def pick_orders(pool: tuple[int, ...], count: int, seed: int) -> list[tuple[int, ...]]:
    """`count` orders of 1-3 distinct variants of `pool` (seeded)."""
    rng = random.Random(seed)
    return [tuple(rng.sample(pool, rng.randint(1, min(MAX_LINES, len(pool)))))
            for _ in range(count)]


async def _place_all(host: str, port: int, token: str, wanted: list[tuple[int, ...]]
                     ) -> tuple[list[Order], Counter[str]]:
    queue: asyncio.Queue[tuple[int, ...]] = asyncio.Queue()
    for variants in wanted:
        queue.put_nowait(variants)
    placed: list[Order] = []
    failures: Counter[str] = Counter()

    async def placer() -> None:
        poster = RawPoster(host, port, token)
        try:
            while not queue.empty():
                variants = queue.get_nowait()
                body = order_body([variant_gid(v) for v in variants])
                try:
                    status, payload = await asyncio.wait_for(poster.post(body),
                                                             REQUEST_TIMEOUT)
                    code, _, gid = classify(status, payload)
                except Exception as exc:  # transport errors, timeouts
                    code, gid = f"CLIENT_{type(exc).__name__}", None
                pk = order_pk(gid) if gid is not None else None
                if gid is not None and pk is None:
                    code = "BAD_ORDER_ID"
                if code is None and gid is not None and pk is not None:
                    placed.append((pk, gid, variants))
                else:
                    failures[code or "NO_ORDER"] += 1
        finally:
            await poster.close()

    await asyncio.gather(*(placer() for _ in range(PLACERS)))
    return placed, failures


def place_orders(host: str, port: int, token: str, wanted: list[tuple[int, ...]]
                 ) -> tuple[list[Order], Counter[str]]:
    """orderCreate of each of `wanted` through the server; (orders, failures by code)."""
    return run_loop(_place_all(host, port, token, wanted))


# -- the two timed requests ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One timed GraphQL request: the mutation's payload, or what went wrong."""

    ms: float
    server_ms: float | None
    payload: dict[str, Any] | None
    problem: str | None


def timed(client: Client, field_name: str, body: bytes, server_pid: int | None) -> Answer:
    """POST `body` on a warm connection (opened by a `{ __typename }` first, the server
    closes idle ones) and time it from request sent to response read."""
    client.close()
    try:
        client.post(PING)
    except (OSError, http.client.HTTPException):
        client.close()
    cpu_before = cpu.tree_cpu_seconds(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    try:
        status, raw = client.post(body)
    except (OSError, http.client.HTTPException) as exc:
        client.close()
        ms = (time.perf_counter() - started) * 1000.0
        return Answer(ms, None, None, f"CLIENT_{type(exc).__name__}: {exc}")
    ms = (time.perf_counter() - started) * 1000.0
    server_ms = (cpu.tree_cpu_seconds(server_pid) - cpu_before) * 1000.0 if server_pid else None
    try:
        data = json.loads(raw) if status == 200 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Answer(ms, server_ms, None, f"HTTP_{status}: {raw[:300]!r}")
    if data.get("errors"):
        return Answer(ms, server_ms, None, f"GRAPHQL_ERROR: {str(data['errors'])[:300]}")
    payload = (data.get("data") or {}).get(field_name)
    if not isinstance(payload, dict):
        return Answer(ms, server_ms, None, f"no {field_name} payload: {raw[:300]!r}")
    if payload.get("errors"):
        return Answer(ms, server_ms, payload, f"{field_name} errors: {payload['errors']}")
    return Answer(ms, server_ms, payload, None)


# -- SQL -----------------------------------------------------------------------------------


def _ids(values: list[int] | set[int]) -> str:
    return ", ".join(str(int(v)) for v in sorted(values))


def _rows(db: BenchDatabase, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with db.connection() as conn:
        return [tuple(r) for r in conn.execute(db.q(sql), params).fetchall()]


Level = tuple[int, int, int]  # quantity, quantity_allocated, quantity_reserved_for_batches


def levels(db: BenchDatabase, stocks: set[int]) -> dict[int, Level]:
    """stock id -> its figures."""
    return {int(i): (int(q), int(a), int(r))
            for i, q, a, r in _rows(db, LEVELS.format(ids=_ids(stocks)))}


def off_levels(before: dict[int, Level], after: dict[int, Level], units: Counter[int],
               change: tuple[int, int, int], what: str) -> str | None:
    """None when each stock's figures moved by `change` times its units in the batch, else
    what is off."""
    wrong = [s for s, old in before.items()
             if after.get(s) != tuple(o + c * units[s] for o, c in zip(old, change,
                                                                       strict=True))]
    if not wrong:
        return None
    s = wrong[0]
    return (f"{len(wrong)} stocks not as expected {what} (quantity, allocated, batch "
            f"reserve), e.g. stock {s}: {before[s]} -> {after.get(s)}, batch units {units[s]}")


def check_done(db: BenchDatabase, run: BatchRun, placed: list[Order], units: Counter[int],
               before: dict[int, Level], since_movement: int) -> None:
    """After pickBatchComplete: every order FULFILLED with every unit shipped from the
    warehouse, one fulfilment each, one BATCH_PICK movement per stock taking its units off
    on-hand and allocated, and nothing else moved."""
    pks = _ids([pk for pk, _, _ in placed])
    total = sum(units.values())
    statuses = {str(s): int(n) for s, n in _rows(db, STATUSES.format(ids=pks))}
    run.fulfilled_orders = statuses.get("FULFILLED", 0)
    if run.fulfilled_orders != len(placed):
        run.problems.append(f"order statuses {statuses}, expected FULFILLED:{len(placed)}")
    unshipped, lines = _rows(db, UNSHIPPED.format(ids=pks))[0]
    if int(unshipped) or int(lines) != run.lines:
        run.problems.append(f"{unshipped} units unshipped over {lines} lines ({run.lines} "
                            f"placed)")
    fulfilments = int(_rows(db, FULFILLMENTS.format(ids=pks))[0][0])
    if fulfilments != len(placed):
        run.problems.append(f"{fulfilments} fulfillment rows for {len(placed)} orders")
    shipped = {int(w): int(n) for w, n in _rows(db, SHIPPED_FROM.format(ids=pks))}
    if shipped != {WAREHOUSE: total}:
        run.problems.append(f"fulfillment_line units by warehouse {shipped}, expected "
                            f"{{{WAREHOUSE}: {total}}}")
    left = _rows(db, ALLOCATED_WHERE.format(ids=pks))
    if left:
        run.problems.append(f"allocations left on the orders, by warehouse: {left}")
    moved = {str(t): (int(n), int(k), int(dq), int(da))
             for t, n, k, dq, da in _rows(db, MOVED, since_movement)}
    run.movements = {t: m[0] for t, m in moved.items()}
    want = (len(units), len(units), -total, -total)
    if moved.get("BATCH_PICK") != want or set(moved) != {"BATCH_PICK"}:
        run.problems.append(
            f"ledger since pickBatchCreate (type: rows, stocks, quantity, allocated) "
            f"{moved}, expected only BATCH_PICK: {want}")
    problem = off_levels(before, levels(db, set(before)), units, (-1, -1, 0),
                         "after pickBatchComplete")
    if problem is not None:
        run.problems.append(problem)


def one_round(db: BenchDatabase, client: Client, host: str, port: int, token: str,
              pool: tuple[int, ...], orders: int, run_no: int,
              server_pid: int | None) -> BatchRun:
    """Place the orders, batch them in warehouse 1, complete the batch; check everything."""
    from api import ids

    run = BatchRun(run_no)
    wanted = pick_orders(pool, orders, seed=run_no)
    settle(server_pid)
    started = time.perf_counter()
    placed, failures = place_orders(host, port, token, wanted)
    run.place_s = time.perf_counter() - started
    placed.sort()
    run.orders = len(placed)
    run.lines = sum(len(v) for _, _, v in placed)
    if failures or len(placed) != orders:
        run.problems.append(f"orderCreate: {len(placed)}/{orders} placed, failures "
                            f"{dict(failures)}")
        return run
    pks = _ids([pk for pk, _, _ in placed])
    where = {int(w): int(n) for w, n in _rows(db, ALLOCATED_WHERE.format(ids=pks))}
    if where != {WAREHOUSE: run.lines}:
        run.problems.append(f"orders' allocated units by warehouse {where}, expected all "
                            f"{run.lines} in warehouse {WAREHOUSE} (bench assumption)")
        return run
    variants = {v for _, _, vs in placed for v in vs}
    stock_of = {int(v): int(s) for v, s in _rows(db, STOCK_IDS.format(ids=_ids(variants)),
                                                 WAREHOUSE)}
    run.stocks = len(stock_of)
    units: Counter[int] = Counter(stock_of[v] for _, _, variants in placed for v in variants)
    before = levels(db, set(stock_of.values()))
    since_movement = int(_rows(db, LAST_MOVEMENT)[0][0])

    settle(server_pid)
    create = timed(client, "pickBatchCreate", json.dumps({
        "query": CREATE, "operationName": "BenchBatchCreate",
        "variables": {"input": {"warehouseId": ids.encode("Warehouse", WAREHOUSE),
                                "orderIds": [gid for _, gid, _ in placed]}}}).encode(),
        server_pid)
    run.create_ms, run.create_server_ms = create.ms, create.server_ms
    batch = (create.payload or {}).get("pickBatch") or {}
    run.create_ok = create.problem is None
    if create.problem is not None or not isinstance(batch.get("id"), str):
        run.problems.append(f"pickBatchCreate: {create.problem or 'no pickBatch.id'}")
        return run
    if batch.get("status") != "OPEN":
        run.problems.append(f"pickBatchCreate: status {batch.get('status')}, expected OPEN")
    # API.md: the units move from order reserve to batch reserve, available does not change
    problem = off_levels(before, levels(db, set(before)), units, (0, 0, 1),
                         "after pickBatchCreate")
    if problem is not None:
        run.problems.append(problem)

    settle(server_pid)
    done = timed(client, "pickBatchComplete", json.dumps({
        "query": COMPLETE, "operationName": "BenchBatchComplete",
        "variables": {"id": batch["id"]}}).encode(), server_pid)
    run.complete_ms, run.complete_server_ms = done.ms, done.server_ms
    run.complete_ok = done.problem is None
    answer = done.payload or {}
    run.batch_status = (answer.get("pickBatch") or {}).get("status")
    fulfilments = answer.get("fulfillments")
    run.fulfillments = len(fulfilments) if isinstance(fulfilments, list) else None
    if done.problem is not None:
        run.problems.append(f"pickBatchComplete: {done.problem}")
    if run.batch_status != "COMPLETED":
        run.problems.append(f"pickBatchComplete: status {run.batch_status}, expected "
                            "COMPLETED")
    distinct = {f.get("id") for f in fulfilments or [] if isinstance(f, dict)}
    if run.fulfillments != len(placed) or len(distinct) != len(placed):
        run.problems.append(f"pickBatchComplete: {run.fulfillments} fulfillments "
                            f"({len(distinct)} distinct ids), expected {len(placed)}")
    check_done(db, run, placed, units, before, since_movement)
    return run


def run_batches(db: BenchDatabase, host: str, port: int, token: str, pool: tuple[int, ...],
                orders: int, runs: int, server_pid: int | None) -> BatchResult:
    """`runs` rounds of place / pickBatchCreate / pickBatchComplete, then the integrity SQL."""
    result = BatchResult(orders)
    client = Client(host, port, token)
    try:
        for n in range(1, runs + 1):
            run = one_round(db, client, host, port, token, pool, orders, n, server_pid)
            result.runs.append(run)
            say(f"batch #{n}: {run.orders} orders ({run.lines} lines, {run.stocks} stocks) "
                f"placed in {_num(run.place_s, 's', 1)}; pickBatchCreate "
                f"{_num(run.create_ms, 'ms')}, pickBatchComplete "
                f"{_num(run.complete_ms, 'ms')}, {run.fulfillments} fulfillments, "
                f"{run.fulfilled_orders} FULFILLED, batch {run.batch_status}")
            for problem in run.problems:
                say(f"  batch #{n}: {problem}")
    finally:
        client.close()
    books = checks.integrity(db)
    result.oversold_stocks, result.mismatched_stocks = books.oversold, books.mismatched
    return result


# -- report --------------------------------------------------------------------------------


def _num(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{' ' + unit if unit else ''}"


def _spread(spread: Spread) -> str:
    if spread.median is None:
        return "-"
    return f"{spread.median:.0f} [{spread.low:.0f}-{spread.high:.0f}]"


def batch_table(result: BatchResult) -> list[str]:
    """One row per round, then median [min-max] of both timings."""
    head = (f"{'batch':<6}{'orders':>7}{'lines':>6}{'stocks':>7}{'place s':>8}"
            f"{'create ms':>10}{'server':>7}{'complete ms':>12}{'server':>7}"
            f"{'fulfil':>7}{'FULFILLED':>10}  {'status':<10}{'ledger':<16}problems")
    lines = [f"Pick batches: {result.orders} REGULAR orders of 1-3 lines per batch, warehouse "
             f"{result.warehouse}; pickBatchCreate and pickBatchComplete timed by the client "
             "(request sent to response read)", head, "-" * len(head)]
    for r in result.runs:
        ledger = " ".join(f"{t}:{n}" for t, n in sorted(r.movements.items())) or "-"
        lines.append(
            f"{r.run:<6}{r.orders:>7}{r.lines:>6}{r.stocks:>7}{_num(r.place_s, '', 1):>8}"
            f"{_num(r.create_ms, '', 1):>10}{_num(r.create_server_ms):>7}"
            f"{_num(r.complete_ms, '', 1):>12}{_num(r.complete_server_ms):>7}"
            f"{'-' if r.fulfillments is None else r.fulfillments:>7}"
            f"{'-' if r.fulfilled_orders is None else r.fulfilled_orders:>10}  "
            f"{r.batch_status or '-':<10}{ledger:<16}{len(r.problems) or 0}")
    lines += [f"over {len(result.runs)} runs, median [min-max]: pickBatchCreate "
              f"{_spread(result.create)} ms, pickBatchComplete {_spread(result.complete)} ms",
              "server: CPU ms of the server process tree during the request (PostgreSQL's "
              "own time is not in it); ledger: stock_movement rows written by the batch", ""]
    return lines


def batch_checks(result: BatchResult, database: str) -> list[Check]:
    """The target (complete of 500 orders, PostgreSQL) and the correctness of every round."""
    median = result.complete.median
    judged = median is not None and result.orders == BATCH_ORDERS and database == "postgresql"
    size = f"{result.orders} orders"
    out = [Check(f"pickBatchComplete of {size}, median ms", _num(median, '', 1),
                 f"< {COMPLETE_MAX_MS:.0f} (PostgreSQL)",
                 median < COMPLETE_MAX_MS if judged and median is not None else None)]
    out.append(Check(f"pick batches: {size} FULFILLED, batch COMPLETED, ledger right",
                     f"{result.ok_runs}/{len(result.runs)}", "all runs",
                     result.ok_runs == len(result.runs) > 0, correctness=True))
    for r in result.runs:
        if r.problems:
            first = r.problems[0] if len(r.problems) < 2 else \
                f"{r.problems[0][:100]}... (+{len(r.problems) - 1} more)"
            out.append(Check(f"  batch run {r.run}: {first[:140]}",
                             str(len(r.problems)), "0", False, correctness=True))
    broken = (result.oversold_stocks or 0) + (result.mismatched_stocks or 0)
    out.append(Check("oversold or unbalanced stocks (after the pick batches)", str(broken),
                     "0", broken == 0, correctness=True))
    out.append(Check("deadlocks in the server log (pick batches)",
                     str(result.deadlock_log_lines), "0", result.deadlock_log_lines == 0,
                     correctness=True))
    return out
