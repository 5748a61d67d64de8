"""Dramatiq actors. Thin: ids in, a domain service does the work.

Importing this module binds the actors to the broker `workers.broker.make_broker` set up.
"""

from __future__ import annotations

import logging

import dramatiq

log = logging.getLogger("stockyard.workers")


@dramatiq.actor(queue_name="stock-events", max_retries=3)
def stock_changed(variant_ids: list[int]) -> None:
    """Stock of these variants changed; sales-channel sync subscribes here (next issue)."""
    log.debug("stock changed: %s", variant_ids)


def bind(broker: dramatiq.Broker) -> None:
    """Send and run the actors through `broker`. Each actor took the broker that was
    current when this module was first imported; a broker made later needs this."""
    if stock_changed.broker is not broker:
        stock_changed.broker = broker
        broker.declare_actor(stock_changed)
