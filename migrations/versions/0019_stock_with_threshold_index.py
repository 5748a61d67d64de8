"""stock (id) where a low-stock threshold is set: the low-stock dashboard's walk

Revision ID: 0019
Revises: 0018
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = sa.text("low_stock_threshold IS NOT NULL")


def upgrade() -> None:
    # `stocks(belowThreshold: true)` pages by id, newest first, filtering on the threshold:
    # on the primary key it read every stock, thresholds or not (on the big books about
    # 3,000 rows for a page of 50: bench/README.md "Big books against a fresh database").
    # The predicate names no counter, so an order's update of a stock stays HOT
    op.create_index("ix_stock_with_threshold", "stock", ["id"],
                    postgresql_where=_WHERE, sqlite_where=_WHERE)


def downgrade() -> None:
    op.drop_index("ix_stock_with_threshold", table_name="stock")
