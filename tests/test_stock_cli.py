"""`stockyard check` and `stockyard import-stock`, run in-process against both databases."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli
from domain.models import OrderType
from domain.services import orders
from tests.conftest import Database
from tests.factories import ADMIN, gid, shop


@pytest.fixture
def run(db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STOCKYARD_DATABASE_URL", db.url)

    def run(*args: str) -> tuple[int, str]:
        code = cli.main(list(args))
        out = capsys.readouterr()
        return code, out.out + out.err

    return run


def test_check_passes_on_balanced_books(db: Database, run) -> None:  # type: ignore[no-untyped-def]
    s = shop(db, stock1=5, stock2=3)
    view = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                         lines=[orders.LineRequest(s.variant, 6)])
    orders.fulfill(db.uow(), ADMIN, view.id, [orders.FulfillRequest(view.lines[0].id, 2)])

    code, output = run("check")

    assert code == 0
    assert "2 stocks: 0 off" in output


def test_check_names_a_corrupted_counter_and_repair_fixes_it(db: Database, run) -> None:  # type: ignore[no-untyped-def]
    s = shop(db, stock1=5)
    orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(s.variant, 2)])
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE stock SET quantity_allocated = 4 WHERE quantity = 5")

    code, output = run("check")
    repaired, repair_output = run("check", "--repair")
    after, _ = run("check")

    assert code == 1
    assert "allocated 4 != live allocations 2" in output
    assert repaired == 0 and "before repair" in repair_output
    assert after == 0
    assert s.world.stock(s.variant, s.w1) == (5, 2)
    movement = db.rows("SELECT type, allocated_change, allocated_after, actor FROM "
                       "stock_movement ORDER BY id DESC LIMIT 1")[0]
    assert tuple(movement) == ("ADJUSTMENT", 0, 2, "cli:check")


def test_check_reports_on_hand_that_bypassed_the_ledger(db: Database, run) -> None:  # type: ignore[no-untyped-def]
    shop(db, stock1=5)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE stock SET quantity = 7 WHERE quantity = 5")

    code, output = run("check", "--repair")

    assert code == 1
    assert "on-hand 7 != ledger 5" in output


def _csv(tmp_path: Path, text: str) -> str:
    path = tmp_path / "stock.csv"
    path.write_text(text)
    return str(path)


def test_import_stock_applies_a_good_file(db: Database, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = shop(db, stock1=1, stock2=1)
    sku = db.scalar("SELECT sku FROM product_variant")
    w2_name = db.scalar("SELECT name FROM warehouse WHERE id = :w", w=s.w2)
    path = _csv(tmp_path, f"sku,warehouse,quantity\n{sku},{gid('Warehouse', s.w1)},40\n"
                          f"{sku},{w2_name},7\n")

    code, output = run("import-stock", path)

    assert code == 0
    assert "rows applied: 2" in output and "rows rejected: 0" in output
    assert s.world.stock(s.variant, s.w1) == (40, 0)
    assert s.world.stock(s.variant, s.w2) == (7, 0)
    kinds = db.rows("SELECT type, actor, reason FROM stock_movement WHERE type = 'FEED_IMPORT'")
    assert [tuple(k) for k in kinds] == [("FEED_IMPORT", "cli", "import stock.csv")] * 2


def test_import_stock_reads_a_sku_as_the_warehouses_sellers(  # type: ignore[no-untyped-def]
        db: Database, run, tmp_path: Path) -> None:
    mine, theirs = shop(db, stock1=1), shop(db, stock1=1)
    my_variant = mine.world.variant(mine.product, sku="TSHIRT-M")
    their_variant = theirs.world.variant(theirs.product, sku="TSHIRT-M")
    path = _csv(tmp_path, f"sku,warehouse,quantity\nTSHIRT-M,{mine.w1},12\n"
                          f"TSHIRT-M,{theirs.w1},5\n")

    code, output = run("import-stock", path)

    assert code == 0, output
    assert mine.world.stock(my_variant, mine.w1) == (12, 0)
    assert theirs.world.stock(their_variant, theirs.w1) == (5, 0)


def test_import_stock_rejects_bad_rows_with_line_numbers_and_applies_nothing(  # type: ignore[no-untyped-def]
    db: Database, run, tmp_path: Path,
) -> None:
    s = shop(db, stock1=1)
    sku = db.scalar("SELECT sku FROM product_variant")
    path = _csv(tmp_path, f"sku,warehouse,quantity\n{sku},{s.w1},40\nNOPE,{s.w1},3\n"
                          f"{sku},no such warehouse,2\n{sku},{s.w1},-1\n{sku},{s.w1},x\n")

    code, output = run("import-stock", path)

    assert code == 1
    assert "rows applied: 0" in output and "rows rejected: 4" in output
    for line in ("line 3:", "line 4:", "line 5:", "line 6:"):
        assert line in output
    assert s.world.stock(s.variant, s.w1) == (1, 0)


def test_import_stock_can_keep_the_good_rows(db: Database, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = shop(db, stock1=1)
    sku = db.scalar("SELECT sku FROM product_variant")
    path = _csv(tmp_path, f"sku,warehouse,quantity\n{sku},{s.w1},40\nNOPE,{s.w1},3\n")

    code, output = run("import-stock", path, "--error-policy", "reject-failed-rows")

    assert code == 1
    assert "rows applied: 1" in output and "line 3:" in output
    assert s.world.stock(s.variant, s.w1) == (40, 0)


def test_import_stock_needs_the_header(db: Database, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _csv(tmp_path, "sku;warehouse;quantity\nA;B;1\n")

    code, output = run("import-stock", path)

    assert code == 2
    assert "header row lacks" in output
