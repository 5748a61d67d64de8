"""Access logs and request ids (API.md "Access and operations", Operations): one line per
request with its operation, outcome, duration, caller and request id; `X-Request-Id`
taken or made, and echoed; JSON lines with STOCKYARD_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from typing import Any

import httpx
import pytest

from domain.models import Role
from domain.services import tokens
from tests.commands import STOCKYARD, cli_env, free_port, wait_until_healthy
from tests.conftest import Api
from tests.factories import gid, shop

pytestmark = pytest.mark.anyio

PLACE = """mutation Place($input: OrderCreateInput!) {
  orderCreate(input: $input) { order { id } errors { code } } }"""


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "stockyard.access"]


def _order(variant: int, quantity: int) -> dict[str, Any]:
    return {"input": {"type": "REGULAR", "shippingCountry": "DE",
                      "lines": [{"variantId": gid("ProductVariant", variant),
                                 "quantity": quantity}]}}


@pytest.mark.parametrize("fast_paths", [True, False])
async def test_one_line_per_request_with_operation_outcome_caller_and_id(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    s = shop(api.db, stock1=2)
    admin = tokens.create_token(api.db.uow(), Role.ADMIN, name="Berlin dashboard")
    caplog.set_level(logging.INFO, logger="stockyard.access")
    headers = {"Authorization": f"Bearer {admin}", "X-Request-Id": "req-42.a"}

    placed = await api.client.post("/graphql", headers=headers, json={
        "query": PLACE, "variables": _order(s.variant, 1), "operationName": "Place"})
    refused = await api.client.post("/graphql", headers={"Authorization": f"Bearer {admin}"},
                                    json={"query": PLACE, "variables": _order(s.variant, 5)})
    invalid = await api.client.post("/graphql", headers={"Authorization": f"Bearer {admin}"},
                                    json={"query": "{ nope }"})
    anonymous = await api.client.post("/graphql", json={"query": PLACE,
                                                        "variables": _order(s.variant, 1)})
    stranger = await api.client.post("/graphql", headers={"Authorization": "Bearer sy_nope"},
                                     json={"query": "{ __typename }"})
    read = await api.client.get("/graphql", params={"query": "{ sellers { edges { cursor } } }"},
                                headers={"Authorization": f"Bearer {admin}",
                                         "Accept": "application/json"})

    assert placed.headers["x-request-id"] == "req-42.a"
    assert [r.status_code for r in (placed, refused, invalid, anonymous, stranger, read)] == \
        [200, 200, 200, 200, 401, 200]
    records = _lines(caplog)
    assert len(records) == 6
    got = [(r.status, r.operation_label, r.outcome, r.code, r.caller)  # type: ignore[attr-defined]
           for r in records]
    caller = records[0].caller  # type: ignore[attr-defined]
    assert re.fullmatch(r'admin:\d+ "Berlin dashboard"', caller), caller
    assert got == [
        (200, "mutation orderCreate", "ok", None, caller),
        (200, "mutation orderCreate", "refused", "INSUFFICIENT_STOCK", caller),
        (200, None, "error", None, caller),  # an invalid document names nothing
        (200, "mutation orderCreate", "refused", "PERMISSION_DENIED", None),
        # (the fast lane has read the document before it meets the token; strawberry not)
        (401, got[4][1], "unauthenticated", None, None),
        (200, "query sellers", "ok", None, caller),
    ]
    assert records[0].operation == "Place"  # type: ignore[attr-defined]
    assert records[0].request_id == "req-42.a"  # type: ignore[attr-defined]
    # every other request got an id of its own, echoed to the client
    made = [r.request_id for r in records[1:]]  # type: ignore[attr-defined]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made) and len(set(made)) == 5
    assert [refused.headers["x-request-id"], read.headers["x-request-id"]] == \
        [made[0], made[4]]
    assert all(r.duration_ms >= 0 for r in records)  # type: ignore[attr-defined]
    assert "mutation orderCreate refused INSUFFICIENT_STOCK" in records[1].getMessage()


async def test_a_request_id_that_is_not_one_is_replaced(api: Api) -> None:
    for bad in ("has space", "x" * 129, "ünïcode"):
        response = await api.client.post("/graphql", json={"query": "{ __typename }"},
                                          headers={"X-Request-Id": bad.encode()})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), bad
    healthz = await api.client.get("/healthz", headers={"X-Request-Id": "probe-1"})
    assert healthz.headers["x-request-id"] == "probe-1"


def test_serve_logs_json_lines_with_the_request_id(tmp_path: Any) -> None:
    """A real `stockyard serve` with STOCKYARD_LOG_FORMAT=json: each stderr line is one JSON
    object; the access line has the fields, the request id included."""
    env = cli_env(tmp_path) | {"STOCKYARD_LOG_FORMAT": "json"}
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            wait_until_healthy(port, time.monotonic() + 30)
            answer = httpx.post(f"http://127.0.0.1:{port}/graphql",
                                json={"query": "query Hello { __typename }"},
                                headers={"X-Request-Id": "json-1"})
            assert answer.headers["x-request-id"] == "json-1"
            httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{ nope }"},
                       headers={"X-Request-Id": "json-2"})
            deadline = time.monotonic() + 10
            while log_path.read_bytes().count(b"json-2") < 2:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        finally:
            server.terminate()
            server.wait(20)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    [access] = [x for x in lines if x.get("request_id") == "json-1"]
    assert access["logger"] == "stockyard.access" and access["level"] == "info"
    assert (access["method"], access["path"], access["status"], access["operation"],
            access["operation_label"], access["outcome"]) == \
        ("POST", "/graphql", 200, "Hello", "query __typename", "ok")
    assert access["duration_ms"] >= 0 and access["timestamp"].endswith("Z")
    # a client's mistake logged while serving it: below ERROR, no traceback, its request id
    [mistake] = [x for x in lines if x.get("request_id") == "json-2"
                 and x["logger"] == "stockyard.graphql"]
    assert mistake["level"] == "info" and "exception" not in mistake
    assert "nope" in mistake["event"]


def test_text_lines_carry_the_same_time_as_the_standard_formatter() -> None:
    from api.observe import TEXT_FORMAT, SecondFormatter

    plain, cached = logging.Formatter(TEXT_FORMAT), SecondFormatter(TEXT_FORMAT)
    for created in (1_800_000_000.001, 1_800_000_000.999, 1_800_000_001.0, 1_800_000_000.5,
                    1_800_003_600.25):
        record = logging.LogRecord("stockyard.access", logging.INFO, __file__, 1, "x %s",
                                   ("y",), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        record.request_id = "r"
        assert cached.format(record) == plain.format(record)
