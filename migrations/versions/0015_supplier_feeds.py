"""supplier feeds: supplier_feed and supplier_feed_item

Revision ID: 0015
Revises: 0014
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "supplier_feed",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("warehouse_id", sa.Integer(), sa.ForeignKey("warehouse.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("supplier_seller_id", sa.Integer(), sa.ForeignKey("seller.id"),
                  nullable=True),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("failing", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.create_index("ix_supplier_feed_warehouse_id", "supplier_feed", ["warehouse_id"])
    op.create_index("ix_supplier_feed_supplier_seller_id", "supplier_feed",
                    ["supplier_seller_id"])
    op.create_table(
        "supplier_feed_item",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("feed_id", sa.Integer(),
                  sa.ForeignKey("supplier_feed.id", ondelete="CASCADE"), nullable=False),
        sa.Column("variant_id", sa.Integer(), sa.ForeignKey("product_variant.id"),
                  nullable=False),
        sa.Column("supplier_sku", sa.String(255), nullable=False),
        sa.Column("supplier_quantity", sa.Integer(), nullable=True),
        sa.UniqueConstraint("feed_id", "variant_id", name="uq_supplier_feed_item_variant"),
    )
    op.create_index("ix_supplier_feed_item_supplier_sku", "supplier_feed_item",
                    ["supplier_sku"])


def downgrade() -> None:
    op.drop_table("supplier_feed_item")
    op.drop_table("supplier_feed")
