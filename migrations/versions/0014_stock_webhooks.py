"""stock webhooks: webhook_subscription and webhook_delivery

Revision ID: 0014
Revises: 0013
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_subscription",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seller_id", sa.Integer(), sa.ForeignKey("seller.id"), nullable=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", sa.String(100), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("failing", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("after_movement", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("retry_at", sa.Float(), nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_until", sa.Float(), nullable=False, server_default="0"),
    )
    op.create_index("ix_webhook_subscription_seller_id", "webhook_subscription", ["seller_id"])
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subscription_id", sa.Integer(),
                  sa.ForeignKey("webhook_subscription.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("stock_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.Enum("STOCK_UPDATED", "OUT_OF_STOCK", "BACK_IN_STOCK",
                                   "LOW_STOCK", name="webhookevent", native_enum=False,
                                   length=24), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )
    op.create_index("ix_webhook_delivery_event", "webhook_delivery",
                    ["subscription_id", "stock_id", "event", "version"], unique=True)
    op.create_index("ix_webhook_delivery_order", "webhook_delivery",
                    ["subscription_id", "version", "id"])


def downgrade() -> None:
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_subscription")
