"""The bench database: a dedicated PostgreSQL database or a fresh SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
PG_NAME = "stockyard_bench"

Kind = Literal["postgresql", "sqlite"]


@dataclass(frozen=True, slots=True)
class BenchDatabase:
    """Where the bench runs: `url` is what the server gets as STOCKYARD_DATABASE_URL."""

    kind: Kind
    url: str
    admin_url: str | None = None
    name: str = PG_NAME

    @classmethod
    def choose(cls, env_url: str | None, pg_name: str = PG_NAME) -> BenchDatabase:
        """PostgreSQL when `env_url` names one (a sibling database on it), else SQLite."""
        if env_url and env_url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
            base = make_url(env_url).set(drivername="postgresql")
            bench = base.set(database=pg_name).render_as_string(hide_password=False)
            admin_db = base.database if base.database not in (None, "", pg_name) else "postgres"
            admin = base.set(database=admin_db)
            return cls("postgresql", bench, admin.render_as_string(hide_password=False), pg_name)
        return cls("sqlite", f"sqlite:///{VAR / 'bench.sqlite3'}")

    @property
    def sqlite_file(self) -> Path:
        return Path(self.url.split(":///", 1)[1])

    def q(self, sql: str) -> str:
        """Turn '?' placeholders into the driver's style."""
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def create(self) -> None:
        """Start from an empty database (dropping a leftover one)."""
        VAR.mkdir(parents=True, exist_ok=True)
        if self.kind == "sqlite":
            self._remove_sqlite_files()
            return
        self.drop()
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        """Remove the bench database (PostgreSQL); the SQLite file is kept for inspection."""
        if self.kind != "postgresql":
            return
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def connect(self) -> Any:
        """A DB-API connection outside any transaction (sqlite3: autocommit, app pragmas)."""
        if self.kind == "postgresql":
            import psycopg

            return psycopg.connect(self.url)
        conn = sqlite3.connect(self.sqlite_file, timeout=60, isolation_level=None,
                               check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000",
                       "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """`connect()`, closed on exit (uncommitted work is rolled back)."""
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    def begin_writes(self, conn: Any) -> None:
        """Start the set-based writes of a seed step: on SQLite, one transaction holding the
        write lock from its start (psycopg opens its transaction itself)."""
        if self.kind == "sqlite":
            conn.execute("BEGIN IMMEDIATE")

    def commit_and_analyze(self, conn: Any, tables: Sequence[str]) -> None:
        """Commit a seed step and refresh the planner's statistics: all tables on SQLite,
        `tables` on PostgreSQL (in autocommit from here on: ANALYZE takes no transaction)."""
        if self.kind == "sqlite":
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
        else:
            conn.commit()
            conn.autocommit = True
            conn.execute(f"ANALYZE {', '.join(tables)}")

    def server_version(self) -> str:
        """The database engine's version string."""
        if self.kind == "sqlite":
            return f"SQLite {sqlite3.sqlite_version}"
        with self.connection() as conn:
            return f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}"

    def pg_deadlocks(self) -> int | None:
        """pg_stat_database.deadlocks of the bench database (None on SQLite)."""
        if self.kind != "postgresql":
            return None
        with self._admin() as conn:
            row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = %s",
                               (self.name,)).fetchone()
        return int(row[0]) if row else 0

    def _admin(self) -> Any:
        import psycopg

        assert self.admin_url is not None
        return psycopg.connect(self.admin_url, autocommit=True)

    def _remove_sqlite_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.sqlite_file}{suffix}").unlink(missing_ok=True)
