"""sales channels and their listings; product.inventory_sync

Revision ID: 0011
Revises: 0010
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYNC_MODE = sa.Enum("ALL", "FEEDS_ONLY", "NONE", name="syncmode", native_enum=False,
                    length=24)


def upgrade() -> None:
    op.add_column("product", sa.Column("inventory_sync", sa.Boolean(), nullable=False,
                                       server_default="1"))
    op.create_table(
        "sales_channel",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seller_id", sa.Integer(), sa.ForeignKey("seller.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("endpoint_url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("sync_mode", SYNC_MODE, nullable=False),
        sa.Column("all_warehouses", sa.Boolean(), nullable=False),
        sa.Column("untracked_quantity", sa.Integer(), nullable=False),
        sa.Column("max_requests_per_second", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("failing", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("retry_at", sa.Float(), server_default="0", nullable=False),
        sa.Column("next_request_at", sa.Float(), server_default="0", nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_until", sa.Float(), server_default="0", nullable=False),
    )
    op.create_index("ix_sales_channel_seller_id", "sales_channel", ["seller_id"])
    op.create_table(
        "sales_channel_warehouse",
        sa.Column("channel_id", sa.Integer(),
                  sa.ForeignKey("sales_channel.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("warehouse_id", sa.Integer(), sa.ForeignKey("warehouse.id"),
                  primary_key=True),
    )
    op.create_table(
        "listing",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("channel_id", sa.Integer(),
                  sa.ForeignKey("sales_channel.id", ondelete="CASCADE"), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("sku", sa.String(255), nullable=False),
        sa.Column("variant_id", sa.Integer(), sa.ForeignKey("product_variant.id"),
                  nullable=True),
        sa.Column("figure", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("acked_version", sa.Integer(), nullable=True),
        sa.Column("pushed_quantity", sa.Integer(), nullable=True),
        sa.Column("pushed_version", sa.Integer(), nullable=True),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("channel_id", "external_id", name="uq_listing_channel_external_id"),
    )
    op.create_index("ix_listing_channel_sku", "listing", ["channel_id", "sku"])
    op.create_index("ix_listing_variant_id", "listing", ["variant_id"])


def downgrade() -> None:
    op.drop_table("listing")
    op.drop_table("sales_channel_warehouse")
    op.drop_table("sales_channel")
    with op.batch_alter_table("product") as b:
        b.drop_column("inventory_sync")
