"""product_variant: a SKU is unique per seller, not across the marketplace

Revision ID: 0010
Revises: 0009
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_rebuild import foreign_keys_off

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = "uq_product_variant_sku_seller"
FOREIGN_KEY = "product_variant_seller_id_fkey"
# SQLite's constraint from 0001 has no name: batch mode names it by this convention
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_name() -> str:
    return ("product_variant_sku_key" if op.get_bind().dialect.name == "postgresql"
            else "uq_product_variant_sku")


def upgrade() -> None:
    op.add_column("product_variant", sa.Column("seller_id", sa.Integer(), nullable=True))
    op.execute("UPDATE product_variant SET seller_id = (SELECT p.seller_id FROM product p "
               "WHERE p.id = product_variant.product_id)")
    with foreign_keys_off("product_variant"), \
            op.batch_alter_table("product_variant", naming_convention=NAMING) as b:
        b.alter_column("seller_id", existing_type=sa.Integer(), nullable=False)
        b.create_foreign_key(FOREIGN_KEY, "seller", ["seller_id"], ["id"])
        b.drop_constraint(_old_name(), type_="unique")
        b.create_unique_constraint(NEW, ["sku", "seller_id"])


def downgrade() -> None:
    # fails if two sellers use one SKU meanwhile: SKUs were marketplace-wide before
    with foreign_keys_off("product_variant"), \
            op.batch_alter_table("product_variant", naming_convention=NAMING) as b:
        b.drop_constraint(NEW, type_="unique")
        b.create_unique_constraint(_old_name(), ["sku"])
        b.drop_constraint(FOREIGN_KEY, type_="foreignkey")
        b.drop_column("seller_id")
