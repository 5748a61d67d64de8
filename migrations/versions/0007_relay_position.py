"""relay_position: how far the ledger has been handed on to the stock_changed actor

Revision ID: 0007
Revises: 0006
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "relay_position",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    # a database upgraded with a long ledger starts from its end, not its beginning: the
    # movements before this release were published (or lost) by the in-memory events
    op.execute("INSERT INTO relay_position (name, last_id) "
               "SELECT 'stock_changed', COALESCE(MAX(id), 0) FROM stock_movement")


def downgrade() -> None:
    op.drop_table("relay_position")
