"""Stock events are coalesced into one message per window, and never fail a request."""

from __future__ import annotations

import threading

import pytest

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
    with pytest.raises(RuntimeError):
        publish(StockChanged((9,)))


def test_a_failed_send_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink(fail_first=1)
    publish = Coalescer(sink, window=0.01)
    publish(StockChanged((1,)))
    publish.flush()  # the failing send, here in the test's thread: must not raise
    publish(StockChanged((2,)))
    assert sink.arrived.wait(5)
    publish.close()
    assert sink.batches == [[2]]
    assert "not sent" in caplog.text
