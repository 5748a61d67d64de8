"""Fixtures: every database test runs on SQLite and on PostgreSQL (one parametrized fixture).

PostgreSQL: STOCKYARD_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres)
names a server where a fresh database is created for the run; without an answering server the
PostgreSQL half of each test skips with a loud reason.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

import cli
from api.app import build_app
from domain.db import make_engine, session_factories, sqlalchemy_url
from domain.events import Event
from domain.models import Base, Role
from domain.services import tokens
from domain.settings import Limits, Settings
from domain.uow import Publish, UnitOfWork

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
_pg_problem: str | None = None


def postgres_server_url() -> str:
    return os.environ.get("STOCKYARD_TEST_POSTGRES_URL") or DEFAULT_PG


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    global _pg_problem
    if _pg_problem is None:
        try:
            engine = create_engine(sqlalchemy_url(postgres_server_url()))
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_problem = ""
        except Exception as exc:  # any failure to connect means: skip, loudly
            _pg_problem = f"PostgreSQL at {postgres_server_url()} does not answer: {exc!r:.200}"
    return _pg_problem or None


def service_missing(reason: str) -> NoReturn:
    """Skip loudly; fail under STOCKYARD_REQUIRE_SERVICES (CI starts every service)."""
    if os.environ.get("STOCKYARD_REQUIRE_SERVICES"):
        pytest.fail(f"{reason} (STOCKYARD_REQUIRE_SERVICES is set)")
    pytest.skip(f"SKIPPED, {reason}")


def require_postgres() -> None:
    problem = _pg_available()
    if problem:
        service_missing(f"NO POSTGRESQL: {problem}")


def _create_pg_database() -> str:
    name = f"stockyard_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(sqlalchemy_url(postgres_server_url()), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(sqlalchemy_url(postgres_server_url())).set(database=name)
    return url.render_as_string(hide_password=False).replace("postgresql+psycopg://",
                                                            "postgresql://")


def _drop_pg_database(url: str) -> None:
    name = make_url(sqlalchemy_url(url)).database
    admin = create_engine(sqlalchemy_url(postgres_server_url()), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class Database:
    """A migrated database of one backend, emptied before every test."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self.settings = Settings(database_url=url, db_pool_size=30)
        cli.migrate(self.settings)
        self.engine: Engine = make_engine(self.settings)
        self.writer, self.reader = session_factories(self.engine)

    def uow(self, events: list[Event] | None = None) -> UnitOfWork:
        return UnitOfWork(self.writer, events.append if events is not None else _ignore,
                          reader=self.reader)

    def reset(self) -> None:
        tables = [t.name for t in reversed(Base.metadata.sorted_tables)
                  if t.name != "order_type_allocation"]
        with self.engine.begin() as conn:
            # the ledger is append-only for the application; a test database is wiped anyway
            if self.backend == "postgresql":
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                triggers = conn.execute(text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
                for name, _ in triggers:
                    conn.execute(text(f"DROP TRIGGER {name}"))
                for name in tables:
                    conn.execute(text(f"DELETE FROM {name}"))
                for _, sql in triggers:
                    conn.execute(text(sql))
            conn.execute(text("UPDATE order_type_allocation SET enabled = :t"), {"t": True})

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))


def _ignore(_event: Event) -> None:
    return None


@pytest.fixture(scope="session")
def _sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path: Path = tmp_path_factory.mktemp("db") / "stockyard.db"
    db = Database("sqlite", f"sqlite:///{path}")
    yield db
    db.engine.dispose()


@pytest.fixture(scope="session")
def _postgresql_db() -> Iterator[Database]:
    require_postgres()
    url = _create_pg_database()
    db = Database("postgresql", url)
    yield db
    db.engine.dispose()
    _drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty, migrated database: SQLite, then PostgreSQL."""
    database: Database = request.getfixturevalue(f"_{request.param}_db")
    database.reset()
    yield database


@pytest.fixture
def pg_db(_postgresql_db: Database) -> Iterator[Database]:
    """PostgreSQL only (concurrency tests)."""
    _postgresql_db.reset()
    yield _postgresql_db


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Api:
    """GraphQL over HTTP through the real ASGI app."""

    def __init__(self, client: httpx.AsyncClient, db: Database) -> None:
        self.client = client
        self.db = db
        self.admin = tokens.create_token(db.uow(), Role.ADMIN)

    def token(self, role: Role, seller_id: int | None = None) -> str:
        return tokens.create_token(self.db.uow(), role, seller_id)

    async def post(self, query: str, variables: dict[str, Any] | None = None,
                   token: str | None = "admin") -> httpx.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.admin if token == 'admin' else token}"
        return await self.client.post("/graphql", json={"query": query,
                                                        "variables": variables or {}},
                                      headers=headers)

    async def gql(self, query: str, variables: dict[str, Any] | None = None,
                  token: str | None = "admin") -> dict[str, Any]:
        """`data` of a successful request (HTTP 200, no top-level errors)."""
        response = await self.post(query, variables, token)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def serve(db: Database, *, fast_paths: bool = True, limits: Limits = Limits(),
                publish: Publish | None = None) -> AsyncIterator[Api]:
    """A client of a fresh app on `db`; committed events go to `publish` (by default,
    nowhere)."""
    events: list[Event] = []
    app = build_app(db.engine, publish or events.append, fast_paths=fast_paths, limits=limits)
    async with asgi_client(app, timeout=120) as client:
        yield Api(client, db)


@contextlib.asynccontextmanager
async def asgi_client(app: Any, timeout: float = 5.0) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of `app` through ASGI, which runs no lifespan: the app's service
    threads are stopped here on exit."""
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver", timeout=timeout) as client:
            yield client
    finally:
        app.state.threads.close()


@pytest.fixture
def fast_paths() -> bool:
    """STOCKYARD_FAST_PATHS of the `api` fixture's app; a module may parametrize it."""
    return True


@pytest.fixture
async def api(db: Database, fast_paths: bool) -> AsyncIterator[Api]:
    async with serve(db, fast_paths=fast_paths) as api:
        yield api
