"""Nothing committed is lost on the way to the broker: not when the broker is down, not
when the server is killed between the commit and the hand-off."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

import cli
from domain.models import OrderType, Role
from domain.services import orders, tokens
from domain.settings import Settings
from domain.uow import UnitOfWork
from tests.commands import STOCKYARD, free_port, wait_until_healthy
from tests.conftest import Database
from tests.factories import ADMIN, shop
from tests.workers.support import PrivateRedis, place_order, private_redis, redis_server_missing

pytestmark = pytest.mark.broker


@pytest.fixture
def redis_down() -> Iterator[PrivateRedis]:
    """A private Redis, on a free port, not started yet."""
    problem = redis_server_missing()
    if problem:
        pytest.skip(f"SKIPPED, {problem}")
    yield from private_redis(free_port())


def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_broker_down_at_commit_gets_the_change_once_it_is_back(
        db: Database, redis_down: PrivateRedis) -> None:
    s = shop(db)
    relay = cli.make_relay(Settings(database_url=db.url, broker_url=redis_down.url), db.engine)
    relay.start()
    try:
        orders.create(UnitOfWork(db.writer, relay, reader=db.reader), ADMIN,
                      type=OrderType.REGULAR, shipping_country="DE",
                      lines=[orders.LineRequest(s.variant, 1)])
        time.sleep(0.5)  # the relay tries, and fails: nobody listens
        redis_down.start()
        _until(lambda: s.variant in redis_down.queued_variants(), 20,
               "the change never reached the broker once it was back")
    finally:
        relay.close()


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_healthy(port, time.monotonic() + 30)
    return server


def test_a_server_killed_after_the_commit_hands_the_change_on_when_restarted(
        db: Database, redis_down: PrivateRedis) -> None:
    s = shop(db)
    token = tokens.create_token(db.uow(), Role.ADMIN)
    env = dict(os.environ, STOCKYARD_DATABASE_URL=db.url, STOCKYARD_BROKER_URL=redis_down.url)
    port = free_port()

    server = _serve(env, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            place_order(client, token, s.variant)  # committed; the broker is down
    finally:
        server.kill()  # SIGKILL: no shutdown, no last round
        server.wait(10)
    assert db.scalar("SELECT count(*) FROM orders") == 1

    redis_down.start()
    time.sleep(0.3)
    assert redis_down.queued_variants() == set()  # nothing reached it before the kill

    server = _serve(env, port)
    try:
        _until(lambda: s.variant in redis_down.queued_variants(), 20,
               "the restarted server never handed the committed change on")
    finally:
        server.terminate()
        server.wait(20)
