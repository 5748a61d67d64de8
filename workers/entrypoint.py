"""Module `stockyard worker` hands to dramatiq: sets up the broker, then imports the actors."""

from __future__ import annotations

from domain.settings import Settings
from workers.broker import make_broker

broker = make_broker(Settings.from_env())

from workers import actors  # noqa: E402,F401  (actors bind to the broker set just above)
