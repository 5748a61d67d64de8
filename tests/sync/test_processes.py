"""The sync as a user runs it: `stockyard serve` alone (embedded), and with Redis plus
`stockyard worker`; a server killed -9 with pushes pending delivers them after a restart."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from domain.models import Role
from domain.services import tokens
from tests.api.test_metrics import value
from tests.commands import STOCKYARD, free_port, wait_until_healthy
from tests.conftest import Database
from tests.factories import gid, shop
from tests.receiver import Receiver, receiving
from tests.workers.support import PrivateRedis, place_order, private_redis, redis_server_missing


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_healthy(port, time.monotonic() + 30)
    return server


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _env(db: Database, broker: str | None = None) -> dict[str, str]:
    env = dict(os.environ, STOCKYARD_DATABASE_URL=db.url)
    env.pop("STOCKYARD_BROKER_URL", None)
    if broker is not None:
        env["STOCKYARD_BROKER_URL"] = broker
    return env


def _channel(client: httpx.Client, token: str, seller: int, receiver: Receiver,
             sku: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    created = client.post("/graphql", headers=headers, json={"query": """
        mutation($input: SalesChannelCreateInput!) { salesChannelCreate(input: $input) {
          salesChannel { id } errors { code message } } }""", "variables": {"input": {
        "sellerId": gid("Seller", seller), "name": "Shop", "endpointUrl": receiver.url,
        "secret": receiver.secret}}}).json()["data"]["salesChannelCreate"]
    assert created["errors"] == [], created
    channel = str(created["salesChannel"]["id"])
    listed = client.post("/graphql", headers=headers, json={"query": """
        mutation($c: ID!, $l: [ListingInput!]!) { listingsUpsert(channelId: $c, listings: $l)
          { errors { code } } }""", "variables": {"c": channel, "l": [
        {"externalId": "L1", "sku": sku}]}}).json()["data"]["listingsUpsert"]
    assert listed["errors"] == [], listed
    return channel


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def _sku(db: Database, variant: int) -> str:
    return str(db.scalar("SELECT sku FROM product_variant WHERE id = :v", v=variant))


def test_serve_alone_pushes_every_order_to_the_channel(db: Database, receiver: Receiver) -> None:
    s = shop(db, stock1=10)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    server = _serve(_env(db), port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            _channel(client, token, s.seller, receiver, _sku(db, s.variant))
            receiver.wait_for({"L1": 10})
            place_order(client, token, s.variant)
            receiver.wait_for({"L1": 9})
    finally:
        _stop(server)
    assert all(r.signed for r in receiver.requests)


def test_a_server_killed_with_pushes_pending_delivers_them_after_a_restart(
        db: Database, receiver: Receiver) -> None:
    s = shop(db, stock1=10)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db)
    server = _serve(env, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            _channel(client, token, s.seller, receiver, _sku(db, s.variant))
            receiver.wait_for({"L1": 10})
            receiver.answer(503, times=1_000)  # the store is down: the push stays pending
            place_order(client, token, s.variant)
            deadline = time.monotonic() + 10
            # the figure is worked out and a push was refused, and no pusher holds the
            # channel: the update is pending in the database only
            while db.scalar("SELECT figure FROM listing") != 9 or db.scalar(
                    "SELECT failures FROM sales_channel") == 0 or db.scalar(
                    "SELECT lease_until FROM sales_channel") != 0:
                assert time.monotonic() < deadline, "the new figure was never worked out"
                time.sleep(0.01)
    finally:
        server.kill()  # SIGKILL: no shutdown, no last round
        server.wait(10)
    assert receiver.shown["L1"][0] == 10  # the receiver lacked that version at the kill
    assert all(u["available"] == 10 for r in receiver.requests if r.status < 300
               for u in r.body["updates"])

    with receiver.lock:
        receiver.script.clear()  # the store is back
    server = _serve(env, port)
    try:
        receiver.wait_for({"L1": 9}, timeout=20)
    finally:
        _stop(server)
    assert receiver.went_back == []


@pytest.fixture
def redis_up() -> Iterator[PrivateRedis]:
    missing = redis_server_missing()
    if missing:
        pytest.skip(f"REDIS SERVER MISSING: {missing}")
    for server in private_redis(free_port()):
        server.start()
        yield server


@pytest.mark.broker
def test_with_redis_the_worker_process_pushes(db: Database, receiver: Receiver,
                                              redis_up: PrivateRedis) -> None:
    s = shop(db, stock1=10)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db, redis_up.url)
    server = _serve(env, port)
    metrics_port = free_port()  # the worker's own /metrics
    worker = subprocess.Popen([*STOCKYARD, "worker"],
                              env=env | {"STOCKYARD_METRICS_PORT": str(metrics_port)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            channel = _channel(client, token, s.seller, receiver, _sku(db, s.variant))
            receiver.wait_for({"L1": 10}, timeout=30)
            place_order(client, token, s.variant)
            receiver.wait_for({"L1": 9})
        # the pushes were the worker's: its metrics count them, and the lag of the order's
        page = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert value(page, "stockyard_channel_pushes_total", channel=channel, result="ok") >= 2
        assert value(page, "stockyard_channel_sync_lag_seconds_count", channel=channel) >= 1
        assert value(page, "stockyard_channel_pending_updates", channel=channel,
                     name="Shop") == 0
    finally:
        _stop(server)
        _stop(worker)


def _listings(client: httpx.Client, token: str, channel: str, sku: str, count: int) -> None:
    for start in range(0, count, 1_000):
        listed = client.post("/graphql", headers={"Authorization": f"Bearer {token}"}, json={
            "query": """mutation($c: ID!, $l: [ListingInput!]!) {
                listingsUpsert(channelId: $c, listings: $l) { errors { code } } }""",
            "variables": {"c": channel, "l": [{"externalId": f"M{i}", "sku": sku}
                                              for i in range(start, min(count, start + 1_000))]},
        }).json()["data"]["listingsUpsert"]
        assert listed["errors"] == [], listed


ARRIVAL_JITTER = 0.05  # seconds: requests sent 1/3 s apart may arrive a little closer


def _busiest_second(times: list[float]) -> int:
    """The most requests that arrived within any one second (less the jitter of arrival:
    at 3 a second the 1st and the 4th request are sent exactly 1 s apart, and a first
    one a millisecond late made 4 in one second)."""
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u - t < 1.0 - ARRIVAL_JITTER)
               for i, t in enumerate(times))


@pytest.mark.broker
def test_two_workers_together_keep_a_channels_request_rate(
        db: Database, receiver: Receiver, redis_up: PrivateRedis) -> None:
    s = shop(db, stock1=10)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db, redis_up.url)
    server = _serve(env, port)
    workers = [subprocess.Popen([*STOCKYARD, "worker"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            channel = _channel(client, token, s.seller, receiver, _sku(db, s.variant))
            updated = client.post("/graphql", headers={"Authorization": f"Bearer {token}"},
                                  json={"query": """mutation($id: ID!) { salesChannelUpdate(
                                      id: $id, input: {maxRequestsPerSecond: 3}) {
                                      errors { code } } }""", "variables": {"id": channel}})
            assert updated.json()["data"]["salesChannelUpdate"]["errors"] == []
            # 1,500 listings more: 7 requests of at most 250 for every change of the figure
            _listings(client, token, channel, _sku(db, s.variant), 1_500)
            receiver.wait_for({"L1": 10, "M1499": 10}, timeout=30)
            for _ in range(2):
                place_order(client, token, s.variant)
                time.sleep(0.3)
            receiver.wait_for({"L1": 8, "M0": 8, "M1499": 8}, timeout=30)
    finally:
        _stop(server)
        for worker in workers:
            _stop(worker)
    assert len(receiver.requests) >= 14
    assert _busiest_second([r.at for r in receiver.requests]) <= 3


@pytest.mark.broker
def test_with_the_broker_down_at_commit_the_push_arrives_once_it_is_back(
        db: Database, receiver: Receiver, redis_up: PrivateRedis) -> None:
    s = shop(db, stock1=10)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    port = free_port()
    env = _env(db, redis_up.url)
    server = _serve(env, port)
    worker = subprocess.Popen([*STOCKYARD, "worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            _channel(client, token, s.seller, receiver, _sku(db, s.variant))
            receiver.wait_for({"L1": 10}, timeout=30)
            redis_up.stop()  # the broker is gone (and with it every queued message)
            place_order(client, token, s.variant)  # the order commits all the same
            time.sleep(1.5)
            assert receiver.shown["L1"][0] == 10
            redis_up.start()
            receiver.wait_for({"L1": 9}, timeout=30)
    finally:
        _stop(server)
        _stop(worker)
    assert receiver.went_back == []
