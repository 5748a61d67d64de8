"""Hostile input to every mutation (API.md "Errors").

Whatever arrives, the answer is not a 5xx, is JSON, carries no traceback, SQL or driver text
and no masked "Unexpected error." (that is an internal exception: a bug). A problem with a
mutation's input is a typed payload error (INVALID, NOT_FOUND, ...) and changes nothing; a
query that does not fit the schema gets GraphQL's own error.

Tests that probe many values collect every problem before failing, each with the exact
input and the server-side exception strawberry logged (`strawberry.execution`).
"""

from __future__ import annotations

import base64
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from domain.models import OrderType
from domain.services import orders
from tests.conftest import Api, Database
from tests.factories import ADMIN, gid, shop, unique

pytestmark = pytest.mark.anyio

MASKED = "Unexpected error."
LEAKS = ("traceback", "sqlalchemy", "psycopg", "sqlite3")
INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
HUGE = "x" * 100_000
ANSWER_WITHIN = 60.0  # seconds; longer is a hang
ROOT = str(Path(__file__).resolve().parents[2]) + "/"
ERRORS = "errors { code field message variantId warehouseId requested available }"


def b64(raw: str | bytes) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


# ---------------------------------------------------------------------------- documents

SELLER_CREATE = f"""mutation($input: SellerCreateInput!) {{
  sellerCreate(input: $input) {{ seller {{ id name }} {ERRORS} }} }}"""
ZONE_CREATE = f"""mutation($input: ShippingZoneCreateInput!) {{
  shippingZoneCreate(input: $input) {{ shippingZone {{ id name countries }} {ERRORS} }} }}"""
WAREHOUSE_CREATE = f"""mutation($input: WarehouseCreateInput!) {{
  warehouseCreate(input: $input) {{ warehouse {{ id name }} {ERRORS} }} }}"""
PRODUCT_CREATE = f"""mutation($input: ProductCreateInput!) {{
  productCreate(input: $input) {{ product {{ id name }} {ERRORS} }} }}"""
VARIANT_CREATE = f"""mutation($input: ProductVariantCreateInput!) {{
  productVariantCreate(input: $input) {{ productVariant {{ id sku }} {ERRORS} }} }}"""
VARIANT_UPDATE = f"""mutation($id: ID!, $input: ProductVariantUpdateInput!) {{
  productVariantUpdate(id: $id, input: $input) {{ productVariant {{ id }} {ERRORS} }} }}"""
STOCKS_UPDATE = f"""mutation($variantId: ID!, $stocks: [StockInput!]!) {{
  productVariantStocksUpdate(variantId: $variantId, stocks: $stocks) {{
    productVariant {{ id }} {ERRORS} }} }}"""
CONFIG_UPDATE = f"""mutation($input: MarketplaceConfigurationUpdateInput!) {{
  marketplaceConfigurationUpdate(input: $input) {{
    marketplaceConfiguration {{ allocation {{ orderType enabled }} }} {ERRORS} }} }}"""
ORDER_CREATE = f"""mutation($input: OrderCreateInput!) {{
  orderCreate(input: $input) {{ order {{ id }} {ERRORS} }} }}"""
LINES_CREATE = f"""mutation($orderId: ID!, $lines: [OrderLineInput!]!) {{
  orderLinesCreate(orderId: $orderId, lines: $lines) {{ order {{ id }} {ERRORS} }} }}"""
LINE_UPDATE = f"""mutation($id: ID!, $input: OrderLineUpdateInput!) {{
  orderLineUpdate(id: $id, input: $input) {{ order {{ id }} {ERRORS} }} }}"""
LINE_DELETE = f"""mutation($id: ID!) {{
  orderLineDelete(id: $id) {{ order {{ id }} {ERRORS} }} }}"""
ORDER_CONFIRM = f"""mutation($id: ID!) {{
  orderConfirm(id: $id) {{ order {{ id }} {ERRORS} }} }}"""
ORDER_CANCEL = f"""mutation($id: ID!) {{
  orderCancel(id: $id) {{ order {{ id }} {ERRORS} }} }}"""
ORDER_FULFILL = f"""mutation($orderId: ID!, $lines: [OrderFulfillLineInput!]!) {{
  orderFulfill(orderId: $orderId, lines: $lines) {{
    order {{ id }} fulfillment {{ id }} {ERRORS} }} }}"""


# ---------------------------------------------------------------------------- world


@dataclass
class W:
    """Global IDs of a small shop: every mutation has a valid target."""

    seller: str
    zone: str
    w1: str
    w2: str
    product: str
    variant: str  # tracked, 10 + 5 in stock
    untracked: str
    regular: str  # REGULAR order, allocated
    regular_line: str
    draft: str  # DRAFT order
    draft_line: str
    variant_pk: int


@pytest.fixture
def w(api: Api) -> W:
    s = shop(api.db, stock1=10, stock2=5)
    untracked = s.world.variant(s.product, track=False, stocks={s.w1: 0})
    regular = orders.create(api.db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                            lines=[orders.LineRequest(s.variant, 3)])
    draft = orders.create(api.db.uow(), ADMIN, type=OrderType.DRAFT, shipping_country="DE",
                          lines=[orders.LineRequest(s.variant, 1)])
    return W(seller=gid("Seller", s.seller), zone=gid("ShippingZone", s.zone),
             w1=gid("Warehouse", s.w1), w2=gid("Warehouse", s.w2),
             product=gid("Product", s.product), variant=gid("ProductVariant", s.variant),
             untracked=gid("ProductVariant", untracked),
             regular=gid("Order", regular.id), regular_line=gid("OrderLine", regular.lines[0].id),
             draft=gid("Order", draft.id), draft_line=gid("OrderLine", draft.lines[0].id),
             variant_pk=s.variant)


def snapshot(db: Database) -> dict[str, Any]:
    """Everything a failed mutation must leave as it was."""
    tables = ["seller", "shipping_zone", "shipping_zone_country", "warehouse",
              "warehouse_shipping_zone", "product", "product_variant", "stock", "orders",
              "order_line", "allocation", "fulfillment", "fulfillment_line"]
    state: dict[str, Any] = {t: db.scalar(f"SELECT COUNT(*) FROM {t}") for t in tables}
    state["stock"] = db.rows("SELECT id, quantity, quantity_allocated FROM stock ORDER BY id")
    state["lines"] = db.rows("SELECT id, quantity, quantity_fulfilled FROM order_line "
                             "ORDER BY id")
    state["orders"] = db.rows("SELECT id, status FROM orders ORDER BY id")
    state["variants"] = db.rows("SELECT id, track_inventory FROM product_variant ORDER BY id")
    state["config"] = db.rows("SELECT * FROM order_type_allocation ORDER BY 1")
    return state


# ---------------------------------------------------------------------------- checking


@dataclass
class Probe:
    """Sends requests and checks the answers, collecting problems with server-side detail."""

    api: Api
    caplog: pytest.LogCaptureFixture

    def __post_init__(self) -> None:
        self.problems: list[str] = []

    def server_log(self) -> str:
        lines = []
        for record in self.caplog.records:
            if not record.name.startswith("strawberry"):
                continue
            lines.append(f"    logged: {record.getMessage().splitlines()[0][:200]}")
            exc = record.exc_info[1] if record.exc_info else None
            origin = getattr(exc, "original_error", None) or exc
            if origin is None:
                continue
            for f in traceback.extract_tb(origin.__traceback__):
                if f.filename.startswith(ROOT) and "/site-packages/" not in f.filename:
                    lines.append(f"      at {f.filename[len(ROOT):]}:{f.lineno} {f.name}")
            lines.append(f"      {type(origin).__module__}.{type(origin).__name__}: "
                         f"{str(origin).splitlines()[0][:300]}")
        return "\n".join(lines)

    def problem(self, label: str, message: str) -> None:
        log = self.server_log()
        self.problems.append(f"[{label}] {message}" + (f"\n{log}" if log else ""))

    async def send(self, query: str, variables: dict[str, Any] | None = None,
                   ) -> tuple[httpx.Response | None, float]:
        self.caplog.clear()
        started = time.monotonic()
        # json.dumps escapes to ASCII, so lone surrogates and NULs travel as JSON escapes
        content = json.dumps({"query": query, "variables": variables or {}}).encode()
        headers = {"authorization": f"Bearer {self.api.admin}",
                   "content-type": "application/json"}
        with anyio.move_on_after(ANSWER_WITHIN):
            response = await self.api.client.post("/graphql", content=content, headers=headers)
            return response, time.monotonic() - started
        return None, time.monotonic() - started

    def sane(self, label: str, response: httpx.Response | None,
             elapsed: float = 0.0) -> dict[str, Any] | None:
        """The JSON body when the answer is sane; None (and a problem noted) otherwise."""
        if response is None:
            self.problem(label, f"no answer within {elapsed:.0f}s (hang)")
            return None
        text = response.text
        if response.status_code >= 500:
            self.problem(label, f"HTTP {response.status_code}: {text[:300]}")
            return None
        try:
            body = response.json()
        except ValueError:
            self.problem(label, f"not JSON (HTTP {response.status_code}, "
                                f"{response.headers.get('content-type')}): {text[:200]!r}")
            return None
        if not isinstance(body, dict):
            self.problem(label, f"JSON but not an object: {text[:200]}")
            return None
        lowered = text.lower()
        leaked = [m for m in LEAKS if m in lowered]
        if leaked:
            self.problem(label, f"response leaks {leaked}: {text[:500]}")
            return None
        masked = [e for e in body.get("errors") or [] if e.get("message") == MASKED]
        if masked:
            self.problem(label, f"internal failure, masked as {MASKED!r}: "
                                f"{str(body['errors'])[:300]}")
            return None
        return body

    async def mutation(
        self, label: str, query: str, variables: dict[str, Any], field: str,
        codes: set[str], *, may_succeed: bool = False,
    ) -> dict[str, Any] | None:
        """A mutation that must fail with a typed error in `codes` (or, with `may_succeed`,
        work) and, when it fails, change nothing. Returns the payload."""
        before = snapshot(self.api.db)
        response, elapsed = await self.send(query, variables)
        body = self.sane(label, response, elapsed)
        if body is None:
            return None
        if body.get("errors"):
            self.problem(label, f"GraphQL error instead of a payload error: {body['errors']}")
            return None
        payload = (body.get("data") or {}).get(field)
        if not isinstance(payload, dict) or not isinstance(payload.get("errors"), list):
            self.problem(label, f"no {field} payload: {str(body)[:300]}")
            return None
        errors = payload["errors"]
        results = {k: v for k, v in payload.items() if k != "errors"}
        if not errors:
            if not may_succeed:
                self.problem(label, f"accepted, expected one of {sorted(codes)}: "
                                    f"{str(payload)[:200]}")
            elif any(v is None for v in results.values()):
                self.problem(label, f"no errors but a null result: {payload}")
            return payload
        found = {e["code"] for e in errors}
        if not found <= codes:
            self.problem(label, f"error codes {sorted(found)}, expected {sorted(codes)}: "
                                f"{str(errors)[:300]}")
        if any(v is not None for v in results.values()):
            self.problem(label, f"failed but the result is not null: {str(payload)[:200]}")
        if snapshot(self.api.db) != before:
            self.problem(label, "failed but the database changed")
        return payload

    async def graphql_error(self, label: str, query: str,
                            variables: dict[str, Any] | None = None) -> None:
        """A request GraphQL itself refuses: top-level errors, nothing executed."""
        before = snapshot(self.api.db)
        response, elapsed = await self.send(query, variables)
        body = self.sane(label, response, elapsed)
        if body is None:
            return
        if not body.get("errors"):
            self.problem(label, f"accepted, expected a GraphQL error: {str(body)[:300]}")
        if snapshot(self.api.db) != before:
            self.problem(label, "refused but the database changed")

    def done(self) -> None:
        assert not self.problems, f"{len(self.problems)} problem(s):\n" + "\n".join(
            self.problems)


@pytest.fixture
def probe(api: Api, caplog: pytest.LogCaptureFixture) -> Iterator[Probe]:
    caplog.set_level(logging.ERROR, logger="strawberry.execution")
    yield Probe(api, caplog)


# ---------------------------------------------------------------------------- global IDs

# (slot label, type the slot expects, builder of (query, variables, payload field))
Build = Callable[[W, Any], tuple[str, dict[str, Any], str]]
ID_SLOTS: list[tuple[str, str, Build]] = [
    ("warehouseCreate.sellerId", "Seller", lambda w, x: (WAREHOUSE_CREATE, {"input": {
        "sellerId": x, "name": "wh", "shippingZoneIds": [w.zone]}}, "warehouseCreate")),
    ("warehouseCreate.shippingZoneIds", "ShippingZone", lambda w, x: (WAREHOUSE_CREATE, {
        "input": {"sellerId": w.seller, "name": "wh", "shippingZoneIds": [w.zone, x]}},
        "warehouseCreate")),
    ("productCreate.sellerId", "Seller", lambda w, x: (PRODUCT_CREATE, {"input": {
        "sellerId": x, "name": "p"}}, "productCreate")),
    ("productVariantCreate.productId", "Product", lambda w, x: (VARIANT_CREATE, {"input": {
        "productId": x, "sku": unique("SKU")}}, "productVariantCreate")),
    ("productVariantUpdate.id", "ProductVariant", lambda w, x: (VARIANT_UPDATE, {
        "id": x, "input": {"trackInventory": False}}, "productVariantUpdate")),
    ("productVariantStocksUpdate.variantId", "ProductVariant", lambda w, x: (STOCKS_UPDATE, {
        "variantId": x, "stocks": [{"warehouseId": w.w1, "quantity": 50}]},
        "productVariantStocksUpdate")),
    ("productVariantStocksUpdate.stocks.warehouseId", "Warehouse", lambda w, x: (
        STOCKS_UPDATE, {"variantId": w.variant, "stocks": [
            {"warehouseId": w.w1, "quantity": 50}, {"warehouseId": x, "quantity": 1}]},
        "productVariantStocksUpdate")),
    ("orderCreate.lines.variantId", "ProductVariant", lambda w, x: (ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE", "lines": [
            {"variantId": w.variant, "quantity": 1}, {"variantId": x, "quantity": 1}]}},
        "orderCreate")),
    ("orderLinesCreate.orderId", "Order", lambda w, x: (LINES_CREATE, {
        "orderId": x, "lines": [{"variantId": w.variant, "quantity": 1}]}, "orderLinesCreate")),
    ("orderLinesCreate.lines.variantId", "ProductVariant", lambda w, x: (LINES_CREATE, {
        "orderId": w.draft, "lines": [{"variantId": x, "quantity": 1}]}, "orderLinesCreate")),
    ("orderLineUpdate.id", "OrderLine", lambda w, x: (LINE_UPDATE, {
        "id": x, "input": {"quantity": 2}}, "orderLineUpdate")),
    ("orderLineDelete.id", "OrderLine", lambda w, x: (LINE_DELETE, {"id": x},
                                                      "orderLineDelete")),
    ("orderConfirm.id", "Order", lambda w, x: (ORDER_CONFIRM, {"id": x}, "orderConfirm")),
    ("orderCancel.id", "Order", lambda w, x: (ORDER_CANCEL, {"id": x}, "orderCancel")),
    ("orderFulfill.orderId", "Order", lambda w, x: (ORDER_FULFILL, {
        "orderId": x, "lines": [{"orderLineId": w.regular_line, "quantity": 1}]},
        "orderFulfill")),
    ("orderFulfill.lines.orderLineId", "OrderLine", lambda w, x: (ORDER_FULFILL, {
        "orderId": w.regular, "lines": [{"orderLineId": x, "quantity": 1}]}, "orderFulfill")),
    ("orderFulfill.lines.warehouseId", "Warehouse", lambda w, x: (ORDER_FULFILL, {
        "orderId": w.regular, "lines": [
            {"orderLineId": w.regular_line, "quantity": 1, "warehouseId": x}]},
        "orderFulfill")),
]


def bad_ids(type_name: str, w: W) -> list[tuple[str, str]]:
    other = w.product if type_name != "Product" else w.seller
    return [
        ("not base64", "not base64!"),
        ("base64 of garbage", b64("garbage")),
        ("base64 of binary", b64(b"\xff\xfe\x00\x01")),
        ("empty", ""),
        ("NUL", "\x00"),
        ("lone surrogate", "\ud800"),
        ("100k chars", "A" * 100_000),
        ("unknown type", b64("Nope:1")),
        ("wrong type's ID", other),
        ("no pk", b64(f"{type_name}:")),
        ("pk 0", b64(f"{type_name}:0")),
        ("negative pk", b64(f"{type_name}:-1")),
        ("pk 1.5", b64(f"{type_name}:1.5")),
        ("pk 2^31 (fits int64)", b64(f"{type_name}:{2**31}")),
        ("pk 10^18-1 (fits int64)", b64(f"{type_name}:{10**18 - 1}")),
        ("pk 2^63-1", b64(f"{type_name}:{2**63 - 1}")),
        ("pk beyond 2^63", b64(f"{type_name}:{2**63}")),
        ("pk 10^30", b64(f"{type_name}:{10**30}")),
    ]


@pytest.mark.parametrize("slot", ID_SLOTS, ids=[s[0] for s in ID_SLOTS])
async def test_malformed_or_foreign_ids_are_typed_errors(
    w: W, probe: Probe, slot: tuple[str, str, Build],
) -> None:
    label, type_name, build = slot
    for what, value in bad_ids(type_name, w):
        query, variables, field = build(w, value)
        await probe.mutation(f"{label} = {what}", query, variables, field,
                             {"INVALID", "NOT_FOUND"})
    probe.done()


# ---------------------------------------------------------------------------- strings

# (slot label, builder, a value the slot accepts when well-formed)
STRING_SLOTS: list[tuple[str, Build]] = [
    ("sellerCreate.name", lambda w, x: (SELLER_CREATE, {"input": {"name": x}},
                                        "sellerCreate")),
    ("shippingZoneCreate.name", lambda w, x: (ZONE_CREATE, {"input": {
        "name": x, "countries": ["DE"]}}, "shippingZoneCreate")),
    ("shippingZoneCreate.countries", lambda w, x: (ZONE_CREATE, {"input": {
        "name": "z", "countries": ["DE", x]}}, "shippingZoneCreate")),
    ("warehouseCreate.name", lambda w, x: (WAREHOUSE_CREATE, {"input": {
        "sellerId": w.seller, "name": x, "shippingZoneIds": [w.zone]}}, "warehouseCreate")),
    ("productCreate.name", lambda w, x: (PRODUCT_CREATE, {"input": {
        "sellerId": w.seller, "name": x}}, "productCreate")),
    ("productVariantCreate.sku", lambda w, x: (VARIANT_CREATE, {"input": {
        "productId": w.product, "sku": x}}, "productVariantCreate")),
    ("orderCreate.shippingCountry", lambda w, x: (ORDER_CREATE, {"input": {
        "type": "DRAFT", "shippingCountry": x,
        "lines": [{"variantId": w.variant, "quantity": 1}]}}, "orderCreate")),
    ("orderCreate.idempotencyKey", lambda w, x: (ORDER_CREATE, {"input": {
        "type": "DRAFT", "shippingCountry": "DE", "idempotencyKey": x,
        "lines": [{"variantId": w.variant, "quantity": 1}]}}, "orderCreate")),
]
MUST_REJECT = [("100k chars", HUGE), ("empty", ""), ("256 chars", "y" * 256),
               ("256 emoji", "😀" * 256)]
MAY_WORK = [("blank", "   "), ("NUL inside", "a\x00b"), ("only NUL", "\x00"),
            ("lone surrogate", "a\ud800b"), ("emoji", "😀🇩🇪"),
            ("RTL + zero-width", "\u202e\u200bx"),
            ("control chars", "\x01\x1b[31m\x7f"), ("SQL", "'; DROP TABLE seller; --"),
            ("255 chars", "z" * 255), ("lower-case country", "de")]


@pytest.mark.parametrize("slot", STRING_SLOTS, ids=[s[0] for s in STRING_SLOTS])
async def test_hostile_strings_work_or_are_invalid(
    w: W, probe: Probe, slot: tuple[str, Build],
) -> None:
    label, build = slot
    for what, value in MUST_REJECT:
        query, variables, field = build(w, value)
        await probe.mutation(f"{label} = {what}", query, variables, field, {"INVALID"})
    for what, value in MAY_WORK:
        query, variables, field = build(w, value)
        await probe.mutation(f"{label} = {what}", query, variables, field,
                             {"INVALID", "DUPLICATE"}, may_succeed=True)
    probe.done()


# ---------------------------------------------------------------------------- Int bounds

# (slot label, builder of a request with the Int `x` in a variable)
INT_SLOTS: list[tuple[str, Build]] = [
    ("orderCreate.lines.quantity", lambda w, x: (ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": w.variant, "quantity": x}]}}, "orderCreate")),
    ("orderLinesCreate.lines.quantity", lambda w, x: (LINES_CREATE, {
        "orderId": w.draft, "lines": [{"variantId": w.variant, "quantity": x}]},
        "orderLinesCreate")),
    ("orderLineUpdate.quantity", lambda w, x: (LINE_UPDATE, {
        "id": w.draft_line, "input": {"quantity": x}}, "orderLineUpdate")),
    ("orderFulfill.lines.quantity", lambda w, x: (ORDER_FULFILL, {
        "orderId": w.regular, "lines": [{"orderLineId": w.regular_line, "quantity": x}]},
        "orderFulfill")),
    ("productVariantStocksUpdate.stocks.quantity", lambda w, x: (STOCKS_UPDATE, {
        "variantId": w.untracked, "stocks": [{"warehouseId": w.w2, "quantity": x}]},
        "productVariantStocksUpdate")),
    ("warehouseCreate.priority", lambda w, x: (WAREHOUSE_CREATE, {"input": {
        "sellerId": w.seller, "name": "wh", "shippingZoneIds": [], "priority": x}},
        "warehouseCreate")),
]


@pytest.mark.parametrize("slot", INT_SLOTS, ids=[s[0] for s in INT_SLOTS])
async def test_int_boundaries(w: W, probe: Probe, slot: tuple[str, Build]) -> None:
    label, build = slot
    for value in (2**31, INT_MIN - 1, 2**53, 10**20):  # not an Int: GraphQL's own error
        query, variables, _ = build(w, value)
        await probe.graphql_error(f"{label} = {value}", query, variables)
    for value in (1.5, "1", True, None):  # wrong type (or null for Int!): GraphQL's error
        query, variables, _ = build(w, value)
        await probe.graphql_error(f"{label} = {value!r}", query, variables)
    codes = {"INVALID", "INSUFFICIENT_STOCK"}
    for value in (INT_MAX, INT_MIN, -1, 0):  # an Int, maybe out of the domain's range
        query, variables, field = build(w, value)
        await probe.mutation(f"{label} = {value}", query, variables, field, codes,
                             may_succeed=True)
    probe.done()


async def test_int_literal_beyond_32_bits_is_a_graphql_error(w: W, probe: Probe) -> None:
    for value in (2**31, INT_MIN - 1, 10**30):
        await probe.graphql_error(f"literal {value}", f"""mutation {{
          orderLineUpdate(id: "{w.draft_line}", input: {{quantity: {value}}}) {{
            order {{ id }} errors {{ code }} }} }}""")
        await probe.graphql_error(f"first: {value}",
                                  f"{{ sellers(first: {value}) {{ edges {{ cursor }} }} }}")
    probe.done()


async def test_stock_figures_at_int_max_stay_readable(w: W, probe: Probe) -> None:
    """Two stocks of INT_MAX each: rejected, or accepted and every figure still readable
    (a sum above INT_MAX is not an Int; the read must not break)."""
    payload = await probe.mutation("stocks = INT_MAX twice", STOCKS_UPDATE, {
        "variantId": w.variant, "stocks": [{"warehouseId": w.w1, "quantity": INT_MAX},
                                           {"warehouseId": w.w2, "quantity": INT_MAX}]},
        "productVariantStocksUpdate", {"INVALID"}, may_succeed=True)
    if payload is not None and not payload["errors"]:
        response, elapsed = await probe.send(
            """query($id: ID!) { node(id: $id) { ... on ProductVariant {
                 quantityAvailable quantityDE: quantityAvailable(country: "DE")
                 stocks { quantity quantityAllocated quantityAvailable } } } }""",
            {"id": w.variant})
        body = probe.sane("read a variant stocked INT_MAX twice", response, elapsed)
        if body is not None and (body.get("errors") or not (body.get("data") or {}).get("node")):
            probe.problem("read a variant stocked INT_MAX twice", f"read broke: {body}")
        await probe.mutation("order 1,000,000 of it", ORDER_CREATE, {
            "input": {"type": "DRAFT", "shippingCountry": "DE",
                      "lines": [{"variantId": w.variant, "quantity": 1_000_000}]}},
            "orderCreate", {"INVALID", "INSUFFICIENT_STOCK"}, may_succeed=True)
    probe.done()


async def test_requested_total_beyond_int_is_a_typed_error(w: W, probe: Probe) -> None:
    """3 lines of 2**31 - 1 each: every line is valid, the total is not an Int."""
    lines = [{"variantId": w.variant, "quantity": 2**31 - 1}] * 3
    await probe.mutation("orderCreate total 2.148e9", ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE", "lines": lines}}, "orderCreate",
        {"INVALID", "INSUFFICIENT_STOCK"})
    await probe.mutation("orderLinesCreate total 2.148e9", LINES_CREATE, {
        "orderId": w.draft, "lines": lines}, "orderLinesCreate",
        {"INVALID", "INSUFFICIENT_STOCK"})
    probe.done()


# ---------------------------------------------------------------------------- big lists

N = 10_000
BIG_LISTS: list[tuple[str, Build, set[str]]] = [
    ("orderCreate.lines (untracked)", lambda w, _: (ORDER_CREATE, {"input": {
        "type": "DRAFT", "shippingCountry": "DE",
        "lines": [{"variantId": w.untracked, "quantity": 1}] * N}}, "orderCreate"),
     {"INVALID"}),
    ("orderCreate.lines (tracked, short)", lambda w, _: (ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": w.variant, "quantity": 1}] * N}}, "orderCreate"),
     {"INVALID", "INSUFFICIENT_STOCK"}),
    ("orderCreate.lines (all malformed IDs)", lambda w, _: (ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": f"bad{i}", "quantity": 1} for i in range(N)]}}, "orderCreate"),
     {"INVALID"}),
    ("orderLinesCreate.lines", lambda w, _: (LINES_CREATE, {
        "orderId": w.draft, "lines": [{"variantId": w.untracked, "quantity": 1}] * N},
        "orderLinesCreate"), {"INVALID"}),
    ("productVariantStocksUpdate.stocks", lambda w, _: (STOCKS_UPDATE, {
        "variantId": w.untracked, "stocks": [{"warehouseId": w.w2, "quantity": 1}] * N},
        "productVariantStocksUpdate"), {"INVALID"}),
    ("warehouseCreate.shippingZoneIds", lambda w, _: (WAREHOUSE_CREATE, {"input": {
        "sellerId": w.seller, "name": "wh", "shippingZoneIds": [w.zone] * N}},
        "warehouseCreate"), {"INVALID"}),
    ("shippingZoneCreate.countries", lambda w, _: (ZONE_CREATE, {"input": {
        "name": "z", "countries": ["DE", "fr", "XX"] * (N // 3)}}, "shippingZoneCreate"),
     {"INVALID"}),
    ("marketplaceConfigurationUpdate.allocation", lambda w, _: (CONFIG_UPDATE, {"input": {
        "allocation": [{"orderType": "QUOTE", "enabled": i % 2 == 0} for i in range(N)]}},
        "marketplaceConfigurationUpdate"), {"INVALID"}),
    ("orderFulfill.lines", lambda w, _: (ORDER_FULFILL, {
        "orderId": w.regular, "lines": [{"orderLineId": w.regular_line, "quantity": 1}] * N},
        "orderFulfill"), {"INVALID"}),
]


@pytest.mark.parametrize("case", BIG_LISTS, ids=[c[0] for c in BIG_LISTS])
async def test_lists_of_ten_thousand_are_refused_before_anything_runs(
        w: W, probe: Probe, case: tuple[str, Build, set[str]]) -> None:
    """A list argument holds at most 1,000 items (API.md, Limits)."""
    label, build, _codes = case
    query, variables, _field = build(w, None)
    await probe.graphql_error(label, query, variables)
    response, _ = await probe.send(query, variables)
    assert response is not None
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["LIST_TOO_LONG"]
    probe.done()


@pytest.mark.parametrize("case", BIG_LISTS, ids=[c[0] for c in BIG_LISTS])
async def test_lists_of_a_thousand_answer(w: W, probe: Probe,
                                          case: tuple[str, Build, set[str]]) -> None:
    label, build, codes = case
    query, variables, field = build(w, None)
    await probe.mutation(label, query, _shorten(variables, 1_000), field, codes,
                         may_succeed=True)
    probe.done()


def _shorten(value: Any, size: int) -> Any:
    """`value` with every list cut to `size` items."""
    if isinstance(value, list):
        return [_shorten(v, size) for v in value[:size]]
    if isinstance(value, dict):
        return {k: _shorten(v, size) for k, v in value.items()}
    return value


async def test_nodes_of_a_thousand_ids_answer(w: W, probe: Probe) -> None:
    ids = [w.variant, "junk", b64("Seller:999999"), w.regular] * 250
    response, elapsed = await probe.send(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids})
    body = probe.sane("nodes x 1,000", response, elapsed)
    if body is not None and len((body.get("data") or {}).get("nodes") or []) != 1_000:
        probe.problem("nodes x 1,000", f"expected 1,000 entries: {str(body)[:200]}")
    probe.done()


# ---------------------------------------------------------------------------- GraphQL level

async def test_wrong_type_and_missing_variables_are_graphql_errors(w: W, probe: Probe) -> None:
    cases: list[tuple[str, str, dict[str, Any] | None]] = [
        ("name is an Int", SELLER_CREATE, {"input": {"name": 5}}),
        ("name is a list", SELLER_CREATE, {"input": {"name": ["a"]}}),
        ("input is a string", SELLER_CREATE, {"input": "name"}),
        ("input is null", SELLER_CREATE, {"input": None}),
        ("input missing", SELLER_CREATE, {}),
        ("no variables at all", SELLER_CREATE, None),
        ("unknown input field", SELLER_CREATE, {"input": {"name": "a", "evil": 1}}),
        ("required field missing", WAREHOUSE_CREATE, {"input": {"name": "wh"}}),
        ("enum not a value", ORDER_CREATE, {"input": {
            "type": "NOPE", "shippingCountry": "DE",
            "lines": [{"variantId": w.variant, "quantity": 1}]}}),
        ("enum lower-case", ORDER_CREATE, {"input": {
            "type": "regular", "shippingCountry": "DE",
            "lines": [{"variantId": w.variant, "quantity": 1}]}}),
        ("line is a string", ORDER_CREATE, {"input": {
            "type": "REGULAR", "shippingCountry": "DE", "lines": ["x"]}}),
        ("null line", ORDER_CREATE, {"input": {
            "type": "REGULAR", "shippingCountry": "DE", "lines": [None]}}),
        ("quantity is a string", LINE_UPDATE, {"id": w.draft_line, "input": {"quantity": "2"}}),
        ("quantity is a float", LINE_UPDATE, {"id": w.draft_line, "input": {"quantity": 2.5}}),
        ("ID is a float", ORDER_CANCEL, {"id": 1.5}),
        ("ID is an object", ORDER_CANCEL, {"id": {"a": 1}}),
        ("ID is a list", ORDER_CANCEL, {"id": [w.regular]}),
        ("ID is null", ORDER_CANCEL, {"id": None}),
        ("trackInventory is a string", VARIANT_UPDATE, {
            "id": w.variant, "input": {"trackInventory": "yes"}}),
        ("stocks is null", STOCKS_UPDATE, {"variantId": w.variant, "stocks": None}),
        ("allocation orderType unknown", CONFIG_UPDATE, {"input": {
            "allocation": [{"orderType": "BOGUS", "enabled": True}]}}),
        ("undeclared variable", "mutation { orderCancel(id: $id) { errors { code } } }",
         {"id": w.regular}),
        ("unknown field", "mutation { orderCancel(id: \"x\") { nope } }", None),
        ("syntax error", "mutation { orderCancel(id: ", None),
        ("deep nesting", "{" * 3000 + "}" * 3000, None),
        ("100k fields", "{ " + "__typename " * 100_000 + "}", None),
    ]
    for label, query, variables in cases:
        await probe.graphql_error(label, query, variables)
    probe.done()


async def test_integer_id_variable_is_coerced_and_rejected(w: W, probe: Probe) -> None:
    """GraphQL coerces an Int to ID: 12 becomes "12", a malformed global ID."""
    await probe.mutation("id = 12", ORDER_CANCEL, {"id": 12}, "orderCancel", {"INVALID"})
    await probe.mutation("id = -1", ORDER_CANCEL, {"id": -1}, "orderCancel", {"INVALID"})
    probe.done()


# ---------------------------------------------------------------------------- HTTP level


HTTP_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("invalid JSON body", "POST", {"content": b"{not json", "json_type": True}),
    ("not UTF-8 body", "POST", {"content": b"\xff\xfe\x00", "json_type": True}),
    ("JSON string body", "POST", {"content": b'"query"', "json_type": True}),
    ("JSON number body", "POST", {"content": b"5", "json_type": True}),
    ("JSON null body", "POST", {"content": b"null", "json_type": True}),
    ("JSON array body", "POST", {"content": b"[1, 2]", "json_type": True}),
    ("empty body", "POST", {"content": b"", "json_type": True}),
    ("no query", "POST", {"content": b"{}", "json_type": True}),
    ("query is a number", "POST", {"content": b'{"query": 5}', "json_type": True}),
    ("variables is a string", "POST", {
        "content": b'{"query": "{ __typename }", "variables": "x"}', "json_type": True}),
    ("empty query", "POST", {"content": b'{"query": ""}', "json_type": True}),
    ("unknown operationName", "POST", {
        "content": b'{"query": "{ __typename }", "operationName": "nope"}',
        "json_type": True}),
    ("text/plain body", "POST", {"content": b"{ __typename }", "headers": {
        "content-type": "text/plain"}}),
    ("GET with a mutation", "GET", {"params": {
        "query": 'mutation { sellerCreate(input: {name: "x"}) { errors { code } } }'}}),
    ("GET with bad variables", "GET", {"params": {
        "query": "{ __typename }", "variables": "{bad"}}),
    ("GET with no query", "GET", {"headers": {"accept": "application/json"}}),
    ("PUT", "PUT", {"content": b'{"query": "{ __typename }"}', "json_type": True}),
    ("PATCH", "PATCH", {"content": b'{"query": "{ __typename }"}', "json_type": True}),
    ("DELETE", "DELETE", {}),
    ("OPTIONS", "OPTIONS", {}),
]


async def _send_raw(api: Api, method: str, spec: dict[str, Any],
                    ) -> tuple[httpx.Response | None, str]:
    """(response, "") or (None, summary of the exception that escaped the app: a real
    server answers it with HTTP 500)."""
    headers = {"authorization": f"Bearer {api.admin}", "accept": "application/json",
               **spec.get("headers", {})}
    if spec.get("json_type"):
        headers["content-type"] = "application/json"
    try:
        response = await api.client.request(method, "/graphql", content=spec.get("content"),
                                            params=spec.get("params"), headers=headers)
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        where = " <- ".join(f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno} {f.name}"
                            for f in reversed(frames))
        return None, f"{type(exc).__name__}: {exc} (at {where})"
    return response, ""


async def test_malformed_requests_never_fail_with_5xx(api: Api, probe: Probe) -> None:
    before = snapshot(api.db)
    for label, method, spec in HTTP_CASES:
        response, escaped = await _send_raw(api, method, spec)
        if response is None:
            probe.problem(f"{method} {label}", f"exception escapes the app (HTTP 500): {escaped}")
        elif response.status_code >= 500:
            probe.problem(f"{method} {label}", f"HTTP {response.status_code}: "
                                               f"{response.text[:200]}")
        elif any(m in response.text.lower() for m in LEAKS):
            probe.problem(f"{method} {label}", f"leaks internals: {response.text[:300]}")
        elif response.status_code < 400 and label != "GET with no query":
            probe.problem(f"{method} {label}", f"accepted: HTTP {response.status_code} "
                                               f"{response.text[:200]}")
    assert snapshot(api.db) == before
    probe.done()


async def test_malformed_requests_answer_json(api: Api, probe: Probe) -> None:
    for label, method, spec in HTTP_CASES:
        response, _ = await _send_raw(api, method, spec)
        if response is not None and response.status_code < 500:
            probe.sane(f"{method} {label}", response)
    probe.done()


async def test_get_with_query_param_answers_json(w: W, api: Api, probe: Probe) -> None:
    response = await api.client.get("/graphql", params={
        "query": "query($id: ID!) { node(id: $id) { id } }",
        "variables": f'{{"id": "{w.seller}"}}'},
        headers={"authorization": f"Bearer {api.admin}", "accept": "application/json"})
    body = probe.sane("GET query", response)
    if body is not None and body.get("data") != {"node": {"id": w.seller}}:
        probe.problem("GET query", f"unexpected answer: {body}")
    probe.done()
