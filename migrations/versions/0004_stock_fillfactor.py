"""stock pages keep room for in-page (HOT) updates of the counters

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # counters change on every order; with free room in the page PostgreSQL rewrites the
    # row in place (no index entries to add, no bloat to vacuum). SQLite has no such knob.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stock SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stock RESET (fillfactor)")
