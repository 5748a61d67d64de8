"""Migrations and models never drift apart."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from domain.models import Base
from tests.conftest import Database


def test_migrated_database_matches_models(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})

        diff = compare_metadata(context, Base.metadata)

    assert diff == []
