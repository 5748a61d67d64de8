"""Unit of work: one transaction per service call, events published only after commit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from domain.db import driver_connections
from domain.events import Event

Publish = Callable[[Event], None]
LastStep = Callable[[Session], bool]


def _discard(_event: Event) -> None:
    return None


class UnitOfWork:
    """`with uow:` opens a session; leaving without `commit()` rolls back."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        publish: Publish = _discard,
        reader: sessionmaker[Session] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._publish = publish
        self._reader = reader
        self.events: list[Event] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.events = []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()

    @contextlib.contextmanager
    def unlocked_reads(self) -> Iterator[Session]:
        """A session for reads an optimistic plan may make outside the write transaction.

        It is the reader (`db.session_factories`) when this unit has one. On SQLite, where
        a writing transaction holds the whole database, the writer's turn then starts only
        with the first write; on PostgreSQL the reads need no BEGIN.
        """
        if self._reader is None:
            yield self.session
            return
        with self._reader() as session:
            yield session

    @property
    def dialect(self) -> str:
        """The database's dialect name, e.g. "postgresql" or "sqlite"."""
        return str(self._session_factory.kw["bind"].dialect.name)

    @contextlib.contextmanager
    def driver(self) -> Iterator[Any]:
        """A pooled DBAPI connection outside the session, in autocommit.

        For work that needs no transaction of its own (reads, and on PostgreSQL a write
        that is one statement, `ledger.execute_last`) or that frames its own (SQLite's
        `begin_immediate`, which takes the writer turn). The session's machinery cost more
        CPU than the order path's own work. Then `committed_on_driver()` publishes events.
        On PostgreSQL the connection is lent by `db.driver_connections`.

        Like `with uow:` for the session, this starts the unit: the events emitted since are
        what `committed_on_driver()` publishes, and an earlier attempt's are dropped.
        """
        engine = self._session_factory.kw["bind"]
        self.events = []
        if engine.dialect.name == "postgresql":
            # one that comes back broken or in a transaction is closed, not lent again
            with driver_connections(engine).lend() as lent:
                yield lent
            return
        pooled = engine.raw_connection()
        raw: Any = pooled.driver_connection
        try:
            yield raw  # pysqlite without isolation_level: autocommit until a BEGIN
        finally:
            try:
                if raw.in_transaction:
                    raw.rollback()  # and gives the writer turn back
            finally:
                pooled.close()

    def committed_on_driver(self) -> None:
        """The work was committed on `driver()`'s connection: publish its events."""
        self._publish_events()

    def commit(self, last: LastStep | None = None) -> bool:
        """Commit, then publish the events; False, with nothing committed, if `last` refused.

        `last` is the transaction's final step (`ledger.allocate_last`, or a statement sent
        through `ledger.commit_last`). It runs after a flush, and may send COMMIT itself in
        the same round trip as its statement; the session's own COMMIT then has nothing
        left to do.
        """
        if last is not None:
            self.session.flush()  # pending ORM changes belong to the same transaction
            if not last(self.session):
                return False
        self.session.commit()
        self._publish_events()
        return True

    def _publish_events(self) -> None:
        events, self.events = self.events, []
        for event in events:
            self._publish(event)

    def emit(self, event: Event) -> None:
        self.events.append(event)
