"""Per-request context: the caller, the thread hop into the synchronous core, the loaders."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from api.auth import TokenCache
from api.limits import Gate
from api.loaders import Loaders
from api.threads import Threads
from domain.db import driver_pool
from domain.permissions import Principal
from domain.uow import Publish, UnitOfWork

P = ParamSpec("P")
R = TypeVar("R")


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

    def read_core(self, fn: Callable[Concatenate[Connection, P], R], *args: P.args,
                  **kwargs: P.kwargs) -> R:
        """`fn` with a Core connection of the reader's engine (its options: read-only, and
        autocommit on PostgreSQL), for reads whose plan needs their parameters' values
        (pages: a LIMIT, a skewed filter)."""
        with self.reader.kw["bind"].connect() as conn:
            return fn(conn, *args, **kwargs)

    def read_rows(self, fn: Callable[Concatenate[Connection, P], R], *args: P.args,
                  **kwargs: P.kwargs) -> R:
        """`fn` with a Core connection, for reads whose plan needs no parameter's value
        (rows by id, sums over ids): on PostgreSQL from the driver pool, in autocommit,
        where a statement is prepared and planned once (`db.driver_pool`); elsewhere the
        reader's."""
        engine = self.writer.kw["bind"]
        if engine.dialect.name == "postgresql":
            with driver_pool(engine).connect() as conn:
                return fn(conn, *args, **kwargs)
        with self.reader() as session:
            return fn(session.connection(), *args, **kwargs)


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

    async def read_core(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a read function with a Core connection (`Services.read_core`) in a worker
        thread."""
        return await self.services.threads.run(
            functools.partial(self.services.read_core, fn, *args))

    async def read_rows(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a read function with a Core connection (`Services.read_rows`) in a worker
        thread."""
        return await self.services.threads.run(
            functools.partial(self.services.read_rows, fn, *args))
