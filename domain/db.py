"""Engine construction: driver choice, SQLite writer serialization, pool sizing; PostgreSQL
array literals (`pg_array`)."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Dialect,
    Engine,
    Integer,
    String,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

from domain.settings import Settings

# Execution option a read-only session sets so SQLite opens a deferred transaction.
READ_ONLY = "stockyard_read_only"
# statements that bypass the session (`UnitOfWork.driver`) are compiled for these once
DRIVER_DIALECTS: dict[str, Dialect] = {
    "postgresql": psycopg_dialect(),  # type: ignore[no-untyped-call]
    "sqlite": sqlite_dialect(paramstyle="named"),
}


@contextlib.contextmanager
def driver_errors(statement: str, params: Any = None, *, connection: Any = None
                  ) -> Iterator[None]:
    """A DBAPI error of a driver connection raised as SQLAlchemy's, as a session raises it
    (an IntegrityError stays an IntegrityError)."""
    try:
        yield
    except Exception as exc:
        psycopg = sys.modules.get("psycopg")
        base = sqlite3.Error if isinstance(exc, sqlite3.Error) else \
            psycopg.Error if psycopg is not None and isinstance(exc, psycopg.Error) else None
        if base is None:
            raise
        raise DBAPIError.instance(
            statement, params, exc, base,
            connection_invalidated=getattr(connection, "broken", False)) from exc


def epoch(value: Any) -> float:
    """A DateTime column's value as Unix seconds: SQLite hands back naive UTC, or text
    from a raw query."""
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


class IdsIn:
    """A statement over a list of ids, written with `IN :name`: on PostgreSQL it becomes
    `= ANY(CAST(:name AS INTEGER[]))` with the ids as one array parameter, so its text is
    the same whatever the count (psycopg converts and prepares it once, PostgreSQL plans it
    once); on SQLite an expanding IN. The relay's statements run every round with a new
    list: expanding them cost the relay a third of its time on PostgreSQL."""

    def __init__(self, sql: str, name: str) -> None:
        self._name = name
        self._postgresql = text(sql.replace(f"IN :{name}", f"= ANY(CAST(:{name} AS INTEGER[]))"))
        self._sqlite = text(sql).bindparams(bindparam(name, expanding=True))

    def execute(self, conn: Connection, ids: Iterable[int], **params: Any
                ) -> CursorResult[Any]:
        values = sorted(set(ids))
        if conn.dialect.name == "postgresql":
            return conn.execute(self._postgresql, {self._name: pg_array(values), **params})
        return conn.execute(self._sqlite, {self._name: values, **params})


def in_ids(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """`column IN` the ids of one parameter `name` (given as `id_list(ids, dialect)`), for a
    Core statement built once: on PostgreSQL `= ANY(CAST(:name AS INTEGER[]))`, on SQLite
    `IN (SELECT value FROM json_each(:name))`. Its text, and so its compiled form and on
    PostgreSQL its prepared plan, is the same whatever the count."""
    param = bindparam(name, type_=String)
    if dialect == "postgresql":
        return column == any_(cast(param, ARRAY(Integer)))  # type: ignore[no-any-return]
    return column.in_(  # type: ignore[no-any-return]
        select(literal_column("value")).select_from(func.json_each(param)))


def id_list(ids: Iterable[int], dialect: str) -> str:
    """The parameter of `in_ids`: a PostgreSQL array literal or a JSON array."""
    values = sorted(set(ids))
    return pg_array(values) if dialect == "postgresql" else json.dumps(values)


def pg_array(values: Iterable[int | str]) -> str:
    """A PostgreSQL array literal, passed as one text parameter and CAST in the statement.

    psycopg's own list adaptation inspects every element (about 20 ms per 10,000); joining
    the text ourselves is ~50x cheaper. Strings are quoted and escaped, so any SKU is safe.
    """
    items = values if isinstance(values, list | tuple) else list(values)
    if all(type(v) is int for v in items):
        return "{" + ",".join(map(str, items)) + "}"
    return "{" + ",".join(
        str(v) if isinstance(v, int)
        else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in items) + "}"


def sqlalchemy_url(url: str) -> str:
    """Map the plain URLs API.md promises onto the drivers Stockyard uses."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    url = sqlalchemy_url(settings.database_url)
    if settings.is_sqlite:
        path = settings.sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        gate = _WriterGate.of(path) if path is not None else None
        connect_args: dict[str, Any] = {"timeout": 60, "check_same_thread": False}
        if gate is not None:
            connect_args["factory"] = gate.connection_class()
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _serialize_sqlite_writers(engine, gate)
        return engine
    kwargs.setdefault("pool_size", settings.db_pool_size)
    kwargs.setdefault("max_overflow", 4)
    kwargs.setdefault("pool_pre_ping", False)
    return create_engine(url, **kwargs)


# engine -> the connections `UnitOfWork.driver` and the planned-once reads draw from
_DRIVER_CONNECTIONS: weakref.WeakKeyDictionary[Engine, DriverConnections] = \
    weakref.WeakKeyDictionary()
_DRIVER_CONNECTIONS_LOCK = threading.Lock()
LEND_TIMEOUT = 30.0  # seconds a thread waits for a driver connection, as SQLAlchemy's pool


class DriverConnections:
    """A PostgreSQL engine's driver connections (autocommit, planned once), each lent to one
    borrower at a time: a service thread (`lend`), or a read on the event loop (`lend_now`).

    SQLAlchemy's pool around each loan (a fairy and its record, events, the reset on
    return) cost 60-80 µs of CPU per loan in the server, a tenth of the storefront's
    availability read; a loan here is a deque's pop and append. `factory`
    (`_planned_once_connections`) makes each connection, which is then detached from it. At most
    `limit` are lent at once (more callers wait, up to LEND_TIMEOUT); at most `limit` stay
    idle. One that comes back not idle (a transaction left open) is closed; one that comes
    back broken closes the idle ones too (the server went away), as disposing the engine
    does, and those lent then are closed when they come back. After each loan the
    `listeners` are called, on the borrower's thread: the event loop's readers wait for a
    connection there (`api/loop_reads.py`), not on a thread.
    """

    def __init__(self, factory: Engine, limit: int) -> None:
        self.factory = factory
        self._idle: collections.deque[Any] = collections.deque()
        self._limit = limit
        self._lent_out = 0  # loans under way (under _lock)
        self.listeners: list[Callable[[], None]] = []  # called after each loan
        self._generation = 0  # one more at each close: what was lent before is not kept
        self._lock = threading.Lock()  # a connection taken back, against a close
        self._lendable = threading.Condition(self._lock)  # a loan ended: _lent_out < limit

    @contextlib.contextmanager
    def lend(self) -> Iterator[Any]:
        """A psycopg connection in autocommit, outside any transaction."""
        yield from self._lent(wait=True)

    @contextlib.contextmanager
    def lend_now(self) -> Iterator[Any]:
        """An idle connection, as `lend`'s, or None at once: never waits for one nor makes
        one (for the event loop, which must not block: the caller then takes `lend` on a
        thread)."""
        yield from self._lent(wait=False)

    def _lent(self, *, wait: bool) -> Iterator[Any]:
        """A loan: the slot (waited for up to LEND_TIMEOUT if `wait`), an idle connection
        (else a new one if `wait`), and both back afterwards; None without waiting."""
        with self._lendable:
            lent = not self.all_lent() or (wait and self._lendable.wait_for(
                lambda: not self.all_lent(), timeout=LEND_TIMEOUT))
            if lent:
                self._lent_out += 1
        if not lent:
            if wait:  # as SQLAlchemy's pool raises
                raise SQLAlchemyTimeoutError(f"no driver connection free within "
                                             f"{LEND_TIMEOUT:.0f} s ({self._limit} lent)")
            yield None
            return
        try:
            generation = self._generation
            try:
                raw = self._idle.pop()
            except IndexError:
                if not wait:
                    yield None
                    return
                pooled = self.factory.raw_connection()
                raw = pooled.driver_connection
                pooled.detach()
            try:
                yield raw
            finally:
                self._take_back(raw, generation)
        finally:
            with self._lendable:
                self._lent_out -= 1
                self._lendable.notify()
            for listener in self.listeners:
                listener()

    def idle(self) -> int:
        return len(self._idle)

    def all_lent(self) -> bool:
        """Whether `limit` loans are under way: a borrower that will not wait in a thread
        waits for a listener's call (else a loan is free, and a thread may connect)."""
        return self._lent_out >= self._limit

    def close(self) -> None:
        """Close the idle connections; those lent now are closed when they come back. Later
        loans make new ones (as an engine's pool after `dispose`)."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, collections.deque()
        while True:  # popped, not iterated: a loan may still pop one it read before
            try:
                raw = idle.pop()
            except IndexError:
                break
            with contextlib.suppress(Exception):
                raw.close()

    def _take_back(self, raw: Any, generation: int) -> None:
        from psycopg.pq import TransactionStatus

        if raw.broken:  # the server went away, or restarted: so did the idle ones
            self.close()
        with self._lock:
            if generation == self._generation and not raw.broken and \
                    len(self._idle) < self._limit and \
                    raw.info.transaction_status == TransactionStatus.IDLE:
                self._idle.append(raw)
                return
        with contextlib.suppress(Exception):
            raw.close()


def driver_connections(engine: Engine) -> DriverConnections:
    """The driver connections of a PostgreSQL `engine` (made on first use)."""
    connections = _DRIVER_CONNECTIONS.get(engine)
    if connections is None:
        with _DRIVER_CONNECTIONS_LOCK:
            connections = _DRIVER_CONNECTIONS.get(engine)
            if connections is None:
                connections = _DRIVER_CONNECTIONS[engine] = _planned_once_connections(engine)
    return connections


def _planned_once_connections(engine: Engine) -> DriverConnections:
    """Connections to `engine`'s database of their own, as many as its pool's and four
    more, in autocommit, where a statement psycopg prepares (from its 5th run on a
    connection) is planned once: plan_cache_mode = force_generic_plan. Closed when `engine`
    is disposed.

    The order path's statements are key lookups whose best plan does not depend on the
    values. PostgreSQL replanned them for every order all the same: knowing the arrays'
    lengths, a custom plan always wins the cost comparison. The planning cost more than the
    execution (0.9 of 1.7 ms of backend CPU per order, measured). Other statements keep
    the default on the engine's own pool: a LIMIT or a skewed filter needs its values.
    """
    size = engine.pool.size() if isinstance(engine.pool, QueuePool) else 5
    # makes each connection (NullPool: kept by DriverConnections, not here)
    factory = create_engine(engine.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    @event.listens_for(factory, "connect")
    def generic_plans(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
        if not dbapi_connection.autocommit:  # SQLAlchemy turns autocommit on after this
            dbapi_connection.commit()

    connections = DriverConnections(factory, size + 4)
    # servers spawn their workers, so no forked child shares these connections
    event.listen(engine, "engine_disposed", lambda _engine: connections.close())
    return connections


T = TypeVar("T")

GATE_TIMEOUT = 60.0  # seconds a writer waits for its turn, like the busy timeout
_GATES: dict[str, _WriterGate] = {}
_GATES_LOCK = threading.Lock()


class _WriterGate:
    """Writers of one SQLite file take turns, and a waiter goes the moment its turn comes.

    SQLite's own wait (the busy handler) polls with sleeps of up to 100 ms, so under load a
    writer often slept long after the lock was free (p99 over a second). Here threads of a
    process queue on a lock, which wakes the next one as soon as the holder's COMMIT or
    ROLLBACK returns, and one thread per process polls `flock` of a side file every 2 ms
    at most. Both give up after GATE_TIMEOUT. BEGIN IMMEDIATE still guards the data; the
    gate only decides who goes next, and how soon.
    """

    def __init__(self, database: Path) -> None:
        self._threads = threading.Lock()
        self._file = _FileTurn(os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT,
                                       0o644))
        self._checkpoints = _Checkpointer(database)
        self._queued = threading.Condition()
        self._waiting: list[_Job[Any]] = []
        self._combining = False

    @classmethod
    def of(cls, database: Path) -> _WriterGate:
        """The process's one gate for this file, whatever the number of engines on it."""
        key = str(database.resolve())
        with _GATES_LOCK:
            if key not in _GATES:
                _GATES[key] = cls(database)
            return _GATES[key]

    def enter(self) -> None:
        deadline = time.monotonic() + GATE_TIMEOUT
        if not self._threads.acquire(timeout=GATE_TIMEOUT):
            raise _no_turn()
        try:
            self._file.take(deadline)
        except BaseException:
            self._threads.release()
            raise

    def leave(self) -> None:
        self._file.give_back()
        self._threads.release()

    def together(self, conn: Any, work: Callable[[Any], T]) -> T:
        """`work(conn)` in a writer turn shared with the work other threads of this process
        queued meanwhile, one COMMIT for all (group commit).

        The thread that finds no turn under way takes every queued piece and runs them on
        its own connection; the others wait for their result. A turn's length is then its
        statements, not a hand-off of the file lock between processes per order, and the
        stock pages an order changed are written to the WAL once per turn. A piece that
        raises leaves no trace: the transaction is rolled back and the pieces before it run
        again in a new one (they only wrote), so a refusal costs the others a second run,
        never a savepoint each in the common case.
        """
        job = _Job(work)
        with self._queued:
            self._waiting.append(job)
            while self._combining and not job.done:
                self._queued.wait()
            if job.done:
                return job.outcome()
            self._combining = True
            jobs, self._waiting = self._waiting, []
        try:
            _run_together(conn, jobs)
        except BaseException as exc:  # e.g. a ROLLBACK that failed: no piece waits forever
            _finish([other for other in jobs if not other.done], error=exc)
        finally:
            with self._queued:
                self._combining = False
                self._queued.notify_all()
        return job.outcome()

    def connection_class(self) -> type[sqlite3.Connection]:
        gate = self

        class GatedConnection(sqlite3.Connection):
            """Gives the writer turn back once its transaction has ended."""

            holds_turn = False

            def begin_immediate(self) -> None:
                """Take the writer turn, then BEGIN IMMEDIATE (the turn goes if it fails)."""
                if not self.holds_turn:
                    gate.enter()
                    self.holds_turn = True
                try:
                    self.execute("BEGIN IMMEDIATE")
                except BaseException:
                    self.end_turn()
                    raise

            def commit(self) -> None:
                wrote = self.holds_turn
                self.ending_turn(super().commit)
                if wrote:
                    gate._checkpoints.due()

            def rollback(self) -> None:
                self.ending_turn(super().rollback)

            def close(self) -> None:
                self.ending_turn(super().close)

            def ending_turn(self, end: Callable[[], None]) -> None:
                """End the transaction or connection with `end`, then give the turn back."""
                try:
                    end()
                finally:
                    self.end_turn()

            def end_turn(self) -> None:
                if self.holds_turn:
                    self.holds_turn = False
                    gate.leave()

            def together(self, work: Callable[[Any], T]) -> T:
                """`work(self)` in a writer turn it may share (`_WriterGate.together`)."""
                return gate.together(self, work)

        return GatedConnection


class _FileTurn:
    """The side file's exclusive `flock`: the turn between processes. Only the thread that
    holds its gate's thread lock asks for it.

    A free lock is taken at once. A held one is waited for by a thread of this object's
    own, blocked in flock(2), which the kernel wakes the moment the other process lets go
    (polling with sleeps woke up to 2 ms late, and turns pass between the server
    processes all the time); the asking thread waits for that thread's word, so it can
    still give up after GATE_TIMEOUT. A lock the waiter gets for a thread that gave up
    meanwhile goes straight back.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._changed = threading.Condition()
        self._wanted = False  # a thread waits for the lock
        self._got = False  # the waiter took it for that thread
        self._blocked = False  # the waiter is in flock(2): no one else may call it now
        self._waiter: threading.Thread | None = None

    def take(self, deadline: float) -> None:
        with self._changed:
            if not self._blocked:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    pass
            if self._waiter is None:
                self._waiter = threading.Thread(
                    target=self._wait, name="sqlite-writer-turn", daemon=True)
                self._waiter.start()
            self._wanted = True
            self._changed.notify_all()
            if not self._changed.wait_for(lambda: self._got,
                                          max(0.0, deadline - time.monotonic())):
                self._wanted = False
                raise _no_turn()
            self._got = False

    def give_back(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _wait(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._wanted)
                self._blocked = True
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # until the other process lets go
            except OSError:  # not taken: the asking thread's deadline still holds
                with self._changed:
                    self._blocked = False
                time.sleep(0.002)
                continue
            with self._changed:
                self._blocked = False
                if self._wanted:
                    self._wanted, self._got = False, True
                    self._changed.notify_all()
                else:  # the thread that asked gave up
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


class _Checkpointer:
    """Copies the WAL's pages into the database file beside the writers, on a thread and
    connection of its own, instead of in a writer's turn.

    SQLite's automatic checkpoint runs in the COMMIT that fills the WAL past 1,000 pages,
    inside the writer turn, and with `synchronous=NORMAL` it syncs the file: every few
    dozen orders one COMMIT took 5-20 ms while both server processes' writers waited. The
    gate's connections turn it off (`wal_autocheckpoint=0`); a commit that wrote marks a
    checkpoint due, and this thread runs a PASSIVE one (it takes no writer lock, so writers
    go on meanwhile) at most every PAUSE seconds. It ends after IDLE seconds without a
    commit, and the next commit starts it again. A process that ends before its last
    checkpoint leaves it to the next one, or to the last connection's close, as SQLite does.
    """

    PAUSE = 0.05
    IDLE = 2.0

    def __init__(self, database: Path) -> None:
        self._database = database
        self._due = threading.Event()
        self._lock = threading.Lock()
        self._running = False

    def due(self) -> None:
        self._due.set()
        with self._lock:
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True).start()

    def _run(self) -> None:
        conn = None
        try:  # a connect that fails too must leave the next commit to start a thread
            conn = sqlite3.connect(self._database, isolation_level=None,
                                   check_same_thread=False)
            while True:
                if not self._due.wait(self.IDLE):
                    with self._lock:
                        if not self._due.is_set():
                            self._running = False
                            return
                    continue
                time.sleep(self.PAUSE)  # the commits of the next PAUSE ride along
                self._due.clear()
                with contextlib.suppress(sqlite3.Error):  # busy: another one checkpoints
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except BaseException:
            with self._lock:
                self._running = False
            raise
        finally:
            if conn is not None:
                conn.close()


class _Job(Generic[T]):
    """A piece of work queued for a shared writer turn, and what came of it."""

    __slots__ = ("done", "error", "value", "work")
    value: T  # set when the work returned

    def __init__(self, work: Callable[[Any], T]) -> None:
        self.work = work
        self.done = False
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value


def _run_together(conn: Any, jobs: list[_Job[Any]]) -> None:
    """Each job's work in one transaction on `conn`, then COMMIT; a job that raises is
    taken out (its error is its outcome) and the others run again without it."""
    while jobs:
        try:
            with driver_errors("BEGIN IMMEDIATE"):
                conn.begin_immediate()
        except BaseException as exc:
            _finish(jobs, error=exc)
            return
        failed = None
        for job in jobs:
            try:
                job.value = job.work(conn)
            except BaseException as exc:
                failed, job.error = job, exc
                break
        if failed is None:
            try:
                with driver_errors("COMMIT"):
                    conn.commit()
            except BaseException as exc:
                conn.rollback()
                _finish(jobs, error=exc)
                return
            _finish(jobs)
            return
        conn.rollback()  # and gives the turn back
        failed.done = True
        jobs = [job for job in jobs if job is not failed]


def _finish(jobs: list[_Job[Any]], error: BaseException | None = None) -> None:
    for job in jobs:
        if error is not None:
            job.error = error
        job.done = True


def _no_turn() -> sqlite3.OperationalError:
    return sqlite3.OperationalError(f"database is locked (no writer turn in {GATE_TIMEOUT:g} s)")


def _serialize_sqlite_writers(engine: Engine, gate: _WriterGate | None) -> None:
    """Open every writing transaction with BEGIN IMMEDIATE, after the writer gate.

    pysqlite's default deferred BEGIN lets two writers both read, then fail with
    "database is locked" on upgrade; IMMEDIATE makes the second wait.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        if gate is not None:  # its _Checkpointer checkpoints, outside the writer turn
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY, False):
            conn.exec_driver_sql("BEGIN")
            return
        if gate is None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        with driver_errors("BEGIN IMMEDIATE"):
            conn.connection.dbapi_connection.begin_immediate()


def session_factories(engine: Engine) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    """(writer, reader) session factories; the reader never takes SQLite's write lock.

    On PostgreSQL the reader runs in autocommit: under READ COMMITTED every statement has
    its own snapshot inside a transaction too, so a read loses nothing and saves the
    BEGIN and ROLLBACK round trips.
    """
    writer = sessionmaker(engine, expire_on_commit=False)
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    reader = sessionmaker(engine.execution_options(**options), expire_on_commit=False)
    return writer, reader
