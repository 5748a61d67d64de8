"""lighter ledger writes: no foreign-key checks, no stock_id index, BRIN on created_at

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Callable, Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's constraints have no names: batch mode names them by this convention to drop them
NAMING = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
APPEND_ONLY = ("UPDATE", "DELETE")


def upgrade() -> None:
    # Every movement is written by ledger.py from the stock row its own statement changed,
    # and no code path deletes a stock or an order. The checks cost 40% of a 10,000-row
    # ledger insert, and each one took a KEY SHARE lock on the (hot) stock row again.
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("stock_movement_stock_id_fkey", "stock_movement", type_="foreignkey")
        op.drop_constraint("stock_movement_order_id_fkey", "stock_movement", type_="foreignkey")
        # rows arrive in time order: a BRIN index serves time ranges at almost no write cost
        op.drop_index("ix_stock_movement_created_at", "stock_movement")
        op.create_index("ix_stock_movement_created_at", "stock_movement", ["created_at"],
                        postgresql_using="brin")
    else:
        _without_append_only_triggers(_batch_drop_foreign_keys)
    # only the audit reads by stock, and it reads the whole table
    op.drop_index("ix_stock_movement_stock_id", "stock_movement")


def downgrade() -> None:
    op.create_index("ix_stock_movement_stock_id", "stock_movement", ["stock_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_stock_movement_created_at", "stock_movement")
        op.create_index("ix_stock_movement_created_at", "stock_movement", ["created_at"])
        op.create_foreign_key("stock_movement_stock_id_fkey", "stock_movement", "stock",
                              ["stock_id"], ["id"])
        op.create_foreign_key("stock_movement_order_id_fkey", "stock_movement", "orders",
                              ["order_id"], ["id"])
        return

    def add() -> None:
        with op.batch_alter_table("stock_movement", naming_convention=NAMING) as batch:
            batch.create_foreign_key("stock_movement_stock_id_fkey", "stock", ["stock_id"], ["id"])
            batch.create_foreign_key("stock_movement_order_id_fkey", "orders", ["order_id"],
                                     ["id"])

    _without_append_only_triggers(add)


def _batch_drop_foreign_keys() -> None:
    with op.batch_alter_table("stock_movement", naming_convention=NAMING) as batch:
        batch.drop_constraint("stock_movement_stock_id_fkey", type_="foreignkey")
        batch.drop_constraint("stock_movement_order_id_fkey", type_="foreignkey")


def _without_append_only_triggers(rebuild: Callable[[], None]) -> None:
    """SQLite rebuilds the table to change constraints; its triggers go and come back."""
    for action in APPEND_ONLY:
        op.execute(f"DROP TRIGGER stock_movement_no_{action.lower()}")
    rebuild()
    for action in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER stock_movement_no_{action.lower()} BEFORE {action} "
            "ON stock_movement BEGIN SELECT RAISE(ABORT, 'stock_movement is append-only'); END"
        )
