"""Mutations: decode IDs -> run the service in a thread -> payload with typed errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import strawberry

from api import ids
from api.errors import StockyardError, errors_from
from api.inputs import (
    ErrorPolicy,
    MarketplaceConfigurationUpdateInput,
    OrderCreateInput,
    OrderFulfillLineInput,
    OrderLineInput,
    OrderLineUpdateInput,
    ProductCreateInput,
    ProductVariantCreateInput,
    ProductVariantUpdateInput,
    PurchaseOrderCreateInput,
    PurchaseOrderLineInput,
    SellerCreateInput,
    ShippingZoneCreateInput,
    StockAdjustInput,
    StockBulkUpdateInput,
    StockInput,
    StockTransferInput,
    StockUpdateInput,
    ToDomain,
    WarehouseCreateInput,
)
from api.token_types import ApiToken, TokenCreateInput, TokenCreatePayload, TokenRevokePayload
from api.types import (
    Fulfillment,
    Info,
    MarketplaceConfiguration,
    Order,
    Product,
    ProductVariant,
    PurchaseOrder,
    Seller,
    ShippingZone,
    Stock,
    Warehouse,
)
from domain.errors import DomainError, check_text
from domain.models import OrderType
from domain.models import ProductVariant as ProductVariantModel
from domain.services import catalog, configuration, orders
from domain.services import stock as stock_service
from domain.services import tokens as token_service
from domain.services.reads import ZoneRow


@strawberry.type
class SellerCreatePayload:
    seller: Seller | None
    errors: list[StockyardError]


@strawberry.type
class ShippingZoneCreatePayload:
    shipping_zone: ShippingZone | None
    errors: list[StockyardError]


@strawberry.type
class WarehouseCreatePayload:
    warehouse: Warehouse | None
    errors: list[StockyardError]


@strawberry.type
class ProductCreatePayload:
    product: Product | None
    errors: list[StockyardError]


@strawberry.type
class ProductVariantCreatePayload:
    product_variant: ProductVariant | None
    errors: list[StockyardError]


@strawberry.type
class ProductVariantUpdatePayload:
    product_variant: ProductVariant | None
    errors: list[StockyardError]


@strawberry.type
class ProductVariantStocksUpdatePayload:
    product_variant: ProductVariant | None
    errors: list[StockyardError]


@strawberry.type
class MarketplaceConfigurationUpdatePayload:
    marketplace_configuration: MarketplaceConfiguration | None
    errors: list[StockyardError]


@strawberry.type
class OrderCreatePayload:
    order: Order | None
    errors: list[StockyardError]


@strawberry.type
class OrderLinesCreatePayload:
    order: Order | None
    errors: list[StockyardError]


@strawberry.type
class OrderLineUpdatePayload:
    order: Order | None
    errors: list[StockyardError]


@strawberry.type
class OrderLineDeletePayload:
    order: Order | None
    errors: list[StockyardError]


@strawberry.type
class OrderConfirmPayload:
    order: Order | None
    errors: list[StockyardError]


@strawberry.type
class OrderCancelPayload:
    order: Order | None
    errors: list[StockyardError]


@strawberry.type
class OrderFulfillPayload:
    order: Order | None
    fulfillment: Fulfillment | None
    errors: list[StockyardError]


@strawberry.type
class StockAdjustPayload:
    stock: Stock | None
    errors: list[StockyardError]


@strawberry.type
class StockUpdatePayload:
    stock: Stock | None
    errors: list[StockyardError]


@strawberry.type
class StockTransferPayload:
    errors: list[StockyardError]


@strawberry.type
class PurchaseOrderCreatePayload:
    purchase_order: PurchaseOrder | None
    errors: list[StockyardError]


@strawberry.type
class PurchaseOrderReceivePayload:
    purchase_order: PurchaseOrder | None
    errors: list[StockyardError]


@strawberry.type
class StockBulkResult:
    stock: Stock | None
    errors: list[StockyardError]


@strawberry.type
class StockBulkUpdatePayload:
    count: int
    errors: list[StockyardError]
    outcome: strawberry.Private[stock_service.BulkOutcome | None] = None

    @strawberry.field
    def results(self) -> list[StockBulkResult]:
        """Built only when asked for: 10,000 rows of stocks cost ~50 ms to turn into types."""
        if self.outcome is None:
            return []
        return [StockBulkResult(stock=Stock.from_model(s) if s is not None else None,
                                errors=[e for err in errs for e in errors_from(err)])
                for s, errs in zip(self.outcome.stocks, self.outcome.errors, strict=True)]


# Each input reaches its service through one of these, built (and checked) at import.
SELLER = ToDomain(SellerCreateInput, catalog.create_seller)
SHIPPING_ZONE = ToDomain(ShippingZoneCreateInput, catalog.create_shipping_zone)
WAREHOUSE = ToDomain(WarehouseCreateInput, catalog.create_warehouse,
                     renamed={"shipping_zone_ids": "zone_ids"})
PRODUCT = ToDomain(ProductCreateInput, catalog.create_product)
VARIANT = ToDomain(ProductVariantCreateInput, catalog.create_variant)
VARIANT_UPDATE = ToDomain(ProductVariantUpdateInput, catalog.update_variant)
STOCK_QUANTITY = ToDomain(StockInput, catalog.StockQuantity)
ORDER = ToDomain(OrderCreateInput, orders.create)
TOKEN = ToDomain(TokenCreateInput, token_service.create)
ORDER_LINE = ToDomain(OrderLineInput, orders.LineRequest)
ORDER_LINE_UPDATE = ToDomain(OrderLineUpdateInput, orders.update_line)
FULFILL_LINE = ToDomain(OrderFulfillLineInput, orders.FulfillRequest,
                        renamed={"order_line_id": "line_id"})
STOCK_ADJUST = ToDomain(StockAdjustInput, stock_service.adjust)
STOCK_TRANSFER = ToDomain(StockTransferInput, stock_service.transfer)
STOCK_UPDATE = ToDomain(StockUpdateInput, stock_service.set_low_stock_threshold,
                        renamed={"low_stock_threshold": "threshold"})
PURCHASE_ORDER = ToDomain(PurchaseOrderCreateInput, stock_service.create_purchase_order)
PURCHASE_LINE = ToDomain(PurchaseOrderLineInput, stock_service.PurchaseLine)
BULK_ROW = ToDomain(StockBulkUpdateInput, stock_service.BulkRow,
                    convert={"sku": lambda sku, path: check_text(sku, path, what="SKU")})


P = TypeVar("P")
R = TypeVar("R")


async def _payload(payload: Callable[..., P], field: str, show: Callable[[R], Any],
                   call: Callable[[], Awaitable[R]]) -> P:
    """`payload` with `field` shown from the call's result, or empty with the call's errors."""
    try:
        result = await call()
    except DomainError as exc:
        return payload(**{field: None}, errors=errors_from(exc))
    return payload(**{field: show(result)}, errors=[])


def _bulk_row(i: int, row: StockBulkUpdateInput) -> stock_service.BulkRow:
    """Decode one row; a malformed ID becomes that row's error, not the request's."""
    try:
        return BULK_ROW.build(row, f"stocks.{i}")
    except DomainError as exc:
        return stock_service.BulkRow(warehouse_id=0, quantity=row.quantity, error=exc)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def seller_create(self, info: Info, input: SellerCreateInput) -> SellerCreatePayload:
        return await _payload(SellerCreatePayload, "seller", Seller.from_model, lambda: (
            info.context.run(catalog.create_seller, **SELLER.kwargs(input))))

    @strawberry.mutation(description="A new API token (admin token). Its secret is in this "
                                     "answer only.")
    async def token_create(self, info: Info, input: TokenCreateInput) -> TokenCreatePayload:
        try:
            token, secret = await info.context.run(token_service.create, **TOKEN.kwargs(input))
        except DomainError as exc:
            return TokenCreatePayload(token=None, secret=None, errors=errors_from(exc))
        return TokenCreatePayload(token=ApiToken.from_model(token), secret=secret, errors=[])

    @strawberry.mutation(description="Refuse the token from now on, in every server process "
                                     "(admin token). Revoking again changes nothing.")
    async def token_revoke(self, info: Info, id: strawberry.ID) -> TokenRevokePayload:
        try:
            token = await info.context.run(token_service.revoke, ids.decode(id, "ApiToken", "id"))
        except DomainError as exc:
            return TokenRevokePayload(token=None, errors=errors_from(exc))
        info.context.token_revoked()
        return TokenRevokePayload(token=ApiToken.from_model(token), errors=[])

    @strawberry.mutation
    async def shipping_zone_create(
        self, info: Info, input: ShippingZoneCreateInput
    ) -> ShippingZoneCreatePayload:
        try:
            zone, countries = await info.context.run(
                catalog.create_shipping_zone, **SHIPPING_ZONE.kwargs(input))
        except DomainError as exc:
            return ShippingZoneCreatePayload(shipping_zone=None, errors=errors_from(exc))
        row = ZoneRow(zone.id, zone.name, tuple(countries))
        return ShippingZoneCreatePayload(shipping_zone=ShippingZone.from_row(row), errors=[])

    @strawberry.mutation
    async def warehouse_create(
        self, info: Info, input: WarehouseCreateInput
    ) -> WarehouseCreatePayload:
        return await _payload(WarehouseCreatePayload, "warehouse", Warehouse.from_model, lambda: (
            info.context.run(catalog.create_warehouse, **WAREHOUSE.kwargs(input))))

    @strawberry.mutation
    async def product_create(self, info: Info, input: ProductCreateInput) -> ProductCreatePayload:
        return await _payload(ProductCreatePayload, "product", Product.from_model, lambda: (
            info.context.run(catalog.create_product, **PRODUCT.kwargs(input))))

    @strawberry.mutation
    async def product_variant_create(
        self, info: Info, input: ProductVariantCreateInput
    ) -> ProductVariantCreatePayload:
        return await _payload(
            ProductVariantCreatePayload, "product_variant", ProductVariant.from_model,
            lambda: info.context.run(catalog.create_variant, **VARIANT.kwargs(input)))

    @strawberry.mutation
    async def product_variant_update(
        self, info: Info, id: strawberry.ID, input: ProductVariantUpdateInput
    ) -> ProductVariantUpdatePayload:
        return await _payload(
            ProductVariantUpdatePayload, "product_variant", ProductVariant.from_model,
            lambda: info.context.run(catalog.update_variant, ids.decode(id, "ProductVariant", "id"),
                                     **VARIANT_UPDATE.kwargs(input)))

    @strawberry.mutation(description="Sets the stocked (on-hand) quantity per warehouse; "
                                     "creates the stock record when missing.")
    async def product_variant_stocks_update(
        self, info: Info, variant_id: strawberry.ID, stocks: list[StockInput]
    ) -> ProductVariantStocksUpdatePayload:
        async def set_quantities() -> ProductVariantModel:
            rows = STOCK_QUANTITY.each(stocks, "stocks")
            return await info.context.run(
                catalog.set_stock_quantities,
                ids.decode(variant_id, "ProductVariant", "variantId"), rows)

        return await _payload(ProductVariantStocksUpdatePayload, "product_variant",
                              ProductVariant.from_model, set_quantities)

    @strawberry.mutation
    async def marketplace_configuration_update(
        self, info: Info, input: MarketplaceConfigurationUpdateInput
    ) -> MarketplaceConfigurationUpdatePayload:
        changes: dict[OrderType, bool] = {
            OrderType(a.order_type): a.enabled for a in input.allocation or []}
        return await _payload(
            MarketplaceConfigurationUpdatePayload, "marketplace_configuration",
            MarketplaceConfiguration.from_settings,
            lambda: info.context.run(configuration.update_allocation, changes))

    @strawberry.mutation
    async def order_create(self, info: Info, input: OrderCreateInput) -> OrderCreatePayload:
        return await _payload(OrderCreatePayload, "order", Order.from_view, lambda: (
            info.context.run(orders.create, **ORDER.kwargs(input))))

    @strawberry.mutation(description="Adds lines to a DRAFT/QUOTE/OFFER order.")
    async def order_lines_create(
        self, info: Info, order_id: strawberry.ID, lines: list[OrderLineInput]
    ) -> OrderLinesCreatePayload:
        return await _payload(OrderLinesCreatePayload, "order", Order.from_view, lambda: (
            info.context.run(orders.add_lines, ids.decode(order_id, "Order", "orderId"),
                             ORDER_LINE.each(lines, "lines"))))

    @strawberry.mutation(description="Changes a line's quantity on a DRAFT/QUOTE/OFFER order.")
    async def order_line_update(
        self, info: Info, id: strawberry.ID, input: OrderLineUpdateInput
    ) -> OrderLineUpdatePayload:
        return await _payload(OrderLineUpdatePayload, "order", Order.from_view, lambda: (
            info.context.run(orders.update_line, ids.decode(id, "OrderLine", "id"),
                             **ORDER_LINE_UPDATE.kwargs(input))))

    @strawberry.mutation(description="Removes a line from a DRAFT/QUOTE/OFFER order.")
    async def order_line_delete(self, info: Info, id: strawberry.ID) -> OrderLineDeletePayload:
        return await _payload(OrderLineDeletePayload, "order", Order.from_view, lambda: (
            info.context.run(orders.delete_line, ids.decode(id, "OrderLine", "id"))))

    @strawberry.mutation(description="Turns a DRAFT/QUOTE/OFFER into a REGULAR order.")
    async def order_confirm(self, info: Info, id: strawberry.ID) -> OrderConfirmPayload:
        return await _payload(OrderConfirmPayload, "order", Order.from_view, lambda: (
            info.context.run(orders.confirm, ids.decode(id, "Order", "id"))))

    @strawberry.mutation(description="Releases all of the order's allocations.")
    async def order_cancel(self, info: Info, id: strawberry.ID) -> OrderCancelPayload:
        return await _payload(OrderCancelPayload, "order", Order.from_view, lambda: (
            info.context.run(orders.cancel, ids.decode(id, "Order", "id"))))

    @strawberry.mutation(description="Ships units of a REGULAR order (partial fulfilment "
                                     "allowed).")
    async def order_fulfill(
        self, info: Info, order_id: strawberry.ID, lines: list[OrderFulfillLineInput]
    ) -> OrderFulfillPayload:
        try:
            requests = FULFILL_LINE.each(lines, "lines")
            view, fulfillment = await info.context.run(
                orders.fulfill, ids.decode(order_id, "Order", "orderId"), requests)
        except DomainError as exc:
            return OrderFulfillPayload(order=None, fulfillment=None, errors=errors_from(exc))
        return OrderFulfillPayload(order=Order.from_view(view),
                                   fulfillment=Fulfillment.from_row(fulfillment), errors=[])

    @strawberry.mutation(description="Changes on-hand by delta (one ADJUSTMENT movement); with "
                                     "expectedQuantity, CONFLICT unless on-hand equals it.")
    async def stock_adjust(self, info: Info, input: StockAdjustInput) -> StockAdjustPayload:
        return await _payload(StockAdjustPayload, "stock", Stock.from_model, lambda: (
            info.context.run(stock_service.adjust, **STOCK_ADJUST.kwargs(input, "input"))))

    @strawberry.mutation(description="Moves available (unallocated) units between two "
                                     "warehouses of the variant's seller.")
    async def stock_transfer(self, info: Info, input: StockTransferInput) -> StockTransferPayload:
        try:
            await info.context.run(stock_service.transfer,
                                   **STOCK_TRANSFER.kwargs(input, "input"))
        except DomainError as exc:
            return StockTransferPayload(errors=errors_from(exc))
        return StockTransferPayload(errors=[])

    @strawberry.mutation
    async def purchase_order_create(
        self, info: Info, input: PurchaseOrderCreateInput
    ) -> PurchaseOrderCreatePayload:
        return await _payload(
            PurchaseOrderCreatePayload, "purchase_order", PurchaseOrder.from_model,
            lambda: info.context.run(stock_service.create_purchase_order,
                                     **PURCHASE_ORDER.kwargs(input, "input")))

    @strawberry.mutation(description="Adds received units to on-hand (partial receipts "
                                     "allowed; more than is still open is INVALID).")
    async def purchase_order_receive(
        self, info: Info, id: strawberry.ID, lines: list[PurchaseOrderLineInput]
    ) -> PurchaseOrderReceivePayload:
        return await _payload(
            PurchaseOrderReceivePayload, "purchase_order", PurchaseOrder.from_model,
            lambda: info.context.run(stock_service.receive_purchase_order,
                                     ids.decode(id, "PurchaseOrder", "id"),
                                     PURCHASE_LINE.each(lines, "lines")))

    @strawberry.mutation(description="Sets on-hand per row. REJECT_EVERYTHING: one bad row "
                                     "applies nothing. REJECT_FAILED_ROWS: good rows apply.")
    async def stock_bulk_update(
        self, info: Info, stocks: list[StockBulkUpdateInput],
        error_policy: ErrorPolicy | None = ErrorPolicy.REJECT_EVERYTHING,
    ) -> StockBulkUpdatePayload:
        rows = [_bulk_row(i, row) for i, row in enumerate(stocks)]
        try:
            outcome = await info.context.run(
                stock_service.bulk_set_quantities, rows,
                reject_failed_rows=error_policy is ErrorPolicy.REJECT_FAILED_ROWS)
        except DomainError as exc:
            return StockBulkUpdatePayload(count=0, errors=errors_from(exc))
        top = [] if error_policy is ErrorPolicy.REJECT_FAILED_ROWS else [
            e for errs in outcome.errors for err in errs for e in errors_from(err)]
        return StockBulkUpdatePayload(count=outcome.count, errors=top, outcome=outcome)

    @strawberry.mutation(description="Stock settings that are not counters "
                                     "(lowStockThreshold); no ledger movement.")
    async def stock_update(self, info: Info, input: StockUpdateInput) -> StockUpdatePayload:
        return await _payload(StockUpdatePayload, "stock", Stock.from_model, lambda: (
            info.context.run(stock_service.set_low_stock_threshold,
                             **STOCK_UPDATE.kwargs(input, "input"))))
