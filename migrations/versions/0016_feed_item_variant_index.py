"""supplier_feed_item.variant_id indexed: the relay looks up the items of changed variants

Revision ID: 0016
Revises: 0015
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_supplier_feed_item_variant_id", "supplier_feed_item", ["variant_id"])


def downgrade() -> None:
    op.drop_index("ix_supplier_feed_item_variant_id", table_name="supplier_feed_item")
