"""orders (created_by_token_id, id), and order_line.seller_id with (seller_id, order_id):
a storefront's or a seller's orders newest first, among many storefronts' and sellers'

Revision ID: 0021
Revises: 0020
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_rebuild import foreign_keys_off

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `orders` for a storefront token (those it created) walked every order by id; for a
    # seller token (those holding its variants) it also gathered every order id of the
    # seller's lines first, through variants and products (domain/services/reads.py).
    # A line now carries its variant's seller (the placement writes it with the line)
    op.create_index("ix_orders_token_id", "orders", ["created_by_token_id", "id"])
    op.add_column("order_line", sa.Column("seller_id", sa.Integer(), nullable=True))
    op.execute("UPDATE order_line SET seller_id = (SELECT seller_id FROM product_variant "
               "WHERE product_variant.id = order_line.variant_id)")
    # SQLite makes a column NOT NULL by rebuilding the table allocations point at
    with foreign_keys_off("order_line"), op.batch_alter_table("order_line") as batch:
        batch.alter_column("seller_id", existing_type=sa.Integer(), nullable=False)
    op.create_index("ix_order_line_seller_order", "order_line", ["seller_id", "order_id"])


def downgrade() -> None:
    op.drop_index("ix_order_line_seller_order", table_name="order_line")
    with foreign_keys_off("order_line"), op.batch_alter_table("order_line") as batch:
        batch.drop_column("seller_id")
    op.drop_index("ix_orders_token_id", table_name="orders")
