"""The event loop's hop into the synchronous core: threads taking calls, in order, from
one queue.

anyio's `to_thread.run_sync` cost 105-190 µs of CPU per call here (sniffio's lookup, a
cancel scope, a capacity limiter, a queue and an idle timer per worker thread); this hop
costs 5-70 µs: one queue written in C, and the result handed back to the loop with
`call_soon_threadsafe`. The number of threads bounds the services running at once. More
calls wait in the queue, first come first served, instead of as threads fighting for the
GIL. As with anyio, a call runs in a copy of the caller's context variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

_Call = tuple[contextvars.Context, Callable[[], Any], "asyncio.Future[Any]"]


class Threads:
    """`size` daemon threads, started on first use; `await run(fn)` runs `fn()` on one.

    Not for a process forked after the first call: its threads stay in the parent (the
    server spawns its workers).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("at least one thread")
        self.size = size
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    async def run(self, fn: Callable[[], R]) -> R:
        """`fn()`'s result or exception.

        A call whose caller is cancelled before a thread takes it does not run; one already
        running finishes (a service is one transaction), and its result is dropped. anyio
        made the cancelled caller wait for that end; here it leaves at once.
        """
        if len(self._threads) != self.size:
            self._start()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._calls.put((contextvars.copy_context(), fn, future))
        return await future

    def close(self, timeout: float = 30.0) -> None:
        """Let the threads finish the calls already queued, then stop them."""
        with self._lock:
            self._closed, threads, self._threads = True, self._threads, []
            for _ in threads:
                self._calls.put(None)
        for thread in threads:
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the service threads are closed")
            while len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, name="stockyard-service",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        calls = self._calls
        while (call := calls.get()) is not None:
            context, fn, future = call
            if not future.cancelled():
                try:
                    result = context.run(fn)
                except BaseException as exc:  # the caller gets it, as anyio's did
                    _hand_back(future, _fail, exc)
                else:
                    _hand_back(future, _succeed, result)
                    result = None
            # an idle thread holds no request's objects (a unit of work, a result, a trace)
            call = context = fn = future = None  # type: ignore[assignment]


def _hand_back(future: asyncio.Future[Any], settle: Callable[..., None], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        future.get_loop().call_soon_threadsafe(settle, future, value)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.cancelled():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if future.cancelled():
        return
    if isinstance(exc, StopIteration):  # a future refuses it: the caller would wait forever
        error = RuntimeError("a service raised StopIteration")
        error.__cause__ = exc
        exc = error
    future.set_exception(exc)
