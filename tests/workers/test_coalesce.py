"""Stock events are coalesced into one message per window, and never fail a request."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import create_engine

from api.app import build_app
from domain.events import StockChanged
from workers.coalesce import Coalescer


class Sink:
    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[list[int]] = []
        self.arrived = threading.Event()
        self._fail = fail_first

    def __call__(self, variant_ids: list[int]) -> None:
        if self._fail:
            self._fail -= 1
            raise ConnectionError("broker down")
        self.batches.append(variant_ids)
        self.arrived.set()


def test_changes_within_a_window_go_out_as_one_sorted_message() -> None:
    sink = Sink()
    publish = Coalescer(sink, window=0.2)
    for ids in [(5, 3), (3,), (9, 1)]:
        publish(StockChanged(ids))
    assert sink.arrived.wait(5)
    publish.close()
    assert sink.batches == [[1, 3, 5, 9]]


def test_later_changes_go_out_in_a_later_message() -> None:
    sink = Sink()
    publish = Coalescer(sink, window=0.01)
    publish(StockChanged((1,)))
    assert sink.arrived.wait(5)
    sink.arrived.clear()
    publish(StockChanged((2,)))
    assert sink.arrived.wait(5)
    publish.close()
    assert sink.batches == [[1], [2]]


def test_close_sends_what_is_pending() -> None:
    sink = Sink()
    publish = Coalescer(sink, window=60)
    publish(StockChanged((7, 8)))
    publish.close()
    assert sink.batches == [[7, 8]]
    publish(StockChanged((9, 9)))  # after close: sent at once, in the publishing thread
    assert sink.batches == [[7, 8], [9]]


def test_a_failed_send_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink(fail_first=1)
    publish = Coalescer(sink, window=60)
    publish(StockChanged((1,)))
    publish.flush()  # the failing send, here in the test's thread: must not raise
    publish.flush()
    publish(StockChanged((2,)))
    publish.flush()
    publish.close()
    assert sink.batches == [[2]]
    assert "not sent" in caplog.text


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_sender_thread_is_replaced() -> None:
    sink = Sink()
    publish = Coalescer(sink, window=0.01)

    def die(_variant_ids: list[int]) -> None:
        raise SystemExit  # not an Exception: it ends the background thread

    publish._send = die
    publish(StockChanged((1,)))
    assert publish._thread is not None
    publish._thread.join(5)
    publish._send = sink
    publish(StockChanged((2,)))
    assert sink.arrived.wait(5)
    publish.close()
    assert sink.batches == [[2]]


def test_the_server_sends_the_last_window_when_it_stops() -> None:
    sink = Sink()
    publish = Coalescer(sink, window=60)
    app = build_app(create_engine("sqlite://"), publish)

    async def serve_briefly() -> None:
        async with app.router.lifespan_context(app):
            publish(StockChanged((4,)))

    asyncio.run(serve_briefly())
    assert sink.batches == [[4]]
