"""The event loop's hop into the synchronous core: threads taking calls, in order, from
one queue.

anyio's `to_thread.run_sync` cost 105-190 µs of CPU per call here (sniffio's lookup, a
cancel scope, a capacity limiter, a queue and an idle timer per worker thread); this hop
costs 5-70 µs: one queue written in C, and the result handed back to the loop with
`call_soon_threadsafe`. The number of threads bounds the services running at once. More
calls wait in the queue, first come first served, instead of as threads fighting for the
GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class Threads:
    """A resizable set of daemon threads; `await run(fn)` runs `fn()` on one of them."""

    def __init__(self, size: int) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._size = size  # wanted
        self._running = 0  # started and not told to stop; threads start on first use
        self.resize(size)

    @property
    def size(self) -> int:
        return self._size

    def resize(self, size: int) -> None:
        """The number of threads from the next call on (the surplus stops once free)."""
        if size < 1:
            raise ValueError("at least one thread")
        with self._lock:
            self._size = size
            if self._running:
                self._adjust()

    def _adjust(self) -> None:
        for _ in range(self._running, self._size):
            threading.Thread(target=self._work, name="stockyard-service", daemon=True).start()
        for _ in range(self._size, self._running):
            self._calls.put(None)
        self._running = self._size

    async def run(self, fn: Callable[[], R]) -> R:
        """`fn()`'s result or exception. A call whose caller was cancelled before a thread
        took it does not run; one already running finishes, and its result is dropped."""
        if self._running != self._size:
            with self._lock:
                self._adjust()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._calls.put((fn, future))
        return await future

    def _work(self) -> None:
        calls = self._calls
        while (call := calls.get()) is not None:
            fn, future = call
            if future.cancelled():
                continue
            try:
                result = fn()
            except BaseException as exc:  # the caller gets it, as anyio's did
                _hand_back(future, _fail, exc)
            else:
                _hand_back(future, _succeed, result)


def _hand_back(future: asyncio.Future[Any], settle: Callable[..., None], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        future.get_loop().call_soon_threadsafe(settle, future, value)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.cancelled():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)


DEFAULT = Threads(4)
"""The process's threads for services, started on first use; `build_app` sizes them."""
