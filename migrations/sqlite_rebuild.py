"""A helper for migrations that make SQLite rebuild a table other tables refer to."""

from __future__ import annotations

from alembic import op


class foreign_keys_off:
    """SQLite recreates a table to drop an unnamed constraint, and dropping the old table
    would fail the foreign keys that point at it. `PRAGMA foreign_keys` only takes effect
    between transactions, so the recreation runs in a transaction of its own, checked
    with `foreign_key_check` before its COMMIT (the copy keeps every id). A no-op on
    PostgreSQL, which alters the table in place."""

    def __init__(self, table: str) -> None:
        self.table = table

    def __enter__(self) -> None:
        self.sqlite = op.get_bind().dialect.name == "sqlite"
        if self.sqlite:
            self._run("COMMIT", "PRAGMA foreign_keys=OFF", "BEGIN IMMEDIATE")

    def __exit__(self, *exc: object) -> None:
        if not self.sqlite:
            return
        if exc[0] is None:
            problems = [row for row in self._run("PRAGMA foreign_key_check")
                        if row[2] == self.table]  # (table, rowid, parent, fk index)
            if problems:
                raise RuntimeError(f"foreign keys to {self.table} broken: {problems[:5]}")
        self._run("COMMIT" if exc[0] is None else "ROLLBACK", "PRAGMA foreign_keys=ON",
                  "BEGIN IMMEDIATE")

    @staticmethod
    def _run(*statements: str) -> list[tuple[object, ...]]:
        raw = op.get_bind().connection.dbapi_connection
        assert raw is not None
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            rows = list(raw.execute(statement).fetchall())
        return rows
