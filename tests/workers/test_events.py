"""Committed stock changes reach the broker; failed ones never do."""

from __future__ import annotations

import os

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from domain.errors import InsufficientStock
from domain.events import Event, StockChanged
from domain.models import OrderType
from domain.services import orders
from domain.settings import Settings
from tests.conftest import Database, service_missing
from tests.factories import ADMIN, shop
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


def _publish_through(broker: dramatiq.Broker) -> None:
    actors.bind(broker)
    actors.stock_changed.send([1, 2])


def test_embedded_broker_runs_the_actor_in_process() -> None:
    broker = make_broker(Settings())
    assert isinstance(broker, StubBroker)
    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.start()
    try:
        _publish_through(broker)
        broker.join(actors.stock_changed.queue_name, fail_fast=True)
    finally:
        worker.stop()


@pytest.mark.broker
@pytest.mark.parametrize(("env_var", "default"), [
    ("STOCKYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    ("STOCKYARD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
])
def test_real_broker_delivers_stock_events(env_var: str, default: str) -> None:
    url = os.environ.get(env_var) or default
    try:
        broker = make_broker(Settings(broker_url=url))
        actors.bind(broker)
        broker.flush_all()  # purges the declared queue: a first real round trip
    except Exception as exc:  # no server answering: skip loudly
        service_missing(f"BROKER DOES NOT ANSWER at {url}: {exc!r:.200}")
    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.start()
    try:
        _publish_through(broker)
        broker.join(actors.stock_changed.queue_name, timeout=20_000)
    finally:
        worker.stop()
        broker.close()
