"""Stock webhooks as a user runs them: `stockyard serve` alone, a server killed -9 with
events pending (they arrive after a restart), and Redis plus `stockyard worker`."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from domain.models import Role
from domain.services import tokens
from tests.commands import STOCKYARD, free_port
from tests.conftest import Database
from tests.factories import gid, shop
from tests.receiver import Receiver, receiving
from tests.sync.test_processes import _env, _serve, _stop, redis_up  # noqa: F401 (fixture)
from tests.workers.support import PrivateRedis, place_order


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def _subscribe(client: httpx.Client, token: str, seller: int, receiver: Receiver) -> str:
    created = client.post("/graphql", headers={"Authorization": f"Bearer {token}"}, json={
        "query": """mutation($input: WebhookSubscriptionCreateInput!) {
          webhookSubscriptionCreate(input: $input) {
            webhookSubscription { id status } secret errors { code message } } }""",
        "variables": {"input": {"sellerId": gid("Seller", seller), "url": receiver.url,
                                "events": ["OUT_OF_STOCK", "STOCK_UPDATED"],
                                "secret": receiver.secret}}}).json()
    payload = created["data"]["webhookSubscriptionCreate"]
    assert payload["errors"] == [] and payload["secret"] == receiver.secret, payload
    return str(payload["webhookSubscription"]["id"])


def _wait_for(receiver: Receiver, kind: str, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        with receiver.lock:
            found = [r.body for r in receiver.requests
                     if 200 <= r.status < 300 and r.signed and r.body.get("type") == kind]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no {kind} arrived"
        time.sleep(0.02)


def test_serve_alone_delivers_the_order_that_empties_a_shelf(db: Database,
                                                             receiver: Receiver) -> None:
    s = shop(db, stock1=1)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    server = _serve(_env(db), port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            _subscribe(client, token, s.seller, receiver)
            place_order(client, token, s.variant)
            event = _wait_for(receiver, "stock.out_of_stock")
    finally:
        _stop(server)
    assert event["data"]["quantityAvailable"] == 0  # type: ignore[index]


def test_a_server_killed_with_events_pending_delivers_them_after_a_restart(
        db: Database, receiver: Receiver) -> None:
    s = shop(db, stock1=1)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db)
    server = _serve(env, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            _subscribe(client, token, s.seller, receiver)
            receiver.answer(503, times=1_000)  # the receiver is down
            place_order(client, token, s.variant)
            deadline = time.monotonic() + 10
            # recorded, tried and refused, and no deliverer holds it: pending in the
            # database only
            while db.scalar("SELECT count(*) FROM webhook_delivery") == 0 or db.scalar(
                    "SELECT failures FROM webhook_subscription") == 0 or db.scalar(
                    "SELECT lease_until FROM webhook_subscription") != 0:
                assert time.monotonic() < deadline, "the event was never tried"
                time.sleep(0.01)
    finally:
        server.kill()  # SIGKILL: no shutdown, no last round
        server.wait(10)
    assert not [r for r in receiver.requests if r.status < 300]

    with receiver.lock:
        receiver.script.clear()  # the receiver is back
    server = _serve(env, port)
    try:
        # the first retry comes 5 s (+-10%) after the failed try
        event = _wait_for(receiver, "stock.out_of_stock", timeout=20)
    finally:
        _stop(server)
    assert event["data"]["quantityAvailable"] == 0  # type: ignore[index]
    assert db.scalar("SELECT count(*) FROM webhook_delivery") == 0


@pytest.mark.broker
def test_with_redis_the_worker_process_delivers(db: Database, receiver: Receiver,
                                                redis_up: PrivateRedis) -> None:  # noqa: F811
    s = shop(db, stock1=1)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db, redis_up.url)
    server = _serve(env, port)
    worker = subprocess.Popen([*STOCKYARD, "worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            _subscribe(client, token, s.seller, receiver)
            place_order(client, token, s.variant)
            _wait_for(receiver, "stock.out_of_stock", timeout=30)
    finally:
        _stop(server)
        _stop(worker)
