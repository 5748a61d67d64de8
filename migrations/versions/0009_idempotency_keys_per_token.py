"""orders: idempotency keys unique per token (created_by_token_id)

Revision ID: 0009
Revises: 0008
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = "uq_orders_idempotency_key_token"
# SQLite's constraint from 0001 has no name: batch mode names it by this convention
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_name() -> str:
    return ("orders_idempotency_key_key" if op.get_bind().dialect.name == "postgresql"
            else "uq_orders_idempotency_key")


def upgrade() -> None:
    op.add_column("orders", sa.Column("created_by_token_id", sa.Integer(), nullable=True))
    with _foreign_keys_off(), op.batch_alter_table("orders", naming_convention=NAMING) as b:
        b.drop_constraint(_old_name(), type_="unique")
        b.create_unique_constraint(NEW, ["idempotency_key", "created_by_token_id"])


def downgrade() -> None:
    # fails if two tokens used one key meanwhile: keys were global before
    with _foreign_keys_off(), op.batch_alter_table("orders", naming_convention=NAMING) as b:
        b.drop_constraint(NEW, type_="unique")
        b.create_unique_constraint(_old_name(), ["idempotency_key"])
        b.drop_column("created_by_token_id")


class _foreign_keys_off:
    """SQLite recreates `orders` (its unnamed unique constraint cannot be dropped), and
    dropping the old table would fail the lines' foreign keys. `PRAGMA foreign_keys` only
    takes effect between transactions, so the recreation runs in a transaction of its own,
    checked with `foreign_key_check` before its COMMIT (the copy keeps every id)."""

    def __enter__(self) -> None:
        self.sqlite = op.get_bind().dialect.name == "sqlite"
        if self.sqlite:
            self._run("COMMIT", "PRAGMA foreign_keys=OFF", "BEGIN IMMEDIATE")

    def __exit__(self, *exc: object) -> None:
        if not self.sqlite:
            return
        if exc[0] is None:
            problems = [row for row in self._run("PRAGMA foreign_key_check")
                        if row[2] == "orders"]  # (table, rowid, parent, fk index)
            if problems:
                raise RuntimeError(f"foreign keys broken by 0009: {problems[:5]}")
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
