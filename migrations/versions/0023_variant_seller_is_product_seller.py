"""product_variant (seller_id, product_id) refers to product (seller_id, id): a variant's
seller is its product's, as the database holds

Revision ID: 0023
Revises: 0022
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_rebuild import foreign_keys_off

revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Which warehouses may serve a variant (`stock_rules.serves`: its seller's) was read
    # through its product, a join in every availability sum and in every order's read of
    # its stocks. The variant carries its seller (written from the product's); with this
    # key the database holds that they agree, and the product is no longer read.
    # A variant whose seller is not its product's fails the upgrade (checked here: SQLite
    # copies the table with its foreign keys off, and its check looks at the keys that
    # point at the table, not at those it holds).
    wrong = op.get_bind().execute(sa.text(
        "SELECT v.id FROM product_variant v JOIN product p ON p.id = v.product_id "
        "WHERE v.seller_id <> p.seller_id ORDER BY v.id LIMIT 5")).scalars().all()
    if wrong:
        raise RuntimeError(f"variants whose seller is not their product's: {wrong}")
    op.drop_index("ix_product_seller", table_name="product")
    op.create_index("ix_product_seller", "product", ["seller_id", "id"], unique=True)
    # SQLite adds a foreign key by rebuilding the table stocks and lines point at
    with foreign_keys_off("product_variant"), op.batch_alter_table("product_variant") as batch:
        batch.create_foreign_key("fk_product_variant_product_seller", "product",
                                 ["seller_id", "product_id"], ["seller_id", "id"])


def downgrade() -> None:
    with foreign_keys_off("product_variant"), op.batch_alter_table("product_variant") as batch:
        batch.drop_constraint("fk_product_variant_product_seller", type_="foreignkey")
    op.drop_index("ix_product_seller", table_name="product")
    op.create_index("ix_product_seller", "product", ["seller_id", "id"])
