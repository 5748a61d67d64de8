"""stock (warehouse_id, id), and the same for the stocks with a threshold: one seller's
stock pages among many sellers' stocks

Revision ID: 0020
Revises: 0019
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = sa.text("low_stock_threshold IS NOT NULL")


def upgrade() -> None:
    # A seller's `stocks` page reads each of its warehouses' newest stocks (a LATERAL per
    # warehouse on PostgreSQL, domain/services/reads.py) instead of walking every seller's
    # stocks by id. (warehouse_id, id) serves what the index on warehouse_id alone served.
    # Neither names a counter, so an order's update of a stock stays HOT.
    op.create_index("ix_stock_warehouse", "stock", ["warehouse_id", "id"])
    op.drop_index("ix_stock_warehouse_id", table_name="stock")
    op.create_index("ix_stock_warehouse_with_threshold", "stock", ["warehouse_id", "id"],
                    postgresql_where=_WHERE, sqlite_where=_WHERE)


def downgrade() -> None:
    op.drop_index("ix_stock_warehouse_with_threshold", table_name="stock")
    op.create_index("ix_stock_warehouse_id", "stock", ["warehouse_id"])
    op.drop_index("ix_stock_warehouse", table_name="stock")
