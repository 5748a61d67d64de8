"""Migrations and models never drift apart."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

import cli
from domain.db import make_engine
from domain.models import Base
from domain.settings import Settings
from tests.conftest import Database, _create_pg_database, _drop_pg_database, require_postgres


def test_migrated_database_matches_models(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})

        diff = compare_metadata(context, Base.metadata)

    assert diff == []


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no migration has touched yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    require_postgres()
    url = _create_pg_database()
    yield url
    _drop_pg_database(url)


def _alembic(url: str) -> Config:
    config = Config(os.path.join(os.path.dirname(cli.__file__), "alembic.ini"))
    config.attributes["database_url"] = url
    return config


def _at_revision_with(url: str, revision: str, *statements: str) -> None:
    """Migrate the database at `url` to `revision`, run `statements` there, and let go of
    it (SQLite's rebuild must not wait for this engine's connections)."""
    command.upgrade(_alembic(url), revision)
    engine = make_engine(Settings(database_url=url))
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    engine.dispose()


def test_skus_become_unique_per_seller_on_a_database_with_data(empty_url: str) -> None:
    """0010 copies each variant's seller from its product, keeps every row and every
    stock pointing at it, then lets two sellers share a SKU but not one seller twice."""
    command.upgrade(_alembic(empty_url), "0009")
    engine = make_engine(Settings(database_url=empty_url))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO seller (id, name) VALUES (1, 'A'), (2, 'B')"))
        conn.execute(text("INSERT INTO warehouse (id, seller_id, name, priority) "
                          "VALUES (1, 2, 'B main', 0)"))
        conn.execute(text("INSERT INTO product (id, seller_id, name) "
                          "VALUES (1, 1, 'tee'), (2, 2, 'mug')"))
        conn.execute(text("INSERT INTO product_variant (id, product_id, sku, track_inventory) "
                          "VALUES (1, 1, 'TEE-M', true), (2, 2, 'MUG', true)"))
        conn.execute(text("INSERT INTO stock (id, variant_id, warehouse_id, quantity, "
                          "quantity_allocated) VALUES (1, 2, 1, 5, 0)"))
    engine.dispose()  # SQLite's rebuild must not wait for this engine's connections

    command.upgrade(_alembic(empty_url), "head")

    engine = make_engine(Settings(database_url=empty_url))
    with engine.begin() as conn:
        assert conn.execute(text("SELECT id, seller_id, sku FROM product_variant ORDER BY id")
                            ).all() == [(1, 1, "TEE-M"), (2, 2, "MUG")]
        assert conn.execute(text("SELECT variant_id, quantity FROM stock")).all() == [(2, 5)]
        conn.execute(text("INSERT INTO product_variant (id, product_id, seller_id, sku, "
                          "track_inventory) VALUES (3, 2, 2, 'TEE-M', true)"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO product_variant (id, product_id, seller_id, sku, "
                          "track_inventory) VALUES (4, 1, 1, 'TEE-M', true)"))
    engine.dispose()


# two sellers, B's warehouse, a product and a variant of each, B's variant in stock with
# one unit allocated to an order (its lines are each test's own)
_SELLERS_AND_VARIANTS = (
    "INSERT INTO seller (id, name) VALUES (1, 'A'), (2, 'B')",
    "INSERT INTO warehouse (id, seller_id, name, priority) VALUES (1, 2, 'B', 0)",
    "INSERT INTO product (id, seller_id, name) VALUES (1, 1, 'tee'), (2, 2, 'mug')",
    "INSERT INTO product_variant (id, product_id, seller_id, sku, track_inventory) "
    "VALUES (1, 1, 1, 'TEE', true), (2, 2, 2, 'MUG', true)",
    "INSERT INTO stock (id, variant_id, warehouse_id, quantity, quantity_allocated) "
    "VALUES (1, 2, 1, 5, 1)",
    "INSERT INTO orders (id, type, status, shipping_country, allocated) "
    "VALUES (1, 'REGULAR', 'UNFULFILLED', 'DE', true)")


def test_order_lines_get_their_variants_seller_on_a_database_with_data(empty_url: str) -> None:
    """0021 copies each line's seller from its variant and keeps every line, and every
    allocation pointing at one, as it was."""
    _at_revision_with(
        empty_url, "0020", *_SELLERS_AND_VARIANTS,
        "INSERT INTO order_line (id, order_id, variant_id, quantity, quantity_fulfilled) "
        "VALUES (1, 1, 1, 2, 0), (2, 1, 2, 1, 0)",
        "INSERT INTO allocation (id, order_line_id, stock_id, quantity) VALUES (1, 2, 1, 1)")

    command.upgrade(_alembic(empty_url), "head")

    engine = make_engine(Settings(database_url=empty_url))
    with engine.begin() as conn:
        assert conn.execute(text("SELECT id, order_id, variant_id, seller_id, quantity "
                                 "FROM order_line ORDER BY id")).all() == [
            (1, 1, 1, 1, 2), (2, 1, 2, 2, 1)]
        assert conn.execute(text("SELECT order_line_id, stock_id FROM allocation")).all() == [
            (2, 1)]
    with pytest.raises(IntegrityError), engine.begin() as conn:  # every line has its seller
        conn.execute(text("INSERT INTO order_line (order_id, variant_id, quantity, "
                          "quantity_fulfilled) VALUES (1, 1, 1, 0)"))
    engine.dispose()


def test_a_variants_seller_is_held_to_its_products_on_a_database_with_data(
        empty_url: str) -> None:
    """0023 keeps every variant and every stock and line pointing at one; afterwards the
    database refuses a variant whose seller is not its product's (`stock_rules.serves`
    reads the variant's), and 0022 comes back on a downgrade."""
    _at_revision_with(
        empty_url, "0022", *_SELLERS_AND_VARIANTS,
        "INSERT INTO order_line (id, order_id, variant_id, seller_id, quantity, "
        "quantity_fulfilled) VALUES (1, 1, 2, 2, 1, 0)")

    command.upgrade(_alembic(empty_url), "head")

    engine = make_engine(Settings(database_url=empty_url))
    with engine.begin() as conn:
        assert conn.execute(text("SELECT id, product_id, seller_id, sku FROM product_variant "
                                 "ORDER BY id")).all() == [(1, 1, 1, "TEE"), (2, 2, 2, "MUG")]
        assert conn.execute(text("SELECT variant_id FROM stock")).all() == [(2,)]
        assert conn.execute(text("SELECT variant_id FROM order_line")).all() == [(2,)]
        conn.execute(text("INSERT INTO product_variant (id, product_id, seller_id, sku, "
                          "track_inventory) VALUES (3, 1, 1, 'TEE-L', true)"))
    with pytest.raises(IntegrityError), engine.begin() as conn:  # B's variant of A's tee
        conn.execute(text("INSERT INTO product_variant (id, product_id, seller_id, sku, "
                          "track_inventory) VALUES (4, 1, 2, 'TEE', true)"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE product_variant SET seller_id = 2 WHERE id = 1"))
    engine.dispose()

    command.downgrade(_alembic(empty_url), "0022")
    engine = make_engine(Settings(database_url=empty_url))
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM product_variant")).scalar() == 3
        conn.execute(text("INSERT INTO product_variant (id, product_id, seller_id, sku, "
                          "track_inventory) VALUES (4, 1, 2, 'TEE', true)"))  # key gone
    engine.dispose()


def test_a_variant_of_another_sellers_product_fails_the_upgrade(empty_url: str) -> None:
    """0023 on a database where a variant's seller is not its product's: it refuses, on
    SQLite too (whose rebuild copies the table with its foreign keys off)."""
    _at_revision_with(
        empty_url, "0022",
        "INSERT INTO seller (id, name) VALUES (1, 'A'), (2, 'B')",
        "INSERT INTO product (id, seller_id, name) VALUES (1, 1, 'tee')",
        "INSERT INTO product_variant (id, product_id, seller_id, sku, track_inventory) "
        "VALUES (1, 1, 2, 'TEE', true)")

    with pytest.raises(RuntimeError, match="not their product's"):
        command.upgrade(_alembic(empty_url), "head")
