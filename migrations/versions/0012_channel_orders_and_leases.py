"""orders sent in by sales channels (orders.channel_id, external_id); the lease table

Revision ID: 0012
Revises: 0011
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("channel_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("external_id", sa.String(255), nullable=True))
        batch.create_foreign_key("fk_orders_channel_id_sales_channel", "sales_channel",
                                 ["channel_id"], ["id"])
        batch.create_unique_constraint("uq_orders_channel_external_id",
                                       ["channel_id", "external_id"])
    op.create_table(
        "lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("fence", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False, server_default="0"),
        sa.Column("due_at", sa.Float(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("lease")
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint("uq_orders_channel_external_id", type_="unique")
        batch.drop_constraint("fk_orders_channel_id_sales_channel", type_="foreignkey")
        batch.drop_column("external_id")
        batch.drop_column("channel_id")
