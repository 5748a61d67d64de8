"""The `stockyard` command's operations: schema, migrate's report, a busy port, the worker's
queues, and a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from graphql import (
    build_client_schema,
    build_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    print_schema,
)
from sqlalchemy import insert, select

import cli
from api.app import build_app
from domain.events import Event
from domain.models import Listing, Order, ProductVariant, Stock
from domain.services import channels
from domain.settings import Settings
from tests.commands import STOCKYARD, cli_env, create_token, free_port, wait_until_healthy
from tests.conftest import Database
from tests.factories import gid, shop


def _stockyard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STOCKYARD, *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.anyio
async def test_schema_prints_the_sdl_the_app_serves(tmp_path: Path) -> None:
    printed = _stockyard(cli_env(tmp_path), "schema")
    db = Database("sqlite", f"sqlite:///{tmp_path / 'served.db'}")
    events: list[Event] = []
    app = build_app(db.engine, events.append)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as client:
            answer = await client.post("/graphql", json={"query": get_introspection_query(
                specified_by_url=True, directive_is_repeatable=True,
                input_value_deprecation=True)})
    finally:
        app.state.threads.close()
        db.engine.dispose()

    assert printed.returncode == 0, printed.stderr
    assert answer.status_code == 200 and "errors" not in answer.json()
    sdl = build_schema(printed.stdout)
    assert sdl.mutation_type is not None and "orderCreate" in sdl.mutation_type.fields
    served = build_client_schema(answer.json()["data"])
    assert print_schema(lexicographic_sort_schema(sdl)) == \
        print_schema(lexicographic_sort_schema(served))


def _alembic(database_url: str) -> Config:
    config = Config(os.path.join(cli.HERE, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(cli.HERE, "migrations"))
    config.attributes["database_url"] = database_url
    return config


def test_migrate_says_what_it_did(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    config = _alembic(env["STOCKYARD_DATABASE_URL"])
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    assert head is not None
    older = head
    for _ in range(2):
        revision = scripts.get_revision(older)
        assert revision is not None and isinstance(revision.down_revision, str)
        older = revision.down_revision
    old_env = {**env, "STOCKYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'old.db'}"}
    command.upgrade(_alembic(old_env["STOCKYARD_DATABASE_URL"]), older)

    fresh = _stockyard(env, "migrate")
    again = _stockyard(env, "migrate")
    upgraded = _stockyard(old_env, "migrate")

    assert fresh.stdout == (f"Database {env['STOCKYARD_DATABASE_URL']}: migrated an empty "
                            f"database to {head} (head)\n")
    assert again.stdout == f"Database {env['STOCKYARD_DATABASE_URL']}: already at {head} (head)\n"
    assert upgraded.stdout == (f"Database {old_env['STOCKYARD_DATABASE_URL']}: upgraded "
                               f"{older} -> {head} (head)\n")
    assert [fresh.returncode, again.returncode, upgraded.returncode] == [0, 0, 0]


@pytest.mark.parametrize(("url", "shown"), [
    ("sqlite:///./var/stockyard.db", "sqlite:///./var/stockyard.db"),
    ("postgresql://stock:s3cr%40t@db:5432/stockyard", "postgresql://stock:***@db:5432/stockyard"),
    ("postgresql://stock@db/stockyard?password=s3cret&sslmode=require",
     "postgresql://stock@db/stockyard?password=***&sslmode=require"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("amqp://guest:guest@rabbit:5672/%2F", "amqp://guest:***@rabbit:5672/%2F"),
])
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert cli.shown_url(url) == shown


def test_the_worker_names_the_queues_of_every_actor() -> None:
    from workers import actors

    assert sorted(cli._actor_queues()) == sorted({a.queue_name for a in actors.every_actor()})


def test_the_worker_says_what_it_consumes_before_it_starts(tmp_path: Path) -> None:
    env = {**cli_env(tmp_path), "STOCKYARD_BROKER_URL": f"redis://:s3cret@127.0.0.1:{free_port()}/0",
           "STOCKYARD_METRICS": "off"}
    worker = subprocess.Popen([*STOCKYARD, "worker"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert worker.stdout is not None
        first = worker.stdout.readline()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # its own session: dramatiq's forks too
        worker.wait(timeout=20)

    port = env["STOCKYARD_BROKER_URL"].rsplit(":", 1)[1].split("/")[0]
    assert first == (f"Stockyard worker: broker redis://:***@127.0.0.1:{port}/0, queues sync, "
                     "stock-events, 1 process(es) x 8 threads\n")


HOLD_A_PORT = ("import socket, sys; s = socket.create_server(('127.0.0.1', 0)); "
               "print(s.getsockname()[1], flush=True); sys.stdin.read()")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_a_busy_port_in_one_line(tmp_path: Path, workers: int) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_PORT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        result = _stockyard(cli_env(tmp_path), "serve", "--port", str(port),
                            "--workers", str(workers))
    finally:
        holder.kill()
        holder.wait(timeout=20)

    assert result.returncode == 1
    assert result.stderr == f"error: port {port} on 127.0.0.1 is already in use\n"
    assert result.stdout == ""
    assert not (tmp_path / "cli.db").exists()  # refused before migrating


def _start_request(port: int, token: str, body: bytes) -> socket.socket:
    """A POST /graphql whose headers are sent and whose body is not: it returns once the
    server has handed the request to the app (which answered `100 Continue`)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=60)
    client.sendall(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                   + f"Authorization: Bearer {token}\r\n".encode()
                   + f"Content-Length: {len(body)}\r\n\r\n".encode())
    assert client.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    return client


def _refused_soon(port: int) -> bool:
    """Whether a new connection to the port is refused within 5 seconds."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def _answer(client: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the response, read until the server closes."""
    raw = b""
    while chunk := client.recv(1 << 16):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" not in head.lower()
    return int(head.split()[1]), json.loads(body)


BULK = ("mutation($stocks: [StockBulkUpdateInput!]!) { stockBulkUpdate(stocks: $stocks) "
        "{ count results { stock { quantity } } errors { code } } }")
ORDER = ("mutation($input: OrderCreateInput!) { orderCreate(input: $input) "
         "{ order { id status } errors { code } } }")


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish_and_keeps_unpushed_work(
        tmp_path: Path) -> None:
    env = {**cli_env(tmp_path), "STOCKYARD_SHUTDOWN_SECONDS": "20"}
    db = Database("sqlite", env["STOCKYARD_DATABASE_URL"])
    s = shop(db, stock1=10)
    # a channel nobody answers for: what it should show stays pending
    channel, _ = channels.create_channel(db.uow(), cli.CLI_PRINCIPAL, seller_id=s.seller,
                                         data=channels.ChannelInput(
                                             name="shop",
                                             endpoint_url=f"http://127.0.0.1:{free_port()}/"))
    with db.engine.begin() as conn:
        sku = conn.execute(select(ProductVariant.sku).where(ProductVariant.id == s.variant))\
            .scalar_one()
        conn.execute(insert(ProductVariant), [
            {"product_id": s.product, "seller_id": s.seller, "sku": f"BULK-{i:05d}",
             "track_inventory": True} for i in range(10_000)])
        variants = conn.execute(select(ProductVariant.id).where(
            ProductVariant.sku.like("BULK-%")).order_by(ProductVariant.id)).scalars().all()
    channels.upsert_listings(db.uow(), cli.CLI_PRINCIPAL, channel.id,
                             [channels.ListingInput(external_id="L-1", sku=sku)])
    token = create_token(env, "--role", "admin")
    rows = [{"variantId": gid("ProductVariant", v), "warehouseId": gid("Warehouse", s.w2),
             "quantity": i % 50 + 1} for i, v in enumerate(variants)]
    body = json.dumps({"query": BULK, "variables": {"stocks": rows}}).encode()
    port = free_port()
    server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_healthy(port, time.monotonic() + 60)
        ordered = httpx.post(f"http://127.0.0.1:{port}/graphql", headers={
            "Authorization": f"Bearer {token}"}, timeout=60, json={"query": ORDER, "variables": {
                "input": {"type": "REGULAR", "shippingCountry": "DE",
                          "lines": [{"variantId": gid("ProductVariant", s.variant),
                                     "quantity": 3}]}}}).json()
        in_flight = _start_request(port, token, body)

        server.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        refused = _refused_soon(port)
        in_flight.sendall(body)
        status, answer = _answer(in_flight)
        code = server.wait(timeout=40)
        took = time.monotonic() - stopped_at
    finally:
        if server.poll() is None:
            server.kill()
        stderr = server.communicate()[1]
        db.engine.dispose()

    assert ordered["data"]["orderCreate"]["errors"] == []
    assert refused, "the server still accepted connections after SIGTERM"
    assert status == 200
    bulk = answer["data"]["stockBulkUpdate"]
    assert bulk["errors"] == [] and bulk["count"] == 10_000
    assert [r["stock"]["quantity"] for r in bulk["results"]] == [r["quantity"] for r in rows]
    assert code == 0, stderr
    assert took < 20
    assert "Traceback" not in stderr
    after = Database("sqlite", env["STOCKYARD_DATABASE_URL"])
    try:
        with after.engine.connect() as conn:
            stocked = conn.execute(select(Stock.quantity).where(Stock.warehouse_id == s.w2)
                                   .where(Stock.variant_id.in_(variants))
                                   .order_by(Stock.variant_id)).scalars().all()
            orders = conn.execute(select(Order.status)).scalars().all()
            listing = conn.execute(select(Listing.variant_id, Listing.acked_version)).one()
    finally:
        after.engine.dispose()
    assert stocked == [r["quantity"] for r in rows]
    assert [o.value for o in orders] == ["UNFULFILLED"]
    # never acknowledged: the next process pushes it
    assert listing == (s.variant, None)


@pytest.mark.slow
def test_sigterm_gives_a_stalled_request_the_configured_seconds_then_exits(
        tmp_path: Path) -> None:
    env = {**cli_env(tmp_path), "STOCKYARD_SHUTDOWN_SECONDS": "2"}
    token = create_token(env, "--role", "admin")
    port = free_port()
    server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_healthy(port, time.monotonic() + 60)
        stalled = _start_request(port, token, b'{"query": "{ __typename }"}')

        server.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        code = server.wait(timeout=30)
        took = time.monotonic() - stopped_at
        try:
            left = stalled.recv(100)
        except ConnectionResetError:
            left = b""
    finally:
        if server.poll() is None:
            server.kill()
        stderr = server.communicate()[1]

    assert code == 0, stderr
    assert 2 <= took < 12
    assert left == b"" or left.startswith(b"HTTP/1.1 500 "), left  # cut off, not answered
    assert Settings.from_env({}).shutdown_seconds == 30
