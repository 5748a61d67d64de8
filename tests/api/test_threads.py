"""The hop into the synchronous core (api/threads.py): results, errors, order, the bound on
calls running at once, context variables, callers that gave up, and stopping."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Awaitable
from typing import Any

import pytest

from api.threads import Threads

REQUEST = contextvars.ContextVar[str]("request")


def run(awaitable: Awaitable[Any]) -> Any:
    """Run on a fresh loop; a hop that never answers fails within 10 s, not hangs."""
    async def bounded() -> Any:
        return await asyncio.wait_for(awaitable, 10)

    return asyncio.run(bounded())


@pytest.fixture
def threads() -> Any:
    pool = Threads(2)
    yield pool
    pool.close()


def test_a_call_answers_off_the_loop_with_its_result_or_its_exception(threads: Threads) -> None:
    async def main() -> None:
        assert await threads.run(threading.get_ident) != threading.get_ident()
        with pytest.raises(ZeroDivisionError):
            await threads.run(lambda: 1 // 0)

        def stop() -> None:
            raise StopIteration  # an asyncio future refuses this one as such

        with pytest.raises(RuntimeError, match="StopIteration"):
            await threads.run(stop)

        assert await threads.run(lambda: "still serving") == "still serving"

    run(main())


def test_a_call_sees_its_callers_context_variables(threads: Threads) -> None:
    async def call_as(name: str) -> str:
        REQUEST.set(name)
        return await threads.run(REQUEST.get)

    async def main() -> list[str]:
        return list(await asyncio.gather(call_as("a"), call_as("b")))

    assert run(main()) == ["a", "b"]


def test_calls_start_in_the_order_they_came() -> None:
    one = Threads(1)
    started: list[int] = []

    async def main() -> None:
        await asyncio.gather(*(one.run(lambda n=n: started.append(n)) for n in range(12)))

    try:
        run(main())
    finally:
        one.close()

    assert started == list(range(12))


def test_no_more_calls_run_at_once_than_there_are_threads() -> None:
    three = Threads(3)
    running, most = 0, 0
    lock = threading.Lock()

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(three.run(call) for _ in range(12)))

    try:
        run(main())
    finally:
        three.close()

    assert most == 3


def test_a_call_whose_caller_gave_up_before_it_started_does_not_run() -> None:
    one = Threads(1)
    release, ran = threading.Event(), []

    async def main() -> None:
        busy = asyncio.ensure_future(one.run(release.wait))
        await asyncio.sleep(0.05)  # the only thread is taken
        waiting = asyncio.ensure_future(one.run(lambda: ran.append("late")))
        await asyncio.sleep(0)
        waiting.cancel()
        release.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await one.run(lambda: "next") == "next"

    try:
        run(main())
    finally:
        one.close()

    assert ran == []


def test_a_loop_closed_under_a_running_call_leaves_the_thread_serving() -> None:
    one = Threads(1)
    release = threading.Event()

    async def leave_early() -> None:
        call = asyncio.ensure_future(one.run(release.wait))
        await asyncio.sleep(0.05)
        call.cancel()

    try:
        run(leave_early())  # that loop is closed now; the call still runs
        release.set()

        assert run(one.run(lambda: "served")) == "served"
    finally:
        one.close()


def test_close_waits_for_the_running_calls_then_stops_the_threads() -> None:
    two = Threads(2)
    done: list[int] = []
    ran_on: list[threading.Thread] = []

    def slow(n: int) -> int:
        ran_on.append(threading.current_thread())
        time.sleep(0.05)
        done.append(n)
        return n

    async def main() -> list[int]:
        calls = [asyncio.ensure_future(two.run(lambda n=n: slow(n))) for n in range(2)]
        await asyncio.sleep(0.01)  # both are running
        await asyncio.to_thread(two.close)  # as the app's lifespan does
        assert len(set(ran_on)) == 2 and not any(t.is_alive() for t in ran_on)
        return list(await asyncio.gather(*calls))

    assert run(main()) == [0, 1]
    assert sorted(done) == [0, 1]
    with pytest.raises(RuntimeError, match="closed"):
        run(two.run(lambda: None))
