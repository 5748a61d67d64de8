"""Committed stock changes, coalesced: one message per short window, not one per order.

A hot SKU changes hundreds of times a second; a sales channel needs its latest figure,
once, within seconds. Publishing costs the request thread only a lock and a set update;
a background thread sends the union of the variant ids every `window` seconds. A send
that fails (broker down) is logged, never raised into the request that committed; that
message is lost, so the sales-channel sync must also reconcile on a timer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from domain.events import Event, StockChanged

log = logging.getLogger("stockyard.workers")

WINDOW = 0.05  # seconds


class Coalescer:
    """A `Publish` callable that batches StockChanged variant ids for `send`."""

    def __init__(self, send: Callable[[list[int]], None], window: float = WINDOW) -> None:
        self._send = send
        self._window = window
        self._pending: set[int] = set()
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def __call__(self, event: Event) -> None:
        if not isinstance(event, StockChanged) or not event.variant_ids:
            return
        with self._wake:
            closed = self._closed
            if not closed:
                self._pending.update(event.variant_ids)
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="stock-events",
                                                    daemon=True)
                    self._thread.start()
                self._wake.notify()
        if closed:  # a request finishing during shutdown: send it now, in its thread
            self._deliver(sorted(set(event.variant_ids)))

    def flush(self) -> None:
        """Send what is pending now, in the calling thread."""
        with self._wake:
            batch, self._pending = self._pending, set()
        if batch:
            self._deliver(sorted(batch))

    def close(self) -> None:
        """Send what is pending and stop the background thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                # let the window fill: later changes of the same variants ride along
                self._wake.wait_for(lambda: self._closed, self._window)
                batch, self._pending = self._pending, set()
            if batch:
                self._deliver(sorted(batch))

    def _deliver(self, variant_ids: list[int]) -> None:
        try:
            self._send(variant_ids)
        except Exception:
            log.exception("stock event for %d variants not sent", len(variant_ids))
