"""db.DriverConnections: the order path's and the planned-once reads' PostgreSQL
connections, lent without SQLAlchemy's pool."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from domain import db as dbmodule
from domain.db import DriverConnections, driver_connections, make_engine
from tests.conftest import Database


def _connections(pg_db: Database, limit: int) -> DriverConnections:
    return DriverConnections(driver_connections(pg_db.engine).factory, limit)


def test_a_connection_is_lent_again_unless_it_comes_back_unfit(pg_db: Database) -> None:
    connections = _connections(pg_db, 2)
    with connections.lend() as first:
        assert first.autocommit
        assert first.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
    with connections.lend() as again:
        assert again is first
        again.execute("BEGIN")  # left in a transaction: not lent again
    assert first.closed and connections.idle() == 0
    with pytest.raises(ZeroDivisionError), connections.lend() as failing:
        raise ZeroDivisionError
    assert connections.idle() == 1  # an error of the borrower's: the connection is fine
    with connections.lend() as next_one:
        assert next_one is failing
    connections.close()
    assert connections.idle() == 0 and failing.closed


def test_at_most_limit_are_lent_at_once(pg_db: Database, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    connections = _connections(pg_db, 1)
    monkeypatch.setattr(dbmodule, "LEND_TIMEOUT", 0.2)
    refused: list[BaseException] = []

    def borrow() -> None:
        try:
            with connections.lend():
                pass
        except SQLAlchemyTimeoutError as exc:  # what SQLAlchemy's pool raised
            refused.append(exc)

    with connections.lend():
        other = threading.Thread(target=borrow)
        other.start()
        other.join()
    assert len(refused) == 1
    borrow()  # free again
    assert len(refused) == 1
    connections.close()


def test_a_thread_waiting_for_a_loan_gets_the_one_that_ends(pg_db: Database) -> None:
    connections = _connections(pg_db, 1)
    got: list[Any] = []

    def borrow() -> None:
        with connections.lend() as raw:
            got.append(raw)

    with connections.lend() as first:
        other = threading.Thread(target=borrow)
        other.start()
        other.join(0.2)
        assert other.is_alive() and got == []  # waiting
    other.join(5)
    assert got == [first]
    connections.close()


def test_disposing_the_engine_closes_them(pg_db: Database) -> None:
    engine = make_engine(pg_db.settings)
    connections = driver_connections(engine)
    with connections.lend() as kept, connections.lend() as lent:
        pass
    assert connections.idle() == 2
    with connections.lend() as out:
        engine.dispose()
        assert kept.closed or lent.closed
    assert out.closed and connections.idle() == 0
    with connections.lend() as after:  # the engine may be used again, as SQLAlchemy's
        assert after.execute("SELECT 1").fetchone() == (1,)
    assert connections.idle() == 1
    connections.close()


def test_a_connection_that_comes_back_broken_closes_the_idle_ones(pg_db: Database) -> None:
    connections = _connections(pg_db, 3)
    with connections.lend() as first, connections.lend() as second:
        pass
    assert connections.idle() == 2
    with connections.lend() as lent, pytest.raises(psycopg.OperationalError):
        pid = lent.info.backend_pid
        with pg_db.engine.begin() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        lent.execute("SELECT 1")  # the server ended it, as a restart would
    assert lent.broken
    assert connections.idle() == 0 and first.closed and second.closed
    with connections.lend() as fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)
    connections.close()
