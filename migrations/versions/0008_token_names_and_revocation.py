"""api_token: a name, when it was last used, when it was revoked

Revision ID: 0008
Revises: 0007
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_token", sa.Column("name", sa.String(40), nullable=True))
    op.add_column("api_token", sa.Column("last_used_at", sa.DateTime(timezone=True),
                                         nullable=True))
    op.add_column("api_token", sa.Column("revoked_at", sa.DateTime(timezone=True),
                                         nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("last_used_at")
        batch.drop_column("name")
