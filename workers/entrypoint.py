"""Module `stockyard worker` hands to dramatiq: sets up the broker, then imports the actors,
and serves the worker's metrics when `stockyard worker` asked for them."""

from __future__ import annotations

import logging
import os

from domain.metrics import WORKER_METRICS_ENV
from domain.settings import Settings
from workers.broker import make_broker

broker = make_broker(Settings.from_env())

from workers import actors  # noqa: E402,F401  (actors bind to the broker set just above)


def _serve_metrics(address: str) -> None:
    """This process's pushes and deliveries, and the database's state, on /metrics."""
    from prometheus_client import start_http_server

    from domain import metrics
    from domain.db import make_engine

    host, _, port = address.rpartition(":")
    try:
        start_http_server(int(port), addr=host,
                          registry=metrics.registry(make_engine(Settings.from_env())))
    except OSError as exc:  # the port is taken: work on, without metrics
        logging.getLogger("stockyard.worker").error("metrics not served on %s: %s",
                                                    address, exc)


if os.environ.get(WORKER_METRICS_ENV):
    _serve_metrics(os.environ[WORKER_METRICS_ENV])
