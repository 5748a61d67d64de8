"""Core SELECTs run on the DBAPI connection, their rows as Core would hand them back.

SQLAlchemy's execution of a compiled statement (a Connection, an execution context, the
expanding IN rendered again, bind and result processing, a cursor result) cost two to three
times the driver's own work for the small statements reads send: ~400 of ~550 µs of CPU for
a page of 5 variants here. A `Compiled` is its statement compiled once per dialect; running
it is the driver's execute and fetchall, each value put through its column type's result
processor (SQLAlchemy's own: SQLite's text -> datetime, an Enum's value -> member), each
row a named tuple with the Core row's attribute names.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sqlalchemy import Engine, Integer, Select

from domain.db import DRIVER_DIALECTS, driver_connections, driver_errors

Process = Callable[[Any], Any]
T = TypeVar("T")
P = ParamSpec("P")
_EXPANDED_KEPT = 256  # texts kept per statement, one per combination of list lengths and literals


# A read written once for both ways of running it: a generator that yields each statement
# it needs, (text, values), is sent the driver's tuples, and returns its result. `run` runs
# it on a DBAPI connection in the calling thread; api/loop_reads.py on the event loop.
Reading = Generator[tuple[str, dict[str, Any]], Sequence[Sequence[Any]], T]


class Unsupported(ValueError):
    """A statement `Compiled` cannot run as Core would."""


@dataclass(frozen=True, slots=True)
class Driver:
    """A DBAPI connection (psycopg or pysqlite, outside any transaction) and its dialect."""

    connection: Any
    dialect: str


@contextlib.contextmanager
def connect(engine: Engine, *, planned_once: bool) -> Iterator[Driver]:
    """A pooled DBAPI connection of `engine`'s database, in autocommit: each statement reads
    what was committed when it began, as the reader sessions do.

    On PostgreSQL, `planned_once` borrows one of the driver connections
    (`db.DriverConnections`), where a prepared statement is planned once for any values: for
    rows by id, sums over ids and pages by SKUs. Otherwise from the engine's own pool,
    planned for the values given (a page: a skewed filter). A connection that is broken or
    not idle afterwards is not pooled again.
    """
    dialect = engine.dialect.name
    if dialect != "postgresql":
        pooled = engine.raw_connection()  # pysqlite without isolation_level: autocommit
        try:
            yield Driver(pooled.driver_connection, dialect)
        finally:
            pooled.close()
        return
    if planned_once:
        with driver_connections(engine).lend() as lent:
            yield Driver(lent, dialect)
        return
    from psycopg.pq import TransactionStatus

    pooled = engine.raw_connection()
    raw: Any = pooled.driver_connection
    own = not raw.autocommit  # the engine's pool: its sessions want transactions back
    try:
        if own:
            raw.autocommit = True
        yield Driver(raw, dialect)
    finally:
        try:
            if raw.broken or raw.info.transaction_status != TransactionStatus.IDLE:
                pooled.invalidate()
            elif own:
                raw.autocommit = False
        finally:
            pooled.close()


class Compiled:
    """`statement` compiled for `dialect`'s driver; `rows()` runs it.

    A parameter the statement binds with `expanding=True` takes a list: its placeholders are
    rendered per list length, once. An empty list matches nothing, as in SQLAlchemy. An
    Integer parameter bound with `literal_execute=True` (a page's LIMIT) is written into
    the text, as SQLAlchemy does: a prepared statement's generic plan then knows it.

    What it cannot run as Core would, it refuses when built (`Unsupported`), so a new
    statement fails in its first test rather than answering differently: columns without a
    distinct identifier for a name, a result processor that needs the driver's type code
    (psycopg's Float and Numeric), a list's item names taken by another parameter, a
    post-compile marker that is not a list's.
    """

    def __init__(self, statement: Select[Any], dialect: str) -> None:
        driver_dialect = DRIVER_DIALECTS[dialect]
        compiled = statement.compile(dialect=driver_dialect)
        self._sql = str(compiled)
        self._placeholder = "%({})s" if dialect == "postgresql" else ":{}"
        self._defaults: dict[str, Any] = {}
        self._binds: dict[str, Process] = {}
        self._expanding: list[str] = []
        self._literals: list[str] = []
        for bind, name in compiled.bind_names.items():
            if not bind.required:
                self._defaults[name] = bind.effective_value
            if bind.expanding and name not in self._expanding:  # a list used twice: once
                self._expanding.append(name)
            elif bind.literal_execute and not bind.expanding and name not in self._literals:
                if not isinstance(bind.type, Integer):
                    raise Unsupported(f"a literal parameter must be an Integer: {name!r}")
                self._literals.append(name)
            process = bind.type.dialect_impl(driver_dialect).bind_processor(driver_dialect)
            if process is not None:
                self._binds[name] = process
        self._check_lists(compiled.bind_names.values())
        columns = list(statement.selected_columns)
        keys = [c.key for c in columns]
        if not all(isinstance(k, str) and k.isidentifier() for k in keys) \
                or len(set(keys)) != len(keys):
            raise Unsupported(f"columns need distinct identifiers for names, got {keys}")
        self._row: Any = collections.namedtuple(  # type: ignore[misc]
            "Row", [str(k) for k in keys])
        try:
            processors = [c.type.dialect_impl(driver_dialect)
                          .result_processor(driver_dialect, None) for c in columns]
        except TypeError as exc:  # it wanted the driver's type code
            raise Unsupported(f"a column's result processor needs a type code: {exc}") from exc
        self._processors = processors if any(processors) else None
        self._expanded: dict[tuple[int, ...], str] = {}  # list lengths -> text

    def _check_lists(self, names: Iterable[str]) -> None:
        taken = set(names) - set(self._expanding)
        for name in self._expanding:
            if any(other.startswith(f"{name}_") for other in taken):
                raise Unsupported(f"the list {name!r}'s item names collide with {taken}")
        markers = set(re.findall(r"__\[POSTCOMPILE_(\w+)\]", self._sql))
        if markers != {*self._expanding, *self._literals}:
            raise Unsupported(f"post-compile markers {markers} are not the lists "
                              f"{self._expanding} and literals {self._literals}")

    def rows(self, driver: Driver, params: Mapping[str, Any]) -> list[Any]:
        """The statement's rows for `params` (each bind's name -> its Python value)."""
        return run(driver, self.reading(params))

    def reading(self, params: Mapping[str, Any]) -> Reading[list[Any]]:
        """`rows()` as a `Reading`: it asks for the text's tuples, then makes the rows."""
        found = yield self.text(params)
        return self.made(found)

    def made(self, found: Sequence[Sequence[Any]]) -> list[Any]:
        """The rows of the driver's tuples: each value through its column's processor."""
        make = self._row._make
        processors = self._processors
        if processors is None:
            return [make(row) for row in found]
        return [make([v if p is None else p(v) for p, v in zip(processors, row, strict=True)])
                for row in found]

    def text(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """What `rows()` sends the driver for `params`: the text and its values."""
        values = {**self._defaults, **params}
        for name, process in self._binds.items():
            value = values[name]
            values[name] = [process(v) for v in value] if name in self._expanding \
                else process(value)
        if not self._expanding and not self._literals:
            return self._sql, values
        return self._expand(values), values

    def _expand(self, values: dict[str, Any]) -> str:
        """The text with each expanding bind's placeholders (one per item) and each literal's
        value, and `values` with each item under its own name and without the literals."""
        key: list[int] = []
        for name in self._expanding:
            items: Sequence[Any] = values.pop(name)
            key.append(len(items))
            values.update((f"{name}_{i}", item) for i, item in enumerate(items, 1))
        for name in self._literals:
            literal = values.pop(name)
            if type(literal) is not int:  # only ever an int is written into the text
                raise TypeError(f"{name!r} must be an int, not {type(literal).__name__}")
            key.append(literal)
        sql = self._expanded.get(tuple(key))
        if sql is None:
            sql = self._sql
            for name, length in zip(self._expanding, key[:len(self._expanding)], strict=True):
                listed = ", ".join(self._placeholder.format(f"{name}_{i}")
                                   for i in range(1, length + 1))
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", listed or "NULL")
            for name, literal in zip(self._literals, key[len(self._expanding):], strict=True):
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", str(literal))
            if len(self._expanded) < _EXPANDED_KEPT:
                self._expanded[tuple(key)] = sql
        return sql


def run(driver: Driver, reading: Reading[T]) -> T:
    """`reading`'s result, each statement it asks for run on `driver`'s connection here.
    A statement's error is raised as SQLAlchemy's (`driver_errors`) into the reading, which
    may catch it."""
    try:
        request = next(reading)
        while True:
            sql, values = request
            try:
                with driver_errors(sql, values, connection=driver.connection):
                    found = driver.connection.execute(sql, values).fetchall()
            except Exception as exc:
                request = reading.throw(exc)
            else:
                request = reading.send(found)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class DriverRead(Generic[P, T]):
    """A read on a driver connection, written once as a `Reading`: call it with a `Driver`
    to run it there (`run`); `reading(dialect, ...)` is the generator, for the event loop
    (api/loop_reads.py)."""

    def __init__(self, reading: Callable[Concatenate[str, P], Reading[T]]) -> None:
        self.reading = reading
        functools.update_wrapper(self, reading)

    def __call__(self, driver: Driver, *args: P.args, **kwargs: P.kwargs) -> T:
        return run(driver, self.reading(driver.dialect, *args, **kwargs))

