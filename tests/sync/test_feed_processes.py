"""Supplier feeds as a user runs them (API.md "Supplier feeds", "Signed deliveries"):
`stockyard serve` in a child process, SQLite and PostgreSQL. A server killed -9 right
after supplier orders were answered, before its feed followed them, catches up after a
restart (nothing is lost after commit); an external supplier's signed POST /feeds/{id}
reaches the merchant's channel, also across a kill -9."""

from __future__ import annotations

import fcntl
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import quote

import httpx
from sqlalchemy import text

from domain import relay, signing
from domain.models import Role
from domain.services import feeds, tokens
from tests.commands import free_port
from tests.conftest import Database
from tests.factories import ADMIN, World, gid, shop
from tests.receiver import receiving
from tests.sync.test_feeds import _sku
from tests.sync.test_processes import _channel, _env, _serve, _stop
from tests.workers.support import ORDER_CREATE, order_input

CATCH_UP = 10.0  # seconds, a restarted server included


def _level(db: Database, variant: int, warehouse: int) -> int | None:
    value = db.scalar("SELECT quantity FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                      v=variant, w=warehouse)
    return None if value is None else int(value)


def _order(client: httpx.Client, token: str, variant: int, quantity: int) -> None:
    body = client.post("/graphql", json={"query": ORDER_CREATE,
                                         "variables": order_input(variant, quantity)},
                       headers={"Authorization": f"Bearer {token}"}).json()
    assert body["data"]["orderCreate"]["errors"] == [], body


@contextmanager
def _hand_off_stalled(db: Database, row_lock: str, **params: int) -> Iterator[None]:
    """While the block runs, the server hands no committed stock change on. PostgreSQL:
    the test holds `row_lock` (a SELECT ... FOR UPDATE of a row the hand-off must lock),
    so the server's relay waits inside its transaction and is killed there. SQLite (one
    writer for the whole file: a lock would hold up the requests too): the test holds the
    relay's lead, the flock beside the database file that a serving process's relay takes,
    from before the server starts."""
    if db.backend == "postgresql":
        with db.engine.connect() as conn, conn.begin():
            conn.execute(text(row_lock), params)
            yield
        return
    path = relay._lock_path(db.engine, relay.NAME)
    assert path is not None
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # no server runs yet: nothing to wait for
        yield


def _no_push_in_flight(db: Database) -> None:
    """Until no pusher holds a channel (a push acknowledged releases it). A server killed
    holding one leaves the lease for a few seconds (the last test)."""
    _wait("a channel's lease", lambda: db.scalar(
        "SELECT count(*) FROM sales_channel WHERE lease_until <> 0"), 0)


def _waiting_on_a_lock(db: Database) -> None:
    """Until a PostgreSQL transaction of the server waits on the test's lock."""
    _wait("transactions waiting on a lock", lambda: db.scalar(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"), True)


def _wait(what: str, probe: object, expected: object, timeout: float = CATCH_UP) -> None:
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while (now := probe()) != expected:
        assert time.monotonic() < deadline, f"{what} is {now}, not {expected}"
        time.sleep(0.02)


def test_a_server_killed_before_its_feed_followed_catches_up_after_a_restart(
        db: Database) -> None:
    supplier = shop(db, stock1=12, stock2=8)  # the supplier's figure: 20
    merchant = shop(db, stock1=5)
    fed = World(db).variant(merchant.product, sku="M-TENT")
    feed, _ = feeds.create(db.uow(), ADMIN, warehouse_id=merchant.w2, name="Acme dropship",
                           supplier_seller_id=supplier.seller)
    feeds.upsert_items(db.uow(), ADMIN, feed.id,
                       [feeds.ItemInput(fed, _sku(db, supplier.variant))])
    assert _level(db, fed, merchant.w2) == 20  # filled at once
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db)
    server: subprocess.Popen[bytes] | None = None
    with receiving() as receiver:
        try:
            with ExitStack() as stalled:
                if db.backend == "sqlite":  # the relay's lead is held: serve under it
                    stalled.enter_context(_hand_off_stalled(db, ""))
                server = _serve(env, port)
                with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                    _channel(client, token, merchant.seller, receiver, "M-TENT")
                    receiver.wait_for({"L1": 20})
                    _no_push_in_flight(db)
                    if db.backend == "postgresql":  # once the listing has its figure
                        stalled.enter_context(_hand_off_stalled(
                            db, "SELECT id FROM stock WHERE variant_id = :v AND "
                            "warehouse_id = :w FOR UPDATE", v=fed, w=merchant.w2))
                    for quantity in (1, 3, 2, 1, 3, 2):  # 12 units, answered: committed
                        _order(client, token, supplier.variant, quantity)
                if db.backend == "postgresql":  # the server's follow waits on that lock
                    _waiting_on_a_lock(db)
                server.kill()  # SIGKILL: no shutdown, no last round
                server.wait(10)
                assert _level(db, fed, merchant.w2) == 20  # not followed at the kill
        finally:
            if server is not None and server.poll() is None:
                server.kill()
                server.wait(10)
        assert receiver.shown["L1"][0] == 20

        server = _serve(env, port)
        try:
            _wait("the merchant's fed stock", lambda: _level(db, fed, merchant.w2), 8)
            receiver.wait_for({"L1": 8}, timeout=CATCH_UP)
        finally:
            _stop(server)
    assert db.rows("SELECT type, reason, quantity_change FROM stock_movement WHERE "
                   "variant_id = :v ORDER BY id DESC LIMIT 1", v=fed)[0] \
        == ("FEED_IMPORT", "Acme dropship", -12)
    assert db.scalar("SELECT supplier_quantity FROM supplier_feed_item") == 8
    assert receiver.went_back == []
    assert all(r.signed for r in receiver.requests)


def _post(client: httpx.Client, feed: str, secret: str, body: object) -> httpx.Response:
    raw = json.dumps(body).encode()
    return client.post(f"/feeds/{quote(feed, safe='')}", content=raw, headers={
        "content-type": "application/json", **signing.headers(secret, raw)})


def _external(db: Database) -> tuple[int, int, int, str, str]:
    """A merchant (seller, feed warehouse), its variant M-STOVE filled by an external
    feed "Outdoor Co" from the supplier's SKU OC-STOVE: (seller, warehouse, variant,
    feed ID, secret)."""
    merchant = shop(db, stock1=5)
    fed = World(db).variant(merchant.product, sku="M-STOVE")
    secret = signing.new_secret()
    feed, _ = feeds.create(db.uow(), ADMIN, warehouse_id=merchant.w2, name="Outdoor Co",
                           secret=secret)
    feeds.upsert_items(db.uow(), ADMIN, feed.id, [feeds.ItemInput(fed, "OC-STOVE")])
    return merchant.seller, merchant.w2, fed, gid("SupplierFeed", feed.id), secret


def test_an_external_suppliers_post_reaches_the_merchants_channel_across_a_kill(
        db: Database) -> None:
    seller, warehouse, fed, feed_id, secret = _external(db)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db)
    server: subprocess.Popen[bytes] | None = None
    with receiving() as receiver:
        try:
            with ExitStack() as stalled:
                if db.backend == "sqlite":
                    stalled.enter_context(_hand_off_stalled(db, ""))
                server = _serve(env, port)
                with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                    _channel(client, token, seller, receiver, "M-STOVE")
                    receiver.wait_for({"L1": 0})  # matched, no stock yet
                    _no_push_in_flight(db)
                    if db.backend == "postgresql":  # the relay's refresh locks the listing
                        stalled.enter_context(_hand_off_stalled(
                            db, "SELECT id FROM listing FOR UPDATE"))
                    answer = _post(client, feed_id, secret, {"items": [
                        {"sku": "OC-STOVE", "quantity": 7},
                        {"sku": "OC-MYSTERY", "quantity": 2}]})
                    assert answer.status_code == 200, answer.text
                    assert answer.json() == {"unmatched": ["OC-MYSTERY"]}
                if db.backend == "postgresql":
                    _waiting_on_a_lock(db)
                server.kill()  # SIGKILL: no shutdown, no last round
                server.wait(10)
        finally:
            if server is not None and server.poll() is None:
                server.kill()
                server.wait(10)
        assert _level(db, fed, warehouse) == 7  # committed before the answer
        assert receiver.shown["L1"][0] == 0  # not handed on at the kill

        server = _serve(env, port)
        try:
            receiver.wait_for({"L1": 7}, timeout=CATCH_UP)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                answer = _post(client, feed_id, secret,
                               {"items": [{"sku": "OC-STOVE", "quantity": 3}]})
                assert answer.status_code == 200 and answer.json() == {"unmatched": []}
                started = time.monotonic()
                receiver.wait_for({"L1": 3})
                assert time.monotonic() - started < 3.0  # promised within a second
        finally:
            _stop(server)
    assert [tuple(r) for r in db.rows(
        "SELECT type, reason, quantity_change FROM stock_movement WHERE variant_id = :v "
        "ORDER BY id", v=fed)] == [("FEED_IMPORT", "Outdoor Co", 7),
                                   ("FEED_IMPORT", "Outdoor Co", -4)]
    assert receiver.went_back == []
    assert all(r.signed for r in receiver.requests)


def test_a_killed_servers_push_in_flight_is_resumed_soon_after_a_restart(db: Database) -> None:
    """The killed pusher's lease on the channel lapses within seconds (domain/sync.py LEASE,
    renewed while a request is in flight), so the restarted server pushes soon."""
    seller, warehouse, fed, feed_id, secret = _external(db)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db)
    with receiving() as receiver:
        server = _serve(env, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                _channel(client, token, seller, receiver, "M-STOVE")
                receiver.wait_for({"L1": 0})
                receiver.answer(503, delay=2.0)  # the store answers the next push slowly
                answer = _post(client, feed_id, secret,
                               {"items": [{"sku": "OC-STOVE", "quantity": 7}]})
                assert answer.status_code == 200, answer.text
                # the push of 7 reached the store, which takes its time to answer
                _wait("the push in flight", lambda: len(receiver.script), 0)
                assert db.scalar("SELECT lease_until > 0 FROM sales_channel")
        finally:
            server.kill()  # SIGKILL mid-push
            server.wait(10)
        assert _level(db, fed, warehouse) == 7

        server = _serve(env, port)  # the store answers 2xx again from here on
        try:
            receiver.wait_for({"L1": 7}, timeout=5.0)
        finally:
            _stop(server)
