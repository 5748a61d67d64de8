"""Alembic environment: migrates the database STOCKYARD_DATABASE_URL names (or a given one)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from domain.db import make_engine
from domain.models import Base
from domain.settings import Settings

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = config.attributes.get("database_url") or Settings.from_env().database_url
    engine = make_engine(Settings(database_url=url))
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
