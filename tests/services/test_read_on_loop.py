"""loop_reads.run_on_loop: the planned-once reads run on the event loop itself (PostgreSQL), a
statement sent and its answer awaited on the connection's socket, instead of a thread hop."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import sessionmaker

from api import loop_reads
from api.context import NOT_NOW, NotNow, Services
from api.loaders import ROW_READS, children_and_ahead
from api.threads import Threads
from domain import rows
from domain.db import DriverConnections, driver_connections
from domain.models import ProductVariant
from domain.rows import DriverRead, Reading
from domain.services import reads
from tests.conftest import Database
from tests.factories import shop

pytestmark = pytest.mark.anyio


def _connections(pg_db: Database, limit: int = 2) -> DriverConnections:
    return DriverConnections(driver_connections(pg_db.engine).factory, limit)


def _warm(connections: DriverConnections) -> None:
    """One idle connection: `lend_now` never makes one."""
    with connections.lend():
        pass


async def test_reads_on_the_loop_answer_as_on_a_thread(pg_db: Database) -> None:
    s = shop(pg_db, stock1=7, stock2=5)
    odd = s.world.variant(s.product, sku='a"b\\c,{NULL}', stocks={s.w1: 3})
    connections = _connections(pg_db)
    _warm(connections)
    asks: list[tuple[DriverRead[..., Any], tuple[Any, ...]]] = [
        (ROW_READS["variant"], ([s.variant, odd, 10**9],)),
        (ROW_READS["stock"], ([1, 2, 3],)),
        (reads.availability, ([(s.variant, "DE"), (odd, "DE"), (s.variant, None)],)),
        (reads.page, (ProductVariant, reads.PageQuery(
            first=5, skus=('a"b\\c,{NULL}', "SKU-1", "absent"), available_in="DE"))),
        (children_and_ahead, ("stocks_of_variant", [s.variant, odd],
                              [lambda stocks: {"warehouse": [t.warehouse_id for t in stocks]}])),
    ]
    for read, args in asks:
        with connections.lend() as raw:
            expected = read(rows.Driver(raw, "postgresql"), *args)
        for _ in range(2):  # prepared on the first, run prepared on the second
            with connections.lend_now() as raw:
                assert raw is not None
                found = await loop_reads.run_on_loop(raw, read.reading("postgresql", *args))
            assert found == expected, read
            assert [type(r) for r in _flat(found)] == [type(r) for r in _flat(expected)]
    with connections.lend_now() as raw:
        prepared = raw.execute("SELECT count(*) FROM pg_prepared_statements "
                               "WHERE name LIKE 'stockyard_%'").fetchone()[0]
    assert 0 < prepared == len(loop_reads._prepared[raw])  # each statement prepared once
    connections.close()


def _flat(found: Any) -> list[Any]:
    """Every value in `found`, rows' values included, to compare their types."""
    if isinstance(found, (list, tuple)):
        return [item for each in found for item in _flat(each)]
    if isinstance(found, dict):
        return [item for each in found.values() for item in _flat(each)]
    return [found]


async def test_a_failed_statement_is_raised_into_the_reading_and_the_connection_kept(
        pg_db: Database) -> None:
    connections = _connections(pg_db)
    _warm(connections)

    def reading(dialect: str) -> Reading[list[Any]]:
        try:
            yield ("SELECT no_such_column FROM seller", {})
        except ProgrammingError as exc:  # SQLAlchemy's, as the thread's reads raise it
            caught.append(exc)
        found = yield ("SELECT %(n)s::INTEGER + 1, '100%%'", {"n": 41})
        return list(found)

    caught: list[BaseException] = []
    with connections.lend_now() as raw:
        assert await loop_reads.run_on_loop(raw, reading("postgresql")) == [(42, "100%")]
    assert len(caught) == 1 and "no_such_column" in str(caught[0])
    with connections.lend_now() as again:
        assert again is raw and not raw.closed  # still idle: lent again
    with connections.lend() as raw, pytest.raises(ProgrammingError):  # on a thread, the same
        rows.run(rows.Driver(raw, "postgresql"), reading_failing())
    connections.close()


def reading_failing() -> Reading[Any]:
    yield ("SELECT no_such_column FROM seller", {})


async def test_a_read_cancelled_on_the_loop_closes_its_connection(pg_db: Database) -> None:
    connections = _connections(pg_db)
    with connections.lend(), connections.lend():  # two idle
        pass

    def slow(dialect: str) -> Reading[Any]:
        yield ("SELECT pg_sleep(%(s)s::FLOAT)", {"s": 5})

    async def read() -> None:
        with connections.lend_now() as raw:
            lent.append(raw)
            await loop_reads.run_on_loop(raw, slow("postgresql"))

    lent: list[Any] = []
    task = asyncio.ensure_future(read())
    await asyncio.sleep(0.2)
    pid = lent[0].info.backend_pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lent[0].closed  # a query may still run on it: not lent again
    for _ in range(50):  # and the server was asked to cancel it
        if not pg_db.scalar(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} "
                            "AND state = 'active'"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the cancelled read still runs on the server")
    assert connections.idle() == 1  # the others stay
    with connections.lend_now() as other:
        assert other is not None and other is not lent[0]
        assert other.execute("SELECT 1").fetchone() == (1,)
    connections.close()


async def test_a_broken_connection_on_the_loop_is_raised_and_not_lent_again(
        pg_db: Database) -> None:
    connections = _connections(pg_db)
    with connections.lend() as first, connections.lend() as second:  # two idle
        pass
    with connections.lend_now() as raw:
        pid = raw.info.backend_pid
        with pg_db.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(OperationalError):
            await loop_reads.run_on_loop(raw, reads.rows_by_id.reading(
                "postgresql", ProductVariant, [1]))
    assert raw.closed and connections.idle() == 0  # the other one was closed too
    assert first.closed and second.closed


async def test_lend_now_never_waits_nor_connects(pg_db: Database) -> None:
    connections = _connections(pg_db, limit=1)
    with connections.lend_now() as raw:
        assert raw is None  # none idle: the caller takes a thread, which makes one
    _warm(connections)
    with connections.lend() as busy, connections.lend_now() as raw:
        assert busy is not None and raw is None  # all lent: not waited for
    with connections.lend_now() as raw:
        assert raw is busy
    connections.close()


async def _held(connections: DriverConnections, seconds: float) -> None:
    """A loan held for `seconds` on a thread of its own, as a service's."""
    def hold() -> None:
        with connections.lend():
            lent.set()
            time.sleep(seconds)

    lent = threading.Event()
    threading.Thread(target=hold, daemon=True).start()
    await asyncio.to_thread(lent.wait)


async def test_a_reader_on_the_loop_waits_there_until_a_loan_ends(pg_db: Database) -> None:
    connections = _connections(pg_db, limit=1)
    _warm(connections)
    await _held(connections, 0.3)
    assert connections.all_lent()
    started = time.monotonic()
    await loop_reads.one_returned(connections)  # woken from the thread that lent
    assert time.monotonic() - started >= 0.2 and not connections.all_lent()
    with connections.lend_now() as raw:
        assert raw is not None
        assert await loop_reads.run_on_loop(raw, reads.rows_by_id.reading(
            "postgresql", ProductVariant, [10**9])) == [None]
    await loop_reads.one_returned(connections)  # none lent: at once
    connections.close()


async def test_readers_waiting_on_the_loop_are_woken_one_per_loan_in_turn(
        pg_db: Database) -> None:
    connections = _connections(pg_db, limit=1)
    _warm(connections)
    order: list[int] = []

    async def reader(n: int) -> None:
        waited = False
        while True:
            with connections.lend_now() as raw:
                if raw is not None:
                    order.append(n)
                    await asyncio.sleep(0.01)  # a loan ended on the loop wakes the next
                    return
            await loop_reads.one_returned(connections, again=waited)
            waited = True

    with connections.lend_now() as busy:
        readers = [asyncio.ensure_future(reader(n)) for n in range(3)]
        await asyncio.sleep(0.05)
        assert order == [] and busy is not None
    await asyncio.wait_for(asyncio.gather(*readers), 5)
    assert order == [0, 1, 2]
    connections.close()


async def test_a_waiter_woken_then_cancelled_passes_its_turn_on(pg_db: Database) -> None:
    connections = _connections(pg_db, limit=1)
    _warm(connections)
    with connections.lend_now():
        first = asyncio.ensure_future(loop_reads.one_returned(connections))
        second = asyncio.ensure_future(loop_reads.one_returned(connections))
        await asyncio.sleep(0.05)
    first.cancel()  # woken by the loan's end, cancelled before it ran
    await asyncio.wait_for(second, 5)
    assert first.cancelled()
    connections.close()


async def test_a_reader_waits_on_the_loop_no_longer_than_a_thread_would(
        pg_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_reads, "LEND_TIMEOUT", 0.1)
    connections = _connections(pg_db, limit=1)
    _warm(connections)
    started = time.monotonic()
    with connections.lend_now() as raw:
        assert raw is not None and connections.all_lent()
        with pytest.raises(SQLAlchemyTimeoutError, match="no driver connection free"):
            await loop_reads.one_returned(connections)
    assert time.monotonic() - started < 5  # its own timeout, not the thread's 30 s
    assert loop_reads._waiters_of(connections) == collections.deque()
    connections.close()


async def test_services_read_on_the_loop_when_all_are_lent(pg_db: Database) -> None:
    """`Services.read_on_loop` waits for a loan to end on the loop, not on a thread; with a
    loan free but no connection idle it leaves the read to a thread, which connects."""
    s = shop(pg_db, stock1=7, stock2=5)
    services = Services(sessionmaker(bind=pg_db.engine), sessionmaker(bind=pg_db.engine),
                        lambda *_: None, Threads(1))
    connections = driver_connections(pg_db.engine)
    connections.close()
    assert await services.read_on_loop(ROW_READS["variant"], [s.variant]) is NOT_NOW
    holders = [threading.Event() for _ in range(connections._limit)]
    release = threading.Event()

    def hold(lent: threading.Event) -> None:
        with connections.lend():
            lent.set()
            release.wait(5)

    for lent in holders:
        threading.Thread(target=hold, args=(lent,), daemon=True).start()
    for lent in holders:
        await asyncio.to_thread(lent.wait, 5)
    assert connections.all_lent()
    asyncio.get_running_loop().call_later(0.2, release.set)
    found = await services.read_on_loop(ROW_READS["variant"], [s.variant])
    assert release.is_set() and not isinstance(found, NotNow)
    assert [row.id for row in found] == [s.variant]
    services.threads.close()
