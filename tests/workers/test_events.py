"""Committed stock changes reach the `stock_changed` actor through the app's own path
(`cli.make_relay` -> the relay -> the broker), in process or through a real broker."""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import httpx
import pytest
from dramatiq.brokers.stub import StubBroker

import cli
from api.app import build_app
from domain.errors import InsufficientStock
from domain.events import Event, StockChanged
from domain.models import OrderType, Role
from domain.relay import Relay
from domain.services import orders, tokens
from domain.settings import Settings
from tests.conftest import Database, service_missing
from tests.factories import ADMIN, shop
from tests.workers.support import Processed, order_input
from workers import actors
from workers.broker import make_broker


def test_events_are_published_after_commit_only(db: Database) -> None:
    s = shop(db, stock1=2)
    events: list[Event] = []

    orders.create(db.uow(events), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(s.variant, 2)])
    with pytest.raises(InsufficientStock):
        orders.create(db.uow(events), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                      lines=[orders.LineRequest(s.variant, 1)])

    assert events == [StockChanged((s.variant,))]


def test_bind_binds_every_actor() -> None:
    broker = StubBroker()
    actors.bind(broker)
    assert actors.every_actor(), "no actor found"
    for actor in actors.every_actor():
        assert actor.broker is broker
        assert actor.actor_name in broker.actors
        assert actor.queue_name in broker.get_declared_queues()


def _orders_through_the_app(db: Database, relay: Relay, variants: list[int]) -> None:
    """Serve the app (its lifespan starts and stops the relay) and place one order per
    variant over HTTP."""
    app = build_app(db.engine, relay)
    token = tokens.create_token(db.uow(), Role.ADMIN)

    async def serve() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for variant in variants:
                    body = (await client.post(
                        "/graphql", headers={"Authorization": f"Bearer {token}"},
                        json={"query": "mutation($input: OrderCreateInput!) { orderCreate("
                                       "input: $input) { errors { code } } }",
                              "variables": order_input(variant)})).json()
                    assert body["data"]["orderCreate"]["errors"] == [], body

    asyncio.run(serve())


def test_embedded_broker_runs_the_actor_in_process_for_an_order(db: Database) -> None:
    s = shop(db)
    other = s.world.variant(s.product, stocks={s.w1: 5})
    relay = cli.make_relay(Settings(database_url=db.url), db.engine)
    broker = actors.stock_changed.broker
    assert isinstance(broker, StubBroker)  # no STOCKYARD_BROKER_URL: in process
    broker.add_middleware(processed := Processed())

    _orders_through_the_app(db, relay, [s.variant, other])

    processed.wait_for({s.variant, other})
    assert processed.failed == []


@pytest.fixture(params=[("STOCKYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
                        ("STOCKYARD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")],
                ids=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A real broker's URL, held by this test alone. The queues are the server's own, so
    another run of this test (an xdist worker's, another suite's on the machine) would
    purge this one's messages (flush_all below) or consume them with its own worker: a
    lock file in the system's temp dir makes the runs take turns."""
    env_var, default = request.param
    url = os.environ.get(env_var) or default
    with open(Path(tempfile.gettempdir()) / "stockyard-real-broker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield from _flushed(url)


def _flushed(url: str) -> Iterator[str]:
    try:
        broker = make_broker(Settings(broker_url=url))
        actors.bind(broker)
        broker.flush_all()  # purges the declared queues: a first real round trip
        broker.close()
    except Exception as exc:  # no server answering: skip loudly
        service_missing(f"BROKER DOES NOT ANSWER at {url}: {exc!r:.200}")
    yield url


@pytest.mark.broker
def test_real_broker_delivers_an_orders_variants_to_the_actor(
        db: Database, broker_url: str) -> None:
    s = shop(db)
    other = s.world.variant(s.product, stocks={s.w1: 5})
    relay = cli.make_relay(Settings(database_url=db.url, broker_url=broker_url), db.engine)
    broker = actors.stock_changed.broker
    broker.add_middleware(processed := Processed())
    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.start()
    try:
        _orders_through_the_app(db, relay, [s.variant, other])
        processed.wait_for({s.variant, other})
    finally:
        worker.stop()
        broker.close()
    assert processed.failed == []
