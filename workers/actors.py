"""Dramatiq actors. Thin: ids in, a domain service does the work.

Importing this module binds the actors to the broker `workers.broker.make_broker` set up.
"""

from __future__ import annotations

import logging
import sys

import dramatiq

from domain.db import make_engine
from domain.settings import Settings
from domain.sync import Pusher
from domain.webhooks import Deliverer
from workers.delivery import HttpPost

log = logging.getLogger("stockyard.workers")


_pusher: Pusher | None = None
_deliverer: Deliverer | None = None


def use_pusher(pusher: Pusher, deliverer: Deliverer | None = None) -> None:
    """The pusher `push_channel` (and the deliverer `deliver_webhooks`) uses in this
    process (a server's, sharing its engine)."""
    global _pusher, _deliverer
    _pusher = pusher
    _deliverer = deliverer


def _the_pusher() -> Pusher:
    global _pusher
    if _pusher is None:  # a `stockyard worker` process: its own engine
        _pusher = Pusher(make_engine(Settings.from_env()), HttpPost())
    return _pusher


def _the_deliverer() -> Deliverer:
    global _deliverer
    if _deliverer is None:  # a `stockyard worker` process: the pusher's engine and client
        pusher = _the_pusher()
        _deliverer = Deliverer(pusher.engine, pusher.post)
    return _deliverer


@dramatiq.actor(queue_name="sync", max_retries=0)
def push_channel(channel_id: int) -> None:
    """Push what is pending of this channel (domain/sync.py). No retries here: what failed
    stays pending in the database with its next try, and the sweeper sends it again."""
    _the_pusher().push(channel_id)


@dramatiq.actor(queue_name="sync", max_retries=0)
def deliver_webhooks(subscription_id: int) -> None:
    """Deliver what is pending of this webhook subscription (domain/webhooks.py). No
    retries here: a failed event stays pending with the subscription's next try."""
    _the_deliverer().deliver(subscription_id)


@dramatiq.actor(queue_name="stock-events", max_retries=3)
def stock_changed(variant_ids: list[int]) -> None:
    """The available figures of these variants may have changed (the relay of committed
    stock changes, `domain/relay.py`, sends this); sales-channel sync subscribes here."""
    log.debug("stock changed: %s", variant_ids)


def every_actor() -> list[dramatiq.Actor[..., None]]:
    """The actors this module defines."""
    module = sys.modules[__name__]
    return [value for value in vars(module).values() if isinstance(value, dramatiq.Actor)]


def bind(broker: dramatiq.Broker) -> None:
    """Send and run every actor through `broker`. Each actor took the broker that was
    current when this module was first imported; a broker made later needs this."""
    for actor in every_actor():
        if actor.broker is not broker:
            actor.broker = broker
            broker.declare_actor(actor)
