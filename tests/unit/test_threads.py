"""The hop into the synchronous core (api/threads.py): results, errors, the bound on calls
running at once, resizing, and calls whose caller gave up."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from api.threads import Threads


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_a_call_answers_with_its_result_or_its_exception_off_the_loop_thread() -> None:
    threads = Threads(2)

    async def main() -> None:
        loop_thread = threading.get_ident()
        assert await threads.run(threading.get_ident) != loop_thread
        with pytest.raises(ZeroDivisionError):
            await threads.run(lambda: 1 // 0)
        assert await threads.run(lambda: "still serving") == "still serving"

    run(main())


def test_no_more_calls_run_at_once_than_there_are_threads_and_they_start_in_order() -> None:
    threads = Threads(3)
    running, most, started = 0, 0, []
    lock = threading.Lock()

    def call(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            started.append(n)
        time.sleep(0.01)
        with lock:
            running -= 1
        return n

    async def main() -> list[int]:
        return list(await asyncio.gather(*(threads.run(lambda n=n: call(n))
                                           for n in range(12))))

    assert run(main()) == list(range(12))
    assert most == 3
    assert started[:3] == sorted(started[:3]) and sorted(started) == list(range(12))


def test_resizing_changes_how_many_calls_run_at_once() -> None:
    threads = Threads(1)
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

    async def burst() -> int:
        nonlocal most
        most = 0
        await asyncio.gather(*(threads.run(call) for _ in range(8)))
        return most

    assert run(burst()) == 1
    threads.resize(4)
    assert run(burst()) == 4
    threads.resize(2)
    assert run(burst()) <= 2
    with pytest.raises(ValueError):
        threads.resize(0)


def test_a_call_whose_caller_was_cancelled_before_it_started_does_not_run() -> None:
    threads = Threads(1)
    release, ran = threading.Event(), []

    async def main() -> None:
        blocker = asyncio.ensure_future(threads.run(release.wait))
        await asyncio.sleep(0.05)  # the only thread is busy
        waiting = asyncio.ensure_future(threads.run(lambda: ran.append("late")))
        await asyncio.sleep(0)
        waiting.cancel()
        release.set()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await threads.run(lambda: "next") == "next"

    run(main())
    assert ran == []


def test_a_loop_closed_while_its_call_ran_does_not_stop_the_thread() -> None:
    threads = Threads(1)
    release = threading.Event()

    async def leave_early() -> None:
        threads_call = asyncio.ensure_future(threads.run(release.wait))
        await asyncio.sleep(0.05)
        threads_call.cancel()

    run(leave_early())  # its loop is closed now, the call still runs
    release.set()

    async def main() -> object:
        return await threads.run(lambda: "served")

    assert run(main()) == "served"
