"""stockBulkUpdate: per-row results, the two error policies, the ledger, and large requests."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, select

from domain.models import ProductVariant, Role
from tests.api.test_ledger import brief, movements
from tests.api.test_stock_operations import (
    ERROR_FIELDS,
    UNKNOWN,
    actor,
    allocate,
    codes,
    snapshot,
)
from tests.conftest import Api
from tests.factories import OUTSIDERS, REFUSAL, Shop, gid, outsider_token, shop, unique

pytestmark = pytest.mark.anyio

BULK = f"""mutation($stocks: [StockBulkUpdateInput!]!, $policy: ErrorPolicy) {{
  stockBulkUpdate(stocks: $stocks, errorPolicy: $policy) {{
    count
    results {{ stock {{ quantity quantityAllocated quantityShort warehouse {{ id }}
                        variant {{ id }} }}
               errors {{ {ERROR_FIELDS} }} }}
    errors {{ {ERROR_FIELDS} }} }} }}"""


async def bulk(api: Api, rows: list[dict[str, Any]], policy: str | None = None,
               token: str | None = "admin") -> dict[str, Any]:
    variables: dict[str, Any] = {"stocks": rows}
    if policy is not None:
        variables["policy"] = policy
    return (await api.gql(BULK, variables, token=token))["stockBulkUpdate"]  # type: ignore[no-any-return]


def row(warehouse: int, quantity: int, *, variant: int | None = None, sku: str | None = None,
        **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"warehouseId": gid("Warehouse", warehouse), "quantity": quantity}
    if variant is not None:
        r["variantId"] = gid("ProductVariant", variant)
    if sku is not None:
        r["sku"] = sku
    return {**r, **extra}


def figures(result: dict[str, Any]) -> tuple[str, str, int, int] | None:
    stock = result["stock"]
    if stock is None:
        return None
    return (stock["variant"]["id"], stock["warehouse"]["id"], stock["quantity"],
            stock["quantityAllocated"])


def sku_of(api: Api, variant: int) -> str:
    return str(api.db.scalar("SELECT sku FROM product_variant WHERE id = :v", v=variant))


async def test_rows_set_on_hand_by_variant_or_sku_and_answer_in_order(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    second = s.world.variant(s.product, sku=unique("BULK"), stocks={s.w1: 1})
    w3 = s.world.warehouse(s.seller, [s.zone], priority=2)
    before_movements = snapshot(api)[1]

    payload = await bulk(api, [
        row(s.w1, 4, variant=s.variant),
        row(s.w2, 6, sku=sku_of(api, second)),                            # creates the stock
        row(s.w1, 1, variant=second, sku=sku_of(api, second)),          # unchanged
        row(w3, 0, variant=s.variant),                                   # creates, 0 units
    ])
    nodes = await movements(api, first=100)

    v1, v2 = gid("ProductVariant", s.variant), gid("ProductVariant", second)
    assert payload["errors"] == []
    assert payload["count"] == 4
    assert [figures(r) for r in payload["results"]] == [
        (v1, gid("Warehouse", s.w1), 4, 0), (v2, gid("Warehouse", s.w2), 6, 0),
        (v2, gid("Warehouse", s.w1), 1, 0), (v1, gid("Warehouse", w3), 0, 0)]
    assert [r["errors"] for r in payload["results"]] == [[], [], [], []]
    assert s.world.stock(s.variant, s.w1) == (4, 0)
    assert s.world.stock(second, s.w2) == (6, 0)
    assert s.world.stock(second, s.w1) == (1, 0)
    assert s.world.stock(s.variant, w3) == (0, 0)
    new = nodes[:len(nodes) - before_movements]
    assert sorted(brief(new)) == [("STOCK_UPDATE", -6, 0, 4, 0), ("STOCK_UPDATE", 6, 0, 6, 0)]
    assert {n["actor"] for n in new} == {actor(api)}


async def test_setting_the_same_quantity_records_no_movement(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=3)
    before = snapshot(api)

    payload = await bulk(api, [row(s.w1, 10, variant=s.variant), row(s.w2, 3, variant=s.variant)])

    assert payload["errors"] == []
    assert payload["count"] == 2
    assert [figures(r)[2] for r in payload["results"]] == [10, 3]  # type: ignore[index]
    assert snapshot(api) == before


BAD_ROWS = {
    # name: (row builder, expected (code, field) of row 1)
    "neither variant nor sku": (lambda s, api: row(s.w2, 1),
                                ("INVALID", "stocks.1.variantId")),
    "variant and sku disagree": (
        lambda s, api: row(s.w2, 1, variant=s.variant,
                           sku=sku_of(api, s.world.variant(s.product))),
        ("INVALID", "stocks.1.sku")),
    "unknown sku": (lambda s, api: row(s.w2, 1, sku="NO-SUCH-SKU"),
                    ("NOT_FOUND", "stocks.1.sku")),
    "unknown variant": (lambda s, api: row(s.w2, 1, variant=UNKNOWN),
                        ("NOT_FOUND", "stocks.1.variantId")),
    "malformed variant": (lambda s, api: {**row(s.w2, 1), "variantId": "??"},
                          ("INVALID", "stocks.1.variantId")),
    "unknown warehouse": (lambda s, api: row(UNKNOWN, 1, variant=s.variant),
                          ("NOT_FOUND", "stocks.1.warehouseId")),
    # another variant: a repeat of a stock is INVALID even after a bad row for it
    "negative quantity": (lambda s, api: row(s.w2, -1, variant=s.world.variant(s.product)),
                          ("INVALID", "stocks.1.quantity")),
    "same stock twice": (lambda s, api: row(s.w1, 7, sku=sku_of(api, s.variant)),
                         ("INVALID", "stocks.1.warehouseId")),
}


def bad_request(api: Api, name: str) -> tuple[Shop, list[dict[str, Any]], tuple[str, str]]:
    s = shop(api.db, stock1=10, stock2=0)
    build, expected = BAD_ROWS[name]
    rows = [row(s.w1, 4, variant=s.variant), build(s, api), row(s.w2, 5, variant=s.variant)]
    return s, rows, expected


@pytest.mark.parametrize("name", list(BAD_ROWS))
async def test_one_bad_row_rejects_everything_by_default(api: Api, name: str) -> None:
    _, rows, expected = bad_request(api, name)
    before = snapshot(api)

    payload = await bulk(api, rows)

    assert payload["count"] == 0
    assert [r["stock"] for r in payload["results"]] == [None, None, None]
    assert [codes(r["errors"]) for r in payload["results"]] == [[], [expected], []]
    assert payload["errors"] == payload["results"][1]["errors"]
    assert snapshot(api) == before


@pytest.mark.parametrize("name", list(BAD_ROWS))
async def test_rejecting_failed_rows_applies_the_good_ones(api: Api, name: str) -> None:
    s, rows, expected = bad_request(api, name)
    before = snapshot(api)

    payload = await bulk(api, rows, policy="REJECT_FAILED_ROWS")
    nodes = await movements(api, first=100)

    v1 = gid("ProductVariant", s.variant)
    assert payload["errors"] == []
    assert payload["count"] == 2
    assert [figures(r) for r in payload["results"]] == [
        (v1, gid("Warehouse", s.w1), 4, 0), None, (v1, gid("Warehouse", s.w2), 5, 0)]
    assert [codes(r["errors"]) for r in payload["results"]] == [[], [expected], []]
    assert s.world.stock(s.variant, s.w1) == (4, 0)
    assert s.world.stock(s.variant, s.w2) == (5, 0)
    assert sorted(brief(nodes[:len(nodes) - before[1]])) == [
        ("STOCK_UPDATE", -6, 0, 4, 0), ("STOCK_UPDATE", 5, 0, 5, 0)]


async def test_a_stock_named_twice_is_invalid_on_the_later_row_even_when_the_first_is_bad(
    api: Api,
) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    before = snapshot(api)

    payload = await bulk(api, [row(s.w1, -1, variant=s.variant),
                               row(s.w1, 5, sku=sku_of(api, s.variant))],
                         policy="REJECT_FAILED_ROWS")

    assert payload["count"] == 0
    assert [codes(r["errors"]) for r in payload["results"]] == [
        [("INVALID", "stocks.0.quantity")], [("INVALID", "stocks.1.warehouseId")]]
    assert snapshot(api) == before


async def test_explicit_reject_everything_reports_every_bad_row(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    before = snapshot(api)

    payload = await bulk(api, [row(s.w1, -2, variant=s.variant), row(s.w2, 1, sku="NOPE"),
                               row(s.w2, 1, variant=s.variant)], policy="REJECT_EVERYTHING")

    assert payload["count"] == 0
    assert [r["stock"] for r in payload["results"]] == [None, None, None]
    assert [codes(r["errors"]) for r in payload["results"]] == [
        [("INVALID", "stocks.0.quantity")], [("NOT_FOUND", "stocks.1.sku")], []]
    assert codes(payload["errors"]) == [("INVALID", "stocks.0.quantity"),
                                        ("NOT_FOUND", "stocks.1.sku")]
    assert snapshot(api) == before


async def test_a_row_below_allocated_is_invalid_without_force(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    allocate(s, 6)
    before = snapshot(api)

    payload = await bulk(api, [row(s.w1, 5, variant=s.variant)])

    assert payload["count"] == 0
    assert payload["results"][0]["stock"] is None
    assert codes(payload["results"][0]["errors"]) == [("INVALID", "stocks.0.quantity")]
    assert payload["errors"] == payload["results"][0]["errors"]
    assert snapshot(api) == before


async def test_a_forced_row_below_allocated_records_the_shortfall(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    allocate(s, 6)

    payload = await bulk(api, [row(s.w1, 4, variant=s.variant, force=True)])
    nodes = await movements(api, types=["STOCK_UPDATE"])

    assert payload["errors"] == []
    assert payload["count"] == 1
    stock = payload["results"][0]["stock"]
    assert (stock["quantity"], stock["quantityAllocated"], stock["quantityShort"]) == (4, 6, 2)
    assert s.world.stock(s.variant, s.w1) == (4, 6)
    assert brief(nodes)[0] == ("STOCK_UPDATE", -6, 0, 4, 6)


async def test_a_row_at_exactly_the_allocated_quantity_applies(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    allocate(s, 6)

    payload = await bulk(api, [row(s.w1, 6, variant=s.variant)])

    assert payload["errors"] == []
    assert s.world.stock(s.variant, s.w1) == (6, 6)


@pytest.mark.parametrize("who", OUTSIDERS)
async def test_bulk_update_without_the_right_token_is_denied_and_changes_nothing(
        api: Api, who: str) -> None:
    s = shop(api.db, stock1=10)
    token = outsider_token(api, s, who)
    before = snapshot(api)

    payload = await bulk(api, [row(s.w1, 4, variant=s.variant)], token=token)

    assert payload["count"] == 0
    assert REFUSAL[who] in {e["code"] for e in payload["errors"]}
    assert all(r["stock"] is None for r in payload["results"])
    assert snapshot(api) == before


async def test_another_sellers_warehouse_or_variant_reads_as_unknown(api: Api) -> None:
    """Same codes, fields and messages as ids and SKUs that exist nowhere."""
    s = shop(api.db, stock1=10)
    token = api.token(Role.SELLER, s.world.seller())
    sku = sku_of(api, s.variant)
    before = snapshot(api)

    theirs = await bulk(api, [row(s.w1, 4, variant=s.variant), row(s.w1, 4, sku=sku)],
                        policy="REJECT_FAILED_ROWS", token=token)
    nowhere = await bulk(api, [row(UNKNOWN, 4, variant=UNKNOWN), row(UNKNOWN, 4, sku="NO-SKU")],
                         policy="REJECT_FAILED_ROWS", token=token)

    def said(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
        rows = [e for r in payload["results"] for e in r["errors"]]
        return [(e["code"], e["field"], e["message"]) for e in [*payload["errors"], *rows]]
    assert said(theirs) == said(nowhere)
    assert {code for code, _, _ in said(theirs)} == {"NOT_FOUND"}
    assert snapshot(api) == before


async def test_a_sku_names_the_variant_of_the_warehouses_seller(api: Api) -> None:
    """Two sellers may both sell "TEE-M": each row reaches its own warehouse's seller's."""
    mine, theirs = shop(api.db, stock1=1), shop(api.db, stock1=1)
    sku = unique("TEE")
    my_variant = mine.world.variant(mine.product, sku=sku)
    their_variant = theirs.world.variant(theirs.product, sku=sku)

    payload = await bulk(api, [row(mine.w1, 5, sku=sku), row(theirs.w1, 8, sku=sku)])

    assert payload["errors"] == []
    assert mine.world.stock(my_variant, mine.w1) == (5, 0)
    assert theirs.world.stock(their_variant, theirs.w1) == (8, 0)
    as_seller = await bulk(api, [row(theirs.w1, 2, sku=sku)],
                           token=api.token(Role.SELLER, mine.seller))
    assert [e["code"] for e in as_seller["errors"]] == ["NOT_FOUND"]
    assert theirs.world.stock(their_variant, theirs.w1) == (8, 0)


async def test_the_seller_may_bulk_update_its_own_stock(api: Api) -> None:
    s = shop(api.db, stock1=10)
    token = api.token(Role.SELLER, s.seller)

    payload = await bulk(api, [row(s.w1, 3, variant=s.variant)], token=token)
    nodes = await movements(api, types=["STOCK_UPDATE"])

    assert payload["errors"] == []
    assert s.world.stock(s.variant, s.w1) == (3, 0)
    assert brief(nodes)[0] == ("STOCK_UPDATE", -7, 0, 3, 0)
    assert nodes[0]["actor"] == actor(api, token)


def many_variants(api: Api, s: Shop, count: int) -> list[tuple[int, str]]:
    """`count` fresh variants (id, sku) without stocks, inserted in one statement."""
    prefix = unique("MANY")
    skus = [f"{prefix}-{i:05d}" for i in range(count)]
    with api.db.engine.begin() as conn:
        conn.execute(insert(ProductVariant), [
            {"product_id": s.product, "seller_id": s.seller, "sku": sku, "track_inventory": True}
            for sku in skus])
        found = dict(conn.execute(select(ProductVariant.sku, ProductVariant.id)
                                  .where(ProductVariant.sku.in_(skus))).all())
    return [(found[sku], sku) for sku in skus]


async def test_two_thousand_rows_apply_in_one_request(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    variants = many_variants(api, s, 1000)
    rows = [r for i, (vid, sku) in enumerate(variants)
            for r in (row(s.w1, i % 50 + 1, sku=sku), row(s.w2, i % 7 + 1, variant=vid))]
    movements_before = snapshot(api)[1]

    created = await bulk(api, rows)
    movements_after_create = snapshot(api)[1]
    rows_again = [{**r, "quantity": r["quantity"] + (i % 2)} for i, r in enumerate(rows)]
    updated = await bulk(api, rows_again, policy="REJECT_FAILED_ROWS")

    assert created["errors"] == []
    assert created["count"] == 2000
    assert [r["stock"]["quantity"] for r in created["results"]] == [r["quantity"] for r in rows]
    assert [r["stock"]["warehouse"]["id"] for r in created["results"]] == [
        r["warehouseId"] for r in rows]
    assert movements_after_create - movements_before == 2000
    assert updated["errors"] == []
    assert updated["count"] == 2000
    assert [r["stock"]["quantity"] for r in updated["results"]] == [
        r["quantity"] for r in rows_again]
    assert snapshot(api)[1] - movements_after_create == 1000   # only the changed half
    ids = [vid for vid, _ in variants]
    totals = api.db.rows(
        "SELECT COUNT(*), SUM(quantity), SUM(quantity_allocated) FROM stock "
        f"WHERE variant_id IN ({', '.join(str(v) for v in ids)})")[0]
    assert tuple(int(c) for c in totals) == (2000, sum(r["quantity"] for r in rows_again), 0)
    ledger = api.db.rows(
        "SELECT COUNT(*), SUM(quantity_change) FROM stock_movement "
        f"WHERE variant_id IN ({', '.join(str(v) for v in ids)})")[0]
    assert tuple(int(c) for c in ledger) == (3000, sum(r["quantity"] for r in rows_again))


async def test_a_bad_row_among_two_thousand_rejects_all_of_them(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    variants = many_variants(api, s, 1000)
    rows = [r for vid, sku in variants
            for r in (row(s.w1, 3, sku=sku), row(s.w2, 4, variant=vid))]
    rows[1999] = row(s.w2, -1, variant=variants[-1][0])
    before = snapshot(api)

    payload = await bulk(api, rows)

    assert payload["count"] == 0
    assert all(r["stock"] is None for r in payload["results"])
    assert codes(payload["errors"]) == [("INVALID", "stocks.1999.quantity")]
    assert snapshot(api) == before


async def test_rows_by_skus_with_quotes_commas_braces_and_backslashes(api: Api) -> None:
    s = shop(api.db, stock1=1)
    odd = 'we"ird,{sku}\\x y'
    variant = s.world.variant(s.product, sku=odd)

    payload = await bulk(api, [{"sku": odd, "warehouseId": gid("Warehouse", s.w1),
                                "quantity": 3}])

    assert payload["errors"] == [] and payload["count"] == 1
    assert s.world.stock(variant, s.w1) == (3, 0)
