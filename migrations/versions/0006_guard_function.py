"""stockyard_require(): a statement's own guard, failing its transaction

Revision ID: 0006
Revises: 0005
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # PostgreSQL only: the order path sends its guarded stock update and COMMIT together
    # (domain/ledger.py); a guard that fails must fail the transaction so COMMIT rolls back
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION stockyard_require(ok boolean) RETURNS boolean AS $$ BEGIN "
            "IF NOT ok THEN RAISE EXCEPTION 'a stock guard refused the change' "
            "USING ERRCODE = 'SY001'; END IF; RETURN ok; END $$ LANGUAGE plpgsql"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION stockyard_require(boolean)")
