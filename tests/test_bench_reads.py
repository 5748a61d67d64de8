"""The bench's read workloads and raw baselines stay alive (bench/reads.py,
bench/one_statement.py): every request they build is answered right by the app, every
wrong answer is caught, the raw SQL gives the app's figures, the one-statement order
writes what the app writes and the floor (bench/floor.py) walks the app's answers. Small
seeds, requests through the ASGI app, pgbench for a second: a few seconds in all."""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from api.app import build_app
from bench import checks, pgbench, reads
from bench.database import BenchDatabase
from bench.floor import FloorMismatch, answer_fields, floor_seconds
from bench.one_statement import run_one_statement
from bench.read_report import (
    Floor,
    floor_table,
    read_checks,
    read_rounds,
    read_table,
    server_cpu_per_request,
)
from bench.run import parse_args, rounds
from bench.seed import Seeded, migrate, seed
from bench.stats import WorkloadResult
from bench.workload import Timing
from domain.db import make_engine
from domain.events import Event
from domain.settings import Settings
from tests.conftest import asgi_client, postgres_server_url, require_postgres

pytestmark = pytest.mark.anyio

VARIANTS = 100
Prepared = tuple[BenchDatabase, Seeded, reads.ReadData]


def _database(kind: str, tmp: Any) -> BenchDatabase:
    if kind == "sqlite":
        return BenchDatabase("sqlite", f"sqlite:///{tmp / 'bench.sqlite3'}")
    require_postgres()
    return BenchDatabase.choose(postgres_server_url(), f"stockyard_bench_test_{os.getpid()}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def prepared(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prepared]:
    """A bench database seeded with VARIANTS variants and readied for the reads."""
    db = _database(request.param, tmp_path_factory.mktemp("bench"))
    db.create()
    try:
        migrate(db)
        seeded = seed(db, VARIANTS, 30)
        yield db, seeded, reads.prepare(db, VARIANTS, seeded.token, seeded.actor)
    finally:
        db.drop()


def test_prepare_fills_every_page(prepared: Prepared) -> None:
    _, _, data = prepared

    assert len(data.products) == VARIANTS // reads.VARIANTS_PER_PRODUCT
    assert data.low_stock_page and not data.low_stock_more  # 30 flagged stocks: one page
    assert len(data.movement_variants) == VARIANTS
    assert all(len(page) == reads.PAGE for page in data.movement_pages.values())
    assert all(data.movement_more.values())
    assert set(data.available.values()) == {3 * 1_000_000}


@asynccontextmanager
async def _app_client(db: BenchDatabase) -> AsyncIterator[httpx.AsyncClient]:
    """The app over the bench database, through ASGI."""
    engine = make_engine(Settings(database_url=db.url))
    events: list[Event] = []
    try:
        async with asgi_client(build_app(engine, events.append)) as client:
            yield client
    finally:
        engine.dispose()


async def _ask(client: httpx.AsyncClient, data: reads.ReadData, spec: reads.ReadSpec,
               body: bytes) -> httpx.Response:
    return await client.post("/graphql", content=body,
                             headers={"Authorization": f"Bearer {data.tokens[spec.role]}",
                                      "Content-Type": "application/json"})


async def test_every_workload_is_answered_right_by_the_app(prepared: Prepared) -> None:
    db, _, data = prepared
    rng = random.Random(7)
    async with _app_client(db) as client:
        for spec in reads.SPECS.values():
            for _ in range(3):
                body, expect = reads.request(spec, data, rng)
                response = await _ask(client, data, spec, body)

                code = reads.judge(spec, data, response.status_code, response.content,
                                   expect)

                assert code is None, (spec.name, code, response.text[:500])


async def test_the_floor_walks_every_workloads_answer(prepared: Prepared) -> None:
    db, _, data = prepared
    rng = random.Random(8)
    async with _app_client(db) as client:
        for spec in reads.SPECS.values():
            body, _ = reads.request(spec, data, rng)
            answer = (await _ask(client, data, spec, body)).json()["data"]

            seconds = floor_seconds(spec.query, json.loads(body).get("variables"),
                                    spec.operation, answer, rounds=1)

            assert 0 < seconds < 1, spec.name


def _right_availability(data: reads.ReadData, skus: list[str]) -> dict[str, Any]:
    edges = [{"node": {"sku": s, "quantityAvailable": data.available[s]}} for s in skus]
    return {"data": {"productVariants": {"edges": edges}}}


@pytest.mark.parametrize(("tamper", "code"), [
    (lambda a: a["data"]["productVariants"]["edges"][0]["node"].update(quantityAvailable=1),
     "WRONG_FIGURE"),
    (lambda a: a["data"]["productVariants"]["edges"].pop(), "WRONG_EDGES"),
    (lambda a: a.update(errors=[{"message": "Unexpected error."}]), "GRAPHQL_ERROR"),
    (lambda a: a["data"].update(productVariants=None), "MALFORMED"),
])
def test_a_wrong_availability_answer_is_a_failure(prepared: Prepared, tamper: Any,
                                                  code: str) -> None:
    _, _, data = prepared
    spec = reads.SPECS["availability"]
    _, skus = reads.request(spec, data, random.Random(1))
    answer = _right_availability(data, skus)
    assert reads.judge(spec, data, 200, json.dumps(answer).encode(), skus) is None

    tamper(answer)

    assert reads.judge(spec, data, 200, json.dumps(answer).encode(), skus) == code


def _small_answer() -> tuple[dict[str, Any], dict[str, Any]]:
    """Variables and `data` of an availability answer (no database needed)."""
    skus = [f"BENCH-{i:06d}" for i in range(1, reads.SKUS_PER_REQUEST + 1)]
    edges = [{"node": {"sku": sku, "quantityAvailable": 7}} for sku in skus]
    return {"skus": skus}, {"productVariants": {"edges": edges}}


def test_floor_of_a_small_answer() -> None:
    variables, answer = _small_answer()

    seconds = floor_seconds(reads.AVAILABILITY, variables, "BenchAvailability", answer,
                            rounds=3)

    assert 0 < seconds < 0.1
    assert answer_fields(answer) == 1 + 1 + 5 * (1 + 2)  # productVariants, edges, 5 nodes
    assert 0 < floor_seconds("{ __typename }", None, None, {"__typename": "Query"},
                             rounds=1) < seconds


def _drop_figure(answer: dict[str, Any]) -> None:
    del answer["productVariants"]["edges"][0]["node"]["quantityAvailable"]


def _add_field(answer: dict[str, Any]) -> None:
    answer["productVariants"]["edges"][0]["node"]["name"] = "not asked for"


def _null_edges(answer: dict[str, Any]) -> None:
    answer["productVariants"]["edges"] = None  # non-null in the schema


@pytest.mark.parametrize(("tamper", "says"), [
    (_drop_figure, "has no 'quantityAvailable'"),
    (_add_field, "differs from the answer"),
    (_null_edges, "could not walk the answer"),
])
def test_floor_fails_on_an_answer_that_does_not_match(tamper: Any, says: str) -> None:
    variables, answer = _small_answer()
    tamper(answer)

    with pytest.raises(FloorMismatch, match=says):
        floor_seconds(reads.AVAILABILITY, variables, "BenchAvailability", answer, rounds=1)


def test_floor_needs_the_type_of_an_abstract_field() -> None:
    answer = {"node": {"id": "UHJvZHVjdDox", "name": "n", "variants": []}}

    with pytest.raises(FloorMismatch, match="must select __typename"):
        floor_seconds(reads.PRODUCT_PAGE, {"id": "UHJvZHVjdDox"}, "BenchProductPage", answer,
                      rounds=1)
    with pytest.raises(FloorMismatch, match="does not fit the served schema"):
        floor_seconds("{ noSuchField }", None, None, {"noSuchField": 1}, rounds=1)


def test_transport_failures_are_failures(prepared: Prepared) -> None:
    _, _, data = prepared
    spec = reads.SPECS["nodes"]
    _, picked = reads.request(spec, data, random.Random(2))

    assert reads.judge(spec, data, 500, b"oops", picked) == "HTTP_500"
    assert reads.judge(spec, data, 200, b"<html>", picked) == "BAD_JSON"
    assert reads.judge(spec, data, 200, b'{"data": {"nodes": []}}', picked) == "WRONG_NODES"


def test_raw_read_gives_the_apps_figures(prepared: Prepared) -> None:
    db, _, data = prepared
    if db.kind == "postgresql" and pgbench.available() is None:
        pytest.skip("SKIPPED, pgbench not installed")

    result = reads.run_raw_availability(db, data, Timing(clients=2, warmup=0, seconds=0.3))

    assert reads.raw_check(db, data) is None
    assert result.failures == {}, result.extra
    assert result.ok > 0


def test_one_statement_order_writes_what_the_app_writes() -> None:
    require_postgres()
    if pgbench.available() is None:
        pytest.skip("SKIPPED, pgbench not installed")
    db = BenchDatabase.choose(postgres_server_url(), f"stockyard_bench_one_{os.getpid()}")
    db.create()
    try:
        migrate(db)
        seeded = seed(db, VARIANTS, 30)

        result = run_one_statement(db, VARIANTS, Timing(clients=4, warmup=0, seconds=1),
                                   seeded.actor)

        assert result.failures == {}, result.extra["problems"]
        assert result.ok > 0 and len(result.placed) == result.ok
        readback = checks.read_back(db, result.placed, 0)
        assert readback.broken == 0, readback.problems
        assert checks.integrity(db) == checks.Integrity(0, 0)
    finally:
        db.drop()


def _row(name: str, rate: float, p99: float, failures: dict[str, int] | None = None
         ) -> WorkloadResult:
    return WorkloadResult(name=name, transport="graphql", seconds=1.0, ok=int(rate),
                          failures=failures or {}, p50_ms=p99 / 2, p99_ms=p99, mean_ms=None,
                          max_ms=p99, client_cpu=0.1, ok_completed=int(rate))


def test_targets_compare_each_read_with_trivial() -> None:
    results = [_row("trivial", 1000, 5), _row("availability", 400, 20),
               _row("nodes", 150, 40, {"WRONG_NODE": 2})]

    found = {c.name: c for c in read_checks(results)}

    assert found["availability / trivial (requests/s)"].passed is True
    assert found["availability p99 latency (ms)"].passed is True
    assert found["nodes / trivial (requests/s)"].passed is False
    assert found["failed reads (non-200, GraphQL errors, wrong answers; raw read errors)"
                 ].value == "2"
    assert any("0.400" in line for line in read_table(results))


def test_floor_table_sets_the_server_beside_the_floor() -> None:
    results = [_row("trivial", 1000, 5), _row("dashboard-stocks", 100, 40),
               _row("raw-availability", 5000, 2)]
    results[1].extra["server_cpu_us_per_request"] = 12_000.0
    floors = {"trivial": Floor("trivial", 1, problem="the answer was wrong: HTTP_500"),
              "dashboard-stocks": Floor("dashboard-stocks", 405, 0.003)}

    lines = floor_table(results, floors, workers=1)

    row = next(line.split() for line in lines if line.startswith("dashboard-stocks"))
    # fields, floor us, us/field, req/s, server us/req, server / floor, ceiling/s, x ceiling
    assert row[1:] == ["405", "3000", "7.4", "100.0", "12000", "4.0", "333", "0.300"]
    assert any("trivial: no floor: the answer was wrong: HTTP_500" in line for line in lines)
    assert not any(line.startswith("raw-availability") for line in lines)


def test_server_cpu_per_request() -> None:
    result = _row("nodes", 200, 40)
    result.extra["server_cpu"] = 1.5  # cores over a 10 s run, 8 s of it warm-up + window

    assert server_cpu_per_request(result, 10.0, 8.0) == pytest.approx(1.5 * 10 / 1600 * 1e6)
    assert server_cpu_per_request(_row("nodes", 0, 40), 10.0, 8.0) is None


def test_options_and_rounds() -> None:
    args = parse_args(["--reads", "--read-workloads", "availability"])

    assert args.read_workloads == ["trivial", "availability"]
    assert read_rounds(2, args.read_workloads, raw=True) == [
        (1, "trivial"), (1, "availability"), (1, "raw-availability"),
        (2, "raw-availability"), (2, "availability"), (2, "trivial")]
    assert rounds(1, raw=True, one=True)[:3] == [(1, "raw-spread"), (1, "raw-one-spread"),
                                                 (1, "spread")]
    with pytest.raises(SystemExit):
        parse_args(["--reads", "--read-workloads", "nope"])


def test_pgbench_summary_is_read() -> None:
    run = pgbench.parse("number of transactions actually processed: 1234\n"
                        "number of failed transactions: 0 (0.000%)\n"
                        "latency average = 2.591 ms\n"
                        "tps = 12345.678901 (without initial connection time)\n")

    assert (run.transactions, run.failed, run.latency_avg_ms, run.tps) == (
        1234, 0, 2.591, 12345.678901)
