"""orders (status, id) instead of (status): a status's orders newest first from the index

Revision ID: 0018
Revises: 0017
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `orders(statuses: [X])` pages by `status = X AND id < cursor ORDER BY id DESC`: on
    # (status) alone PostgreSQL walked the primary key backwards and filtered, so the last
    # page of a status held by the newest orders only (UNFULFILLED) read every older order
    # (bench/README.md "Big books"); (status, id) serves lookups by status as well
    op.create_index("ix_orders_status_id", "orders", ["status", "id"])
    op.drop_index("ix_orders_status", table_name="orders")


def downgrade() -> None:
    op.create_index("ix_orders_status", "orders", ["status"])
    op.drop_index("ix_orders_status_id", table_name="orders")
