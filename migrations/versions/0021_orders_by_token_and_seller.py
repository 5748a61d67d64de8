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
    # No read goes from a variant to its lines (an order's lines go by order_id, a seller's
    # by the index above; a line's foreign key is checked on the variant's primary key),
    # so (variant_id) only cost the order path an index entry per line: on SQLite each
    # index an order touches is a page more in the WAL per commit (bench/README.md, "One
    # seller among many": the SQLite raw baseline lost 16% with it kept, 12% without)
    op.drop_index("ix_order_line_variant_id", table_name="order_line")


def downgrade() -> None:
    op.create_index("ix_order_line_variant_id", "order_line", ["variant_id"])
    op.drop_index("ix_order_line_seller_order", table_name="order_line")
    with foreign_keys_off("order_line"), op.batch_alter_table("order_line") as batch:
        batch.drop_column("seller_id")
    op.drop_index("ix_orders_token_id", table_name="orders")
