"""GraphQL input types; names and fields mirror API.md."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import strawberry

from api.types import OrderTypeEnum


@strawberry.input
class SellerCreateInput:
    name: str


@strawberry.input
class ShippingZoneCreateInput:
    name: str
    countries: list[str]


@strawberry.input
class WarehouseCreateInput:
    seller_id: strawberry.ID
    name: str
    shipping_zone_ids: list[strawberry.ID]
    priority: int = strawberry.field(
        default=0, description="Lower allocates first; ties go to the older warehouse.")


@strawberry.input
class ProductCreateInput:
    seller_id: strawberry.ID
    name: str


@strawberry.input
class ProductVariantCreateInput:
    product_id: strawberry.ID
    sku: str
    track_inventory: bool | None = True


@strawberry.input
class ProductVariantUpdateInput:
    track_inventory: bool | None = None


FORCE = "Allow on-hand below what orders hold allocated (a recount that found less); the "\
    "shortfall shows as Stock.quantityShort."


@strawberry.input
class StockInput:
    warehouse_id: strawberry.ID
    quantity: int
    force: bool | None = strawberry.field(default=False, description=FORCE)


@strawberry.input
class StockAdjustInput:
    variant_id: strawberry.ID
    warehouse_id: strawberry.ID
    delta: int
    reason: str
    expected_quantity: int | None = None
    force: bool | None = strawberry.field(default=False, description=FORCE)


@strawberry.input
class StockUpdateInput:
    variant_id: strawberry.ID
    warehouse_id: strawberry.ID
    low_stock_threshold: int | None = strawberry.field(
        default=None, description="Dashboards flag the stock when available falls below "
                                  "this; null clears it.")


@strawberry.input
class StockTransferInput:
    variant_id: strawberry.ID
    from_warehouse_id: strawberry.ID
    to_warehouse_id: strawberry.ID
    quantity: int


@strawberry.input
class PurchaseOrderLineInput:
    variant_id: strawberry.ID
    quantity: int


@strawberry.input
class PurchaseOrderCreateInput:
    warehouse_id: strawberry.ID
    lines: list[PurchaseOrderLineInput]


@strawberry.enum
class ErrorPolicy(enum.Enum):
    REJECT_EVERYTHING = "REJECT_EVERYTHING"
    REJECT_FAILED_ROWS = "REJECT_FAILED_ROWS"


@strawberry.input
class StockBulkUpdateInput:
    warehouse_id: strawberry.ID
    quantity: int
    variant_id: strawberry.ID | None = None
    sku: str | None = None
    force: bool | None = strawberry.field(default=False, description=FORCE)


@strawberry.input
class OrderTypeAllocationInput:
    order_type: OrderTypeEnum  # type: ignore[valid-type]
    enabled: bool


@strawberry.input
class MarketplaceConfigurationUpdateInput:
    allocation: list[OrderTypeAllocationInput] | None = None


@strawberry.input
class OrderLineInput:
    variant_id: strawberry.ID
    quantity: int


@strawberry.input
class OrderCreateInput:
    type: OrderTypeEnum  # type: ignore[valid-type]
    shipping_country: str
    lines: list[OrderLineInput]
    idempotency_key: str | None = None


@strawberry.input
class OrderLineUpdateInput:
    quantity: int


@strawberry.input
class OrderFulfillLineInput:
    order_line_id: strawberry.ID
    quantity: int
    warehouse_id: strawberry.ID | None = None


def bulk_row(value: Mapping[str, Any]) -> StockBulkUpdateInput:
    """One stockBulkUpdate row from graphql-core's coerced dict.

    graphql-core calls it while coercing (the type's `out_type`, see
    `api.coercion.build_during_coercion`): a bulk request carries thousands of these flat
    rows, and strawberry's per-item conversion would cost 50 ms for 10k of them.
    """
    return StockBulkUpdateInput(warehouse_id=value["warehouseId"], quantity=value["quantity"],
                                variant_id=value.get("variantId"), sku=value.get("sku"),
                                force=value.get("force", False))


def order_line(value: Mapping[str, Any]) -> OrderLineInput:
    """An order line from graphql-core's coerced dict (see `bulk_row`)."""
    return OrderLineInput(variant_id=value["variantId"], quantity=value["quantity"])


def order_create(value: Mapping[str, Any]) -> OrderCreateInput:
    """orderCreate's input from graphql-core's coerced dict; its lines are built already.

    Strawberry's generic conversion of this input was ~8% of an order's server CPU.
    """
    return OrderCreateInput(type=OrderTypeEnum(value["type"]),
                            shipping_country=value["shippingCountry"], lines=value["lines"],
                            idempotency_key=value.get("idempotencyKey"))
