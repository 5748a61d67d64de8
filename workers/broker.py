"""The dramatiq broker chosen by settings: Redis, RabbitMQ, or in-process (embedded)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

from domain.settings import Settings


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url
    if url is None:
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
    elif url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url)
    elif url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    else:
        raise ValueError(f"STOCKYARD_BROKER_URL must be redis:// or amqp://, got {url!r}")
    dramatiq.set_broker(broker)
    return broker


def start_embedded_worker(broker: dramatiq.Broker) -> dramatiq.Worker | None:
    """With no external broker, run the actors in this process."""
    if not isinstance(broker, StubBroker):
        return None
    # a slow channel holds one thread for up to its timeout: the others keep pushing
    worker = dramatiq.Worker(broker, worker_threads=8)
    worker.start()
    return worker
