"""The reads planned once, run on the event loop itself (PostgreSQL): a `rows.Reading`'s
statements sent on an idle driver connection with libpq's non-blocking calls and their
answers awaited on its socket, instead of a hop to a service thread.

The hop around a read cost more than the read: a service thread woken, the GIL handed over
and back, the answer handed to the loop (bench/README "The PostgreSQL side of a read, and
reads on the event loop"). The services stay synchronous; only these reads, written once as
readings (domain/rows.py), also run here. Each statement is prepared once per connection,
its parameters typed by the casts in its text (SQLAlchemy's psycopg dialect writes them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from domain.db import LEND_TIMEOUT, DriverConnections, driver_errors
from domain.rows import Reading

T = TypeVar("T")


async def run_on_loop(connection: Any, reading: Reading[T]) -> T:
    """`reading`'s result, each statement it asks for run on `connection` (psycopg's, in
    autocommit, idle, lent to this call alone) without leaving the event loop: sent, then
    awaited on its socket (`_on_loop`). The answers are the tuples `run` gets there, its
    errors SQLAlchemy's too.

    A statement is prepared once per connection (PostgreSQL plans it once there, as
    `driver_connections` have it). Cancelled, or failing below SQL, it closes the
    connection, and asks the server to cancel what may still run on it (`_abandon`).
    """
    try:
        request = next(reading)
        while True:
            sql, values = request
            try:
                with driver_errors(sql, values, connection=connection):
                    found = await _on_loop(connection, sql, values)
            except Exception as exc:
                request = reading.throw(exc)
            else:
                request = reading.send(found)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def one_returned(connections: DriverConnections, *, again: bool = False) -> None:
    """Wait on the event loop until a loan of `connections` ends, when all are lent
    (`DriverConnections.all_lent`); at once if one is free by then. `again`: a waiter woken
    before, which another borrower beat to the connection, waits first in line.

    A reader that found no connection idle took a service thread before, which waited there
    for a loan: under load every other storefront read paid the hop (a fifth of a server's
    CPU samples), and its tail latency. Raises as the thread's wait does after LEND_TIMEOUT.
    """
    waiters = _waiters_of(connections)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    if again:
        waiters.appendleft(ready)
    else:
        waiters.append(ready)
    if not connections.all_lent():  # one ended since the caller looked
        waiters.remove(ready)
        return
    timer = loop.call_later(LEND_TIMEOUT, _expire, ready)
    try:
        await ready
    except asyncio.CancelledError:
        if ready.done() and not ready.cancelled() and ready.exception() is None:
            _wake_one(waiters)  # woken, then cancelled: the turn goes to the next
        raise
    finally:
        timer.cancel()
        with contextlib.suppress(ValueError):
            waiters.remove(ready)


# connections -> this loop's readers waiting for a loan to end (one listener per loop)
_WAITERS: weakref.WeakKeyDictionary[
    DriverConnections, dict[asyncio.AbstractEventLoop, collections.deque[asyncio.Future[None]]]
] = weakref.WeakKeyDictionary()


def _waiters_of(connections: DriverConnections) -> collections.deque[asyncio.Future[None]]:
    loop = asyncio.get_running_loop()
    of_loops = _WAITERS.setdefault(connections, {})
    waiters = of_loops.get(loop)
    if waiters is None:
        waiters = of_loops[loop] = collections.deque()
        loop_thread = threading.get_ident()
        wake = functools.partial(_wake_one, waiters)

        def returned() -> None:  # on the thread whose loan ended
            if not waiters:
                return
            if threading.get_ident() == loop_thread:
                wake()
            else:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(wake)

        connections.listeners.append(returned)
    return waiters


def _expire(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_exception(SQLAlchemyTimeoutError(
            f"no driver connection free within {LEND_TIMEOUT:.0f} s"))


def _wake_one(waiters: collections.deque[asyncio.Future[None]]) -> None:
    while waiters:
        ready = waiters.popleft()
        if not ready.done():
            ready.set_result(None)
            return


_PREPARED_KEPT = 512  # statements prepared per connection; others run unprepared
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_prepared: weakref.WeakKeyDictionary[Any, dict[str, tuple[bytes, tuple[str, ...]]]] = \
    weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=1024)
def _numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """psycopg's `%(name)s` text as PostgreSQL's `$1`..., and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PLACEHOLDER.sub(number, sql).encode(), tuple(names)


async def _on_loop(connection: Any, sql: str, values: Mapping[str, Any]) -> list[Any]:
    from psycopg import adapt, errors, pq

    pgconn = connection.pgconn
    if pgconn.status != pq.ConnStatus.OK or \
            pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise errors.OperationalError("the connection is not idle")
    statements = _prepared.setdefault(connection, {})
    entry = statements.get(sql)
    try:
        if entry is None and len(statements) < _PREPARED_KEPT:
            text, names = _numbered(sql)
            name = b"stockyard_%d" % len(statements)
            pgconn.send_prepare(name, text)
            await _answer(connection, pq.ExecStatus.COMMAND_OK)
            entry = statements[sql] = (name, names)
        transformer = adapt.Transformer(connection)
        text, names = entry if entry is not None else _numbered(sql)
        params = [values[n] for n in names]
        dumped = transformer.dump_sequence(params, [adapt.PyFormat.TEXT] * len(params))
        if entry is not None:
            pgconn.send_query_prepared(entry[0], dumped)
        else:
            pgconn.send_query_params(text, dumped)
        result = await _answer(connection, pq.ExecStatus.TUPLES_OK)
    except BaseException as exc:
        if not isinstance(exc, errors.Error) or pgconn.status != pq.ConnStatus.OK:
            _abandon(connection)  # cancelled mid-query, or broken: not lent again
        raise
    transformer.set_pgresult(result)
    return transformer.load_rows(0, result.ntuples, tuple)


async def _answer(connection: Any, expected: Any) -> Any:
    """The result of the command sent on `connection`'s non-blocking libpq connection,
    awaited on its socket; a failed one raised as psycopg raises it."""
    from psycopg import errors, pq

    pgconn = connection.pgconn
    loop = asyncio.get_running_loop()
    socket = pgconn.socket
    while pgconn.flush():
        await _ready(loop, loop.add_writer, loop.remove_writer, socket)
    last = None
    while True:
        while pgconn.is_busy():
            await _ready(loop, loop.add_reader, loop.remove_reader, socket)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        last = result
    if last is None:
        raise errors.OperationalError(pgconn.get_error_message() or "no answer")
    if last.status != expected:
        if last.status == pq.ExecStatus.FATAL_ERROR:
            raise errors.error_from_result(last, encoding=connection.info.encoding)
        raise errors.InterfaceError(f"unexpected answer {pq.ExecStatus(last.status).name}")
    return last


async def _ready(loop: asyncio.AbstractEventLoop, add: Callable[..., None],
                 remove: Callable[[int], Any], socket: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    add(socket, _settle, ready)
    try:
        await ready
    finally:
        remove(socket)


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _abandon(connection: Any) -> None:
    """Close `connection`, whose statement may still run: the server is asked to cancel it
    first (on a thread of its own: that connects), else the backend would go on until it
    had rows to send."""
    from psycopg import pq

    pgconn = connection.pgconn
    if pgconn.status == pq.ConnStatus.OK and \
            pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
        cancel = pgconn.get_cancel()
        threading.Thread(target=_cancel, args=(cancel,), name="stockyard-cancel",
                         daemon=True).start()
    connection.close()


def _cancel(cancel: Any) -> None:
    with contextlib.suppress(Exception):  # the statement may have ended: nothing to cancel
        cancel.cancel()
