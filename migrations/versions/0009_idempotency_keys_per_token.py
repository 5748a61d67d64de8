"""orders: idempotency keys unique per token (created_by_token_id)

Revision ID: 0009
Revises: 0008
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_rebuild import foreign_keys_off

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = "uq_orders_idempotency_key_token"
# SQLite's constraint from 0001 has no name: batch mode names it by this convention
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_name() -> str:
    return ("orders_idempotency_key_key" if op.get_bind().dialect.name == "postgresql"
            else "uq_orders_idempotency_key")


def upgrade() -> None:
    op.add_column("orders", sa.Column("created_by_token_id", sa.Integer(), nullable=True))
    with foreign_keys_off("orders"), op.batch_alter_table("orders", naming_convention=NAMING) as b:
        b.drop_constraint(_old_name(), type_="unique")
        b.create_unique_constraint(NEW, ["idempotency_key", "created_by_token_id"])


def downgrade() -> None:
    # fails if two tokens used one key meanwhile: keys were global before
    with foreign_keys_off("orders"), op.batch_alter_table("orders", naming_convention=NAMING) as b:
        b.drop_constraint(NEW, type_="unique")
        b.create_unique_constraint(_old_name(), ["idempotency_key"])
        b.drop_column("created_by_token_id")
