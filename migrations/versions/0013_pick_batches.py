"""pick batches: the batch reserve on stock (stock.quantity_reserved_for_batches),
pick_batch and pick_batch_line

Revision ID: 0013
Revises: 0012
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stock") as batch:
        batch.add_column(sa.Column("quantity_reserved_for_batches", sa.Integer(),
                                   nullable=False, server_default="0"))
        batch.create_check_constraint(
            "ck_stock_batch_reserve_range",
            "quantity_reserved_for_batches >= 0 AND "
            "quantity_reserved_for_batches <= quantity_allocated")
    op.create_table(
        "pick_batch",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("warehouse_id", sa.Integer(), sa.ForeignKey("warehouse.id"), nullable=False),
        sa.Column("status", sa.Enum("OPEN", "COMPLETED", "CANCELED", name="pickbatchstatus",
                                    native_enum=False, length=24), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_pick_batch_warehouse_status", "pick_batch", ["warehouse_id", "status"])
    op.create_table(
        "pick_batch_line",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("batch_id", sa.Integer(), sa.ForeignKey("pick_batch.id"), nullable=False),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("order_line_id", sa.Integer(), sa.ForeignKey("order_line.id"),
                  nullable=False),
        sa.Column("stock_id", sa.Integer(), sa.ForeignKey("stock.id"), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.UniqueConstraint("batch_id", "order_line_id", name="uq_pick_batch_line_batch_line"),
        sa.CheckConstraint("quantity > 0", name="ck_pick_batch_line_quantity_positive"),
    )
    op.create_index("ix_pick_batch_line_batch_id", "pick_batch_line", ["batch_id"])
    op.create_index("ix_pick_batch_line_order_id", "pick_batch_line", ["order_id"])


def downgrade() -> None:
    op.drop_table("pick_batch_line")
    op.drop_table("pick_batch")
    with op.batch_alter_table("stock") as batch:
        batch.drop_constraint("ck_stock_batch_reserve_range", type_="check")
        batch.drop_column("quantity_reserved_for_batches")
