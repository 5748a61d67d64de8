"""Schema and data for the bench: migrate, then seed with set-based inserts, then a token."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.database import BenchDatabase

WAREHOUSES = 3
VARIANTS_PER_PRODUCT = 10
BIG_STOCK = 1_000_000
HOT_UNITS = (400_000, 300_000, 300_000)
SEEDED_TABLES = ("seller", "shipping_zone", "warehouse", "product", "product_variant", "stock")
CATALOG_TABLES = (*SEEDED_TABLES, "shipping_zone_country", "warehouse_shipping_zone",
                  "order_type_allocation")


@dataclass(frozen=True, slots=True)
class Seeded:
    """Primary keys the workloads need, and the admin token."""

    spread_variants: tuple[int, ...]
    hot_variant: int
    bounded_variant: int
    bounded_units: int
    token: str
    actor: str  # how the app's ledger names the token's holder ("admin:<token id>")


def migrate(db: BenchDatabase) -> None:
    """`stockyard migrate` on the bench database."""
    import cli
    from domain.settings import Settings

    cli.migrate(Settings(database_url=db.url))


def create_admin_token(db: BenchDatabase) -> tuple[str, str]:
    """An admin token, created the way `stockyard token create --role admin` does, and the
    actor name the ledger records for it (`Principal.name`)."""
    from domain.db import make_engine, session_factories
    from domain.models import Role
    from domain.services.tokens import create_token
    from domain.settings import Settings
    from domain.uow import UnitOfWork

    engine = make_engine(Settings(database_url=db.url))
    try:
        writer, _ = session_factories(engine)
        token = create_token(UnitOfWork(writer), Role.ADMIN)
    finally:
        engine.dispose()
    with db.connection() as conn:
        token_id = conn.execute("SELECT MAX(id) FROM api_token").fetchone()[0]
    return token, f"{Role.ADMIN.value}:{token_id}"


def _split(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def seed(db: BenchDatabase, variants: int, bounded_units: int) -> Seeded:
    """Seller, DE zone, 3 warehouses, `variants` spread variants, a hot and a bounded one."""
    wids = list(range(1, WAREHOUSES + 1))
    products = -(-variants // VARIANTS_PER_PRODUCT)
    hot_product, bounded_product = products + 1, products + 2
    hot, bounded = variants + 1, variants + 2
    variant_rows = [(v, (v - 1) // VARIANTS_PER_PRODUCT + 1, 1, f"BENCH-{v:06d}", True)
                    for v in range(1, variants + 1)]
    variant_rows += [(hot, hot_product, 1, "BENCH-HOT", True),
                     (bounded, bounded_product, 1, "BENCH-BOUNDED", True)]
    stock_rows: list[tuple[int, ...]] = [(v, w, BIG_STOCK, 0) for v in range(1, variants + 1)
                                         for w in wids]
    stock_rows += [(hot, w, q, 0) for w, q in zip(wids, HOT_UNITS, strict=True)]
    stock_rows += [(bounded, w, q, 0) for w, q in zip(wids, _split(bounded_units, WAREHOUSES),
                                                       strict=True)]
    stock_rows = [(i, *row) for i, row in enumerate(stock_rows, start=1)]
    with db.connection() as conn:
        db.begin_writes(conn)
        _insert(db, conn, "seller", ("id", "name"), [(1, "Bench seller")])
        _insert(db, conn, "shipping_zone", ("id", "name"), [(1, "Germany")])
        _insert(db, conn, "shipping_zone_country", ("zone_id", "country"), [(1, "DE")])
        _insert(db, conn, "warehouse", ("id", "seller_id", "name", "priority"),
                [(w, 1, f"Bench warehouse {w}", w) for w in wids])
        _insert(db, conn, "warehouse_shipping_zone", ("warehouse_id", "zone_id"),
                [(w, 1) for w in wids])
        _insert(db, conn, "product", ("id", "seller_id", "name"),
                [(p, 1, f"Bench product {p}") for p in range(1, bounded_product + 1)])
        _insert(db, conn, "product_variant",
                ("id", "product_id", "seller_id", "sku", "track_inventory"),
                variant_rows)
        _insert(db, conn, "stock",
                ("id", "variant_id", "warehouse_id", "quantity", "quantity_allocated"),
                stock_rows)
        if db.kind == "postgresql":
            for table in SEEDED_TABLES:
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                             f"(SELECT max(id) FROM {table}))")
        # on PostgreSQL the catalog only: tables analyzed while empty make every connection
        # plan its foreign-key checks against them as sequential scans, kept until the next
        # ANALYZE; a real shop's order tables are big and analyzed (README)
        db.commit_and_analyze(conn, CATALOG_TABLES)
    return Seeded(tuple(range(1, variants + 1)), hot, bounded, bounded_units,
                  *create_admin_token(db))


def _insert(db: BenchDatabase, conn: Any, table: str, columns: Sequence[str],
            rows: Iterable[Sequence[object]]) -> None:
    """COPY on PostgreSQL, executemany on SQLite."""
    cols = ", ".join(columns)
    if db.kind == "postgresql":
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
