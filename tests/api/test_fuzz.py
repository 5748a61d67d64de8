"""Schemathesis fuzzing of the GraphQL API (API.md "Errors": bad input never yields a 500,
a non-JSON answer, a traceback, SQL or driver text, nor a masked "Unexpected error.").

Runs the app exactly as tests/conftest.py builds it, on every backend of the `db` fixture,
with an admin token (so mutations really execute) and with a seller token (so access is
refused, and must be refused cleanly), each for a bounded time. No generated request may
write an ERROR log line: every one of them is a client's mistake (issue "Limits").
Every generated query (positive and negative GraphQL generation, every query and mutation
field) is checked; failures are collected, grouped by cause and reported together with the
server-side log of the masked exception (strawberry logs it to `strawberry.execution`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from graphql import GraphQLError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.graphql import nodes
from schemathesis.specs.graphql.scalars import CUSTOM_SCALARS

from api.app import build_app
from domain.events import Event
from domain.models import OrderType, Role
from domain.services import orders, tokens
from tests.conftest import Database
from tests.factories import ADMIN, gid, shop

# per backend (SQLite, PostgreSQL) and caller
BUDGET_SECONDS = {("admin", "positive"): 10.0, ("admin", "negative"): 6.0,
                  ("seller", "positive"): 7.0, ("seller", "negative"): 4.0}
MAX_EXAMPLES = 2000  # the time budget normally ends a run first
REQUEST_TIMEOUT = 20.0  # a request that takes longer is a hang
MASKED = "Unexpected error."
LEAKS = ("traceback", "sqlalchemy", "psycopg", "sqlite3")


def _b64(raw: str | bytes) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


TYPES = ["Seller", "ShippingZone", "Warehouse", "Product", "ProductVariant", "Order",
         "OrderLine", "Fulfillment"]
HOSTILE_IDS = [
    "", " ", "not base64!", "\x00", "é", "=" * 4, "A" * 1000, "1", "-1",
    _b64("garbage"), _b64(b"\xff\xfe\x00"), _b64("Seller:"), _b64(":1"), _b64("Nope:1"),
    _b64("Seller:1.5"), _b64("Seller: 1"), _b64("Seller:1\x00"), _b64("ProductVariant:٣"),
]
EDGE_PKS = [0, -1, 2**31 - 1, 2**31, 10**18 - 1, 2**63 - 1, 2**63, 10**30]
HOSTILE_STRINGS = [
    "", " ", "\x00", "a\x00b", "\t\n", "é", "😀" * 10, "\u202e", "\ud7ff", "x" * 256,
    "x" * 100_000, "a\ud800b", "' OR 1=1 --", "%s", "DE", "de", "FR", "US", "XX", "D", "DEU",
]
BOUNDARY_INTS = [0, 1, 2, 3, -1, 1_000_000, 1_000_001, 2**31 - 1, -(2**31)]


@dataclass
class Seeded:
    """Real IDs the generated queries sometimes hit (so resolvers get past NOT_FOUND)."""

    ids: list[str]
    skus: list[str]
    seller: int  # the shop's seller: half the ids are its own, half another seller's


def _seed(db: Database) -> Seeded:
    s = shop(db, stock1=7, stock2=3)
    world = s.world
    other_seller = world.seller()
    other_zone = world.zone(["US"])
    other_wh = world.warehouse(other_seller, [other_zone])
    other_product = world.product(other_seller)
    untracked = world.variant(s.product, track=False, stocks={s.w1: 2})
    other_variant = world.variant(other_product, stocks={other_wh: 2**31 - 1})
    regular = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                            lines=[orders.LineRequest(s.variant, 2)])
    draft = orders.create(db.uow(), ADMIN, type=OrderType.DRAFT, shipping_country="FR",
                          lines=[orders.LineRequest(s.variant, 1),
                                 orders.LineRequest(untracked, 1)])
    ids = [
        gid("Seller", s.seller), gid("Seller", other_seller),
        gid("ShippingZone", s.zone), gid("ShippingZone", other_zone),
        gid("Warehouse", s.w1), gid("Warehouse", s.w2), gid("Warehouse", other_wh),
        gid("Product", s.product), gid("Product", other_product),
        gid("ProductVariant", s.variant), gid("ProductVariant", untracked),
        gid("ProductVariant", other_variant),
        gid("Order", regular.id), gid("Order", draft.id),
        *(gid("OrderLine", ln.id) for ln in (*regular.lines, *draft.lines)),
    ]
    skus = list(db.rows("SELECT sku FROM product_variant"))
    return Seeded(ids=ids, skus=[row[0] for row in skus], seller=s.seller)


def _scalars(seeded: Seeded) -> dict[str, st.SearchStrategy[Any]]:
    """Value strategies mixing real IDs/SKUs/countries with hostile and random values."""
    shaped = st.builds(lambda t, pk: _b64(f"{t}:{pk}"), st.sampled_from(TYPES),
                       st.one_of(st.sampled_from(EDGE_PKS), st.integers()))
    # well-formed IDs with edge pks twice as likely: they get furthest into the services
    ids = st.one_of(st.sampled_from(seeded.ids), shaped, shaped, st.sampled_from(HOSTILE_IDS),
                    st.text())
    strings = st.one_of(st.sampled_from(HOSTILE_STRINGS + seeded.skus), st.text())
    ints = st.one_of(st.sampled_from(BOUNDARY_INTS),
                     st.integers(min_value=-(2**31), max_value=2**31 - 1))
    return {"ID": ids.map(nodes.String), "String": strings.map(nodes.String),
            "Int": ints.map(nodes.Int)}


@pytest.fixture
def fuzz_scalars(db: Database) -> Iterator[Seeded]:
    """Seed data and register the scalar strategies for this test only."""
    seeded = _seed(db)
    saved = dict(CUSTOM_SCALARS)
    for name, strategy in _scalars(seeded).items():
        schemathesis.graphql.scalar(name, strategy)
    try:
        yield seeded
    finally:
        CUSTOM_SCALARS.clear()
        CUSTOM_SCALARS.update(saved)


class _Records(logging.Filter):
    """Keeps what strawberry logs (the masked exceptions) and stops it there: hundreds of
    expected tracebacks would drown pytest's output."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


class _Errors(logging.Handler):
    """Every ERROR (or worse) line any other logger writes."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class ServerLog:
    masked: _Records  # strawberry's, held back from the output
    errors: _Errors  # the root logger's ERROR lines

    def clear(self) -> None:
        self.masked.records.clear()
        self.errors.records.clear()


@pytest.fixture
def server_log() -> Iterator[ServerLog]:
    logger = logging.getLogger("strawberry.execution")
    log = ServerLog(_Records(), _Errors())
    logger.addFilter(log.masked)
    logging.getLogger().addHandler(log.errors)
    try:
        yield log
    finally:
        logger.removeFilter(log.masked)
        logging.getLogger().removeHandler(log.errors)


class _BudgetSpent(Exception):
    """Raised once the time budget is used up; ends the run (no shrinking phase)."""


@dataclass
class Failure:
    kind: str
    query: str
    status: int
    body: str
    server_log: str = ""


@dataclass
class Report:
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    requests: int = 0

    def add(self, key: str, failure: Failure) -> None:
        self.failures.setdefault(key, []).append(failure)

    def render(self) -> str:
        parts = [f"{len(self.failures)} distinct problem(s) in {self.requests} requests:"]
        for key, found in self.failures.items():
            smallest = min(found, key=lambda f: len(f.query))
            parts.append(
                f"\n=== {key}  ({len(found)} request(s))\n"
                f"query: {smallest.query[:1500]}\n"
                f"HTTP {smallest.status}: {smallest.body[:800]}\n"
                f"server log:\n{smallest.server_log[:2500] or '(nothing logged)'}")
        return "\n".join(parts)


ROOT = str(Path(__file__).resolve().parents[2]) + "/"


def _app_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The traceback frames in Stockyard's own code (not libraries, not tests)."""
    return [f for f in traceback.extract_tb(exc.__traceback__)
            if f.filename.startswith(ROOT) and "/site-packages/" not in f.filename
            and "/tests/" not in f.filename]


def _server_log(records: list[logging.LogRecord]) -> tuple[str, str]:
    """(grouping key, compact summary) of what strawberry logged for one request."""
    keys, lines = set(), []
    for r in records:
        exc = r.exc_info[1] if r.exc_info else None
        origin = getattr(exc, "original_error", None) or exc
        frames = _app_frames(origin) if origin is not None else []
        where = f"{frames[-1].filename[len(ROOT):]}:{frames[-1].name}" if frames else ""
        if isinstance(origin, GraphQLError) or origin is None:
            keys.add(f"GraphQLError raised in {where}" if where
                     else "GraphQL's own validation/coercion error")
        else:
            first_line = str(origin).splitlines()[0][:120]
            keys.add(f"{type(origin).__name__} in {where or '?'} ({first_line})")
        lines.append(f"logged: {r.getMessage().splitlines()[0][:300]}")
        if origin is not None:
            lines.extend(f"  at {f.filename[len(ROOT):]}:{f.lineno} {f.name}" for f in frames)
            lines.append(f"  {type(origin).__module__}.{type(origin).__name__}: "
                         f"{str(origin)[:600]}")
    return "; ".join(sorted(keys)), "\n".join(lines)


def _mutation_payload_problems(data: Any) -> list[str]:
    """A payload with errors must have null results (API.md: a failed mutation ...)."""
    problems = []
    if not isinstance(data, dict):
        return problems
    for name, payload in data.items():
        if isinstance(payload, dict) and payload.get("errors"):
            # stockBulkUpdate's count and results are non-null by contract; a failed bulk
            # request answers count 0 and per-row results instead
            filled = [k for k, v in payload.items()
                      if k not in ("errors", "__typename", "count", "results")
                      and v is not None]
            if filled:
                problems.append(f"{name} has errors and non-null {filled}")
    return problems


def _check(case: Any, response: Any, records: list[logging.LogRecord],
           error_lines: list[logging.LogRecord], report: Report) -> None:
    query = case.body if isinstance(case.body, str) else repr(case.body)
    status = response.status_code
    text = response.text
    log_key, log_text = _server_log(records)

    def fail(kind: str, detail: str = "") -> None:
        key = f"{kind}{': ' + detail if detail else ''}"
        report.add(key, Failure(kind, query, status, text, log_text))

    for record in records + error_lines:
        if record.levelno >= logging.ERROR:
            fail(f"ERROR logged on {record.name}", log_key or record.getMessage()[:120])
    if status >= 500:
        fail(f"HTTP {status}", log_key)
        return
    try:
        body = json.loads(text)
    except ValueError:
        fail("non-JSON response", response.headers.get("content-type", ""))
        return
    if not isinstance(body, dict):
        fail("response is not a JSON object")
        return
    sent = query.lower()
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    lowered = text.lower()
    for marker in LEAKS:  # echoed input does not count
        if marker in lowered and marker not in sent:
            fail(f"response leaks {marker!r}", log_key)
    if any(e.get("message") == MASKED for e in errors):
        fail("masked 'Unexpected error.'", log_key)
    for error in errors:  # an output value GraphQL cannot serialize is a server-side bug
        if error.get("path") and "cannot represent" in str(error.get("message")):
            fail("output not representable", str(error["message"]).split(":")[0])
    if case.operation.definition.is_mutation:
        for problem in _mutation_payload_problems(body.get("data")):
            fail("inconsistent payload", problem.split(" has ")[0])


@pytest.mark.parametrize("caller", ["admin", "seller"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
def test_graphql_fuzz_never_fails_internally(
    db: Database, fuzz_scalars: Seeded, mode: GenerationMode, caller: str,
    server_log: ServerLog,
) -> None:
    events: list[Event] = []
    app = build_app(db.engine, events.append)
    token = tokens.create_token(db.uow(), Role.ADMIN) if caller == "admin" else \
        tokens.create_token(db.uow(), Role.SELLER, seller_id=fuzz_scalars.seller)
    headers = {"Authorization": f"Bearer {token}"}
    gql = schemathesis.graphql.from_asgi("/graphql", app)
    strategy = gql.as_strategy(generation_mode=mode)
    report = Report()
    deadline = time.monotonic() + BUDGET_SECONDS[caller, mode.value]

    # CI replays a fixed sequence (a landing must not depend on luck); locally it explores
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              derandomize=bool(os.environ.get("CI")),
              phases=[Phase.generate], print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        if time.monotonic() > deadline:
            raise _BudgetSpent  # the only way to end a Hypothesis run early
        server_log.clear()
        report.requests += 1
        started = time.monotonic()
        try:
            response = case.call(headers=headers, timeout=REQUEST_TIMEOUT)
        except Exception as exc:  # a timeout (hang) or an exception escaping the ASGI app
            records = list(server_log.masked.records)
            report.add(f"request failed: {type(exc).__name__}", Failure(
                "request failed", str(case.body), 0,
                f"{exc!r} after {time.monotonic() - started:.1f}s",
                _server_log(records)[1]))
            return
        _check(case, response, list(server_log.masked.records),
               list(server_log.errors.records), report)

    try:
        with contextlib.suppress(_BudgetSpent):
            run()
    finally:
        app.state.threads.close()
    assert report.requests > 0
    if report.failures:
        pytest.fail(report.render(), pytrace=False)
