"""product (seller_id, id) instead of (seller_id), and product_variant (seller_id, id): a
seller's products and variants newest first

Revision ID: 0022
Revises: 0021
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `products(sellerId:)` and `productVariants(sellerId:)` page by `seller_id = X AND
    # id < cursor ORDER BY id DESC`: on (seller_id) alone PostgreSQL read all the seller's
    # rows and sorted them for every page (variants went through the seller's products);
    # (seller_id, id) reads a page. Neither table is written by an order
    op.create_index("ix_product_seller", "product", ["seller_id", "id"])
    op.drop_index("ix_product_seller_id", table_name="product")
    op.create_index("ix_product_variant_seller", "product_variant", ["seller_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_product_variant_seller", table_name="product_variant")
    op.create_index("ix_product_seller_id", "product", ["seller_id"])
    op.drop_index("ix_product_seller", table_name="product")
