"""Per-request context: the caller, the thread hop into the synchronous core, the loaders."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from api import loop_reads
from api.auth import TokenCache
from api.limits import Gate
from api.loaders import Loaders, ahead_failing, carried, read_ahead
from api.threads import Threads
from domain import rows
from domain.db import driver_connections
from domain.permissions import Principal
from domain.rows import DriverRead
from domain.services import reads
from domain.uow import Publish, UnitOfWork

P = ParamSpec("P")
R = TypeVar("R")
N = TypeVar("N")
KeysOf = Callable[[list[N]], dict[str, list[Any]]]  # nodes -> loader's name -> keys


@dataclass(slots=True)
class Services:
    """What the app holds for its lifetime: session factories, the event publisher, and
    the threads services run on."""

    writer: sessionmaker[Session]
    reader: sessionmaker[Session]
    publish: Publish
    threads: Threads
    tokens: TokenCache | None = None
    gate: Gate | None = None  # what requests may ask for (api/limits.py)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.writer, self.publish, reader=self.reader)

    def read(self, fn: Callable[Concatenate[Session, P], R], *args: P.args,
             **kwargs: P.kwargs) -> R:
        with self.reader() as session:
            return fn(session, *args, **kwargs)

    def read_driver(self, fn: Callable[..., R], *args: Any, planned_once: bool = False) -> R:
        """`fn` with a DBAPI connection in autocommit (`rows.connect`): for reads of
        domain/rows.py's compiled statements. `planned_once` for those whose plan needs no
        parameter's value (rows by id, sums over ids), on PostgreSQL prepared and planned
        once; otherwise planned for the values (pages: a LIMIT, a skewed filter)."""
        with rows.connect(self.writer.kw["bind"], planned_once=planned_once) as driver:
            return fn(driver, *args)

    def read_page(self, model: type[Any], query: reads.PageQuery, build: Callable[[Any], N],
                  keys_of: KeysOf[N]) -> tuple[list[Any], list[N], dict[str, dict[Any, Any]]]:
        """`Context.read_page`'s work, on a worker thread: the page (`reads.page`), its
        nodes and the loader values its rows carry (`loaders.carried`), then on another
        connection (planned once) the loaders' reads of the other keys `keys_of` names
        (`loaders.read_ahead`). A failed read ahead leaves the fields to read for
        themselves (and meet the error)."""
        rows = self.read_driver(reads.page, model, query,
                                planned_once=reads.planned_once(query))
        nodes, found, wanted = _after_page(query, rows, build, keys_of)
        if wanted:
            with ahead_failing("a page's"):
                _gather(found, self.read_driver(read_ahead, wanted, planned_once=True))
        return rows, nodes, found

    async def read_on_loop(self, fn: DriverRead[P, R], *args: P.args, **kwargs: P.kwargs
                           ) -> R | NotNow:
        """`fn` run on the event loop on an idle driver connection (PostgreSQL, planned
        once: `loop_reads.run_on_loop`), waiting there for a loan to end when all are lent
        (`loop_reads.one_returned`); NOT_NOW when a loan is free but no connection idle (or
        on SQLite): the caller then hops to a thread, which makes one."""
        engine = self.writer.kw["bind"]
        if engine.dialect.name != "postgresql":
            return NOT_NOW
        connections = driver_connections(engine)
        waited = False
        while True:
            with connections.lend_now() as raw:
                if raw is not None:
                    return await loop_reads.run_on_loop(
                        raw, fn.reading("postgresql", *args, **kwargs))
            if not connections.all_lent():
                return NOT_NOW  # fewer connections than loans: a thread makes one
            await loop_reads.one_returned(connections, again=waited)
            waited = True


@dataclass(slots=True)
class Context:
    request: Request | None
    services: Services
    principal: Principal | None
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.read, self.read_rows)

    async def run(
        self, fn: Callable[Concatenate[UnitOfWork, Principal | None, P], R],
        *args: P.args, **kwargs: P.kwargs,
    ) -> R:
        """Run a service (one transaction) in a worker thread, as the calling principal."""
        call = functools.partial(fn, self.services.uow(), self.principal, *args, **kwargs)
        return await self.services.threads.run(call)

    def token_revoked(self) -> None:
        """A token was revoked (committed): no process may accept it from now on."""
        if self.services.tokens is not None:
            self.services.tokens.revoked()

    async def read(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a read function with a read-only session in a worker thread."""
        return await self.services.threads.run(functools.partial(self.services.read, fn, *args))

    async def read_rows(self, fn: DriverRead[..., R], *args: Any) -> R:
        """Run a read of rows by id or sums over ids (planned once) on the event loop
        (`Services.read_on_loop`), else in a worker thread (`Services.read_driver`)."""
        found = await self.services.read_on_loop(fn, *args)
        if found is not NOT_NOW:
            return found  # type: ignore[return-value]
        return await self.services.threads.run(
            functools.partial(self.services.read_driver, fn, *args, planned_once=True))

    async def read_page(self, model: type[Any], query: reads.PageQuery,
                        build: Callable[[Any], N], keys_of: KeysOf[N]
                        ) -> tuple[list[Any], list[N]]:
        """A page's rows and the nodes `build` makes of the first `query.first`, in one
        thread hop with what the nodes' fields will load (`keys_of`), which the loaders then
        hold: the page's fields answer without a hop of their own (`Services.read_page`).
        A page planned once (by SKUs) is read on the event loop when a connection is idle,
        with what its fields load, on that connection (`page_and_ahead`)."""
        on_loop: Any = NOT_NOW
        if reads.planned_once(query):
            on_loop = await self.services.read_on_loop(page_and_ahead, model, query, build,
                                                       keys_of)
        if on_loop is NOT_NOW:
            on_loop = await self.services.threads.run(
                functools.partial(self.services.read_page, model, query, build, keys_of))
        rows, nodes, found = on_loop
        self.loaders.prime(found)
        return rows, nodes


class NotNow:
    """`Services.read_on_loop`'s answer when no connection is idle."""


NOT_NOW = NotNow()


def _after_page(query: reads.PageQuery, found_rows: list[Any], build: Callable[[Any], N],
                keys_of: KeysOf[N]
                ) -> tuple[list[N], dict[str, dict[Any, Any]], dict[str, list[Any]]]:
    """A page's nodes, the loader values its rows carry (`loaders.carried`), and the keys
    its nodes' fields will load that they do not (`keys_of`)."""
    nodes = [build(row) for row in found_rows[:query.first]]
    found = carried(query, found_rows[:query.first])
    wanted = {name: missing for name, keys in keys_of(nodes).items()
              if (missing := [k for k in keys if k not in found.get(name, {})])}
    return nodes, found, wanted


def _gather(found: dict[str, dict[Any, Any]], more: dict[str, dict[Any, Any]]) -> None:
    for name, values in more.items():
        found.setdefault(name, {}).update(values)


@rows.DriverRead
def page_and_ahead(dialect: str, model: type[Any], query: reads.PageQuery,
                   build: Callable[[Any], Any], keys_of: KeysOf[Any]
                   ) -> rows.Reading[tuple[list[Any], list[Any], dict[str, dict[Any, Any]]]]:
    """`Services.read_page`'s work as one reading, on one connection planned once (a page
    by SKUs): for the event loop (`Services.read_on_loop`)."""
    found_rows = yield from reads.page.reading(dialect, model, query)
    nodes, found, wanted = _after_page(query, found_rows, build, keys_of)
    if wanted:
        with ahead_failing("a page's"):
            _gather(found, (yield from read_ahead.reading(dialect, wanted)))
    return found_rows, nodes, found
