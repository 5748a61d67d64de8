"""GraphQL output types. Built from models or views; nested fields go through the loaders."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import strawberry
from graphql import GraphQLError

from api import ids
from api.context import Context
from api.errors import INT_MAX
from api.loaders import NOT_LOADED, Loader, held, now_or_later, read_ahead
from api.lookahead import arguments_of
from domain import models, permissions, stock_rules
from domain.countries import normalize_country
from domain.errors import PermissionDenied, clip
from domain.services import orders as order_service
from domain.services import reads
from domain.services import stock as stock_service

log = logging.getLogger("stockyard")

if TYPE_CHECKING:
    from api.channels import SalesChannel

Info = strawberry.Info[Context, None]

OrderTypeEnum = strawberry.enum(models.OrderType, name="OrderType")
OrderStatusEnum = strawberry.enum(models.OrderStatus, name="OrderStatus")
MovementTypeEnum = strawberry.enum(models.MovementType, name="StockMovementType")


def _gid(type_name: str, pk: int) -> strawberry.ID:
    return strawberry.ID(ids.encode(type_name, pk))


def denied(exc: PermissionDenied) -> GraphQLError:
    """A rule of domain/permissions.py refused a read: a GraphQL error on the field."""
    return GraphQLError(exc.message[:1].upper() + exc.message[1:] + ".",
                        extensions={"code": "PERMISSION_DENIED"})


def _require_stock_access(info: Info, seller_id: int) -> None:
    if not permissions.can_read_stock(info.context.principal, seller_id):
        raise denied(PermissionDenied("reading stock figures needs an admin token or the "
                                      "seller's own"))


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class Seller(Node):
    name: str
    pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: models.Seller) -> Seller:
        return cls(id=_gid("Seller", m.id), pk=m.id, name=m.name)


@strawberry.type
class ShippingZone(Node):
    name: str
    countries: list[str]
    pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: reads.ZoneRow) -> ShippingZone:
        return cls(id=_gid("ShippingZone", row.id), pk=row.id, name=row.name,
                   countries=list(row.countries))


@strawberry.type
class _OfSeller(Node):
    """A named object of one seller (Warehouse, Product); not in the schema itself."""

    name: str
    pk: strawberry.Private[int]
    seller_pk: strawberry.Private[int]

    @strawberry.field
    async def seller(self, info: Info) -> Seller:
        return Seller.from_model(await info.context.loaders.seller.load(self.seller_pk))


@strawberry.type
class Warehouse(_OfSeller):
    @classmethod
    def from_model(cls, m: models.Warehouse) -> Warehouse:
        return cls(id=_gid("Warehouse", m.id), pk=m.id, name=m.name, seller_pk=m.seller_id)

    @strawberry.field
    async def shipping_zones(self, info: Info) -> list[ShippingZone]:
        loaders = info.context.loaders
        zone_ids = await loaders.zone_ids_of_warehouse.load(self.pk)
        rows = await loaders.zone.load_many(zone_ids)
        return [ShippingZone.from_row(r) for r in rows if r is not None]


async def _warehouse(info: Info, pk: int) -> Warehouse:
    return Warehouse.from_model(await info.context.loaders.warehouse.load(pk))


def _warehouse_now(info: Info, pk: int) -> Warehouse | Awaitable[Warehouse]:
    return now_or_later(info.context.loaders.warehouse, pk, Warehouse.from_model)


def _variant_now(info: Info, pk: int) -> ProductVariant | Awaitable[ProductVariant]:
    return now_or_later(info.context.loaders.variant, pk, ProductVariant.from_model)


_VARIANT = Annotated["ProductVariant", strawberry.lazy("api.types")]


@strawberry.type
class Stock(Node):
    quantity: int
    quantity_allocated: int
    quantity_reserved_for_batches: int = strawberry.field(description=(
        "The part of quantityAllocated that open pick batches hold (batch reserve)."))
    low_stock_threshold: int | None
    pk: strawberry.Private[int]
    variant_pk: strawberry.Private[int]
    warehouse_pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: models.Stock | stock_service.StockView) -> Stock:
        return cls(id=_gid("Stock", m.id), pk=m.id, quantity=m.quantity,
                   quantity_allocated=m.quantity_allocated,
                   quantity_reserved_for_batches=m.quantity_reserved_for_batches,
                   low_stock_threshold=m.low_stock_threshold,
                   variant_pk=m.variant_id, warehouse_pk=m.warehouse_id)

    @strawberry.field(description="The part of quantityAllocated the orders hold themselves "
                                  "(order reserve): quantityAllocated - "
                                  "quantityReservedForBatches.")
    def quantity_reserved_for_orders(self) -> int:
        return self.quantity_allocated - self.quantity_reserved_for_batches

    @strawberry.field(description="max(quantity - quantityAllocated, 0)")
    def quantity_available(self) -> int:
        return stock_rules.available(self.quantity, self.quantity_allocated)

    @strawberry.field(description="Units allocated to orders beyond what is on hand, after a "
                                  "forced recount: max(quantityAllocated - quantity, 0).")
    def quantity_short(self) -> int:
        return stock_rules.short(self.quantity, self.quantity_allocated)

    @strawberry.field(description="Ordered on open purchase orders, not yet received.")
    async def quantity_incoming(self, info: Info) -> int:
        return int(await info.context.loaders.incoming.load((self.variant_pk, self.warehouse_pk)))

    @strawberry.field(graphql_type=Warehouse)
    def warehouse(self, info: Info) -> Warehouse | Awaitable[Warehouse]:
        return _warehouse_now(info, self.warehouse_pk)

    @strawberry.field(graphql_type=_VARIANT)
    def variant(self, info: Info) -> ProductVariant | Awaitable[ProductVariant]:
        return _variant_now(info, self.variant_pk)


@strawberry.type
class Product(_OfSeller):
    inventory_sync: bool = strawberry.field(description=(
        "False: no sales channel is told this product's figures (its listings are left "
        "alone)."))

    @classmethod
    def from_model(cls, m: models.Product) -> Product:
        return cls(id=_gid("Product", m.id), pk=m.id, name=m.name, seller_pk=m.seller_id,
                   inventory_sync=m.inventory_sync)

    @strawberry.field
    async def variants(self, info: Info) -> list[ProductVariant]:
        return await children(info, info.context.loaders.variants_of_product, self.pk,
                              ProductVariant)


@strawberry.type
class ProductVariant(Node):
    sku: str
    track_inventory: bool
    pk: strawberry.Private[int]
    product_pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: models.ProductVariant) -> ProductVariant:
        return cls(id=_gid("ProductVariant", m.id), pk=m.id, sku=m.sku,
                   track_inventory=m.track_inventory, product_pk=m.product_id)

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return Product.from_model(await info.context.loaders.product.load(self.product_pk))

    @strawberry.field(description="Stock per warehouse: for an admin and the variant's "
                                  "seller; an empty list for other callers.")
    async def stocks(self, info: Info) -> list[Stock]:
        product = await info.context.loaders.product.load(self.product_pk)
        if not permissions.can_read_stock(info.context.principal, product.seller_id):
            return []
        return await children(info, info.context.loaders.stocks_of_variant, self.pk, Stock)

    @strawberry.field(description="Stock summed over all warehouses: for an admin and the "
                                  "variant's seller; null, with a PERMISSION_DENIED error, "
                                  "for other callers.")
    async def stock_totals(self, info: Info) -> VariantStockTotals | None:
        product = await info.context.loaders.product.load(self.product_pk)
        _require_stock_access(info, product.seller_id)
        totals = await info.context.loaders.stock_totals.load(self.pk)
        incoming = await info.context.loaders.incoming_of_variant.load(self.pk)
        return VariantStockTotals(
            quantity=min(totals.quantity, INT_MAX),
            quantity_allocated=min(totals.allocated, INT_MAX),
            quantity_available=min(totals.available, INT_MAX),
            quantity_incoming=min(int(incoming), INT_MAX))

    @strawberry.field(graphql_type=int, description=(
        "Sum of quantityAvailable over the warehouses serving `country` (over all "
        "warehouses when null)."))
    def quantity_available(self, info: Info, country: str | None = None
                           ) -> int | Awaitable[int]:
        return now_or_later(info.context.loaders.availability, (self.pk, _country(country)),
                            _int)


def _country(country: str | None) -> str | None:
    if country is None:
        return None
    code = normalize_country(country)
    if code is None:
        raise GraphQLError(f"{clip(country)!r} is not an ISO 3166-1 alpha-2 country code.",
                           extensions={"code": "INVALID"})
    return code


def _int(total: int) -> int:
    return min(int(total), INT_MAX)  # GraphQL Int is 32-bit; sums may exceed it


@strawberry.type(description="A variant's stock summed over all its warehouses.")
class VariantStockTotals:
    quantity: int
    quantity_allocated: int
    quantity_available: int
    quantity_incoming: int


async def _variant(info: Info, pk: int) -> ProductVariant:
    return ProductVariant.from_model(await info.context.loaders.variant.load(pk))


@strawberry.type
class Allocation:
    quantity: int
    warehouse_pk: strawberry.Private[int]

    @strawberry.field
    async def warehouse(self, info: Info) -> Warehouse:
        return await _warehouse(info, self.warehouse_pk)


@strawberry.type
class OrderLine(Node):
    quantity: int
    quantity_fulfilled: int
    pk: strawberry.Private[int]
    variant_pk: strawberry.Private[int]
    known_allocations: strawberry.Private[list[Allocation] | None] = None

    @classmethod
    def from_model(cls, m: models.OrderLine) -> OrderLine:
        return cls(id=_gid("OrderLine", m.id), pk=m.id, variant_pk=m.variant_id,
                   quantity=m.quantity, quantity_fulfilled=m.quantity_fulfilled)

    @classmethod
    def from_view(cls, v: order_service.LineView) -> OrderLine:
        return cls(
            id=_gid("OrderLine", v.id), pk=v.id, variant_pk=v.variant_id, quantity=v.quantity,
            quantity_fulfilled=v.quantity_fulfilled,
            known_allocations=[Allocation(quantity=a.quantity, warehouse_pk=a.warehouse_id)
                               for a in v.allocations],
        )

    @strawberry.field
    async def variant(self, info: Info) -> ProductVariant:
        return await _variant(info, self.variant_pk)

    @strawberry.field
    async def allocations(self, info: Info) -> list[Allocation]:
        if self.known_allocations is not None:
            return self.known_allocations
        rows = await info.context.loaders.allocations_of_line.load(self.pk)
        return [Allocation(quantity=r.quantity, warehouse_pk=r.warehouse_id) for r in rows]


@strawberry.type
class Order(Node):
    type: OrderTypeEnum  # type: ignore[valid-type]
    status: OrderStatusEnum  # type: ignore[valid-type]
    shipping_country: str
    external_id: str | None = strawberry.field(
        default=None, description="The sales channel's own id of an order it sent in.")
    pk: strawberry.Private[int] = 0
    channel_pk: strawberry.Private[int | None] = None
    known_lines: strawberry.Private[list[OrderLine] | None] = None

    @classmethod
    def from_model(cls, m: models.Order) -> Order:
        return cls(id=_gid("Order", m.id), pk=m.id, type=m.type, status=m.status,
                   shipping_country=m.shipping_country, channel_pk=m.channel_id,
                   external_id=m.external_id)

    @classmethod
    def from_view(cls, v: order_service.OrderView) -> Order:
        return cls(id=_gid("Order", v.id), pk=v.id, type=v.type, status=v.status,
                   shipping_country=v.shipping_country, channel_pk=v.channel_id,
                   external_id=v.external_id,
                   known_lines=[OrderLine.from_view(line) for line in v.lines])

    @strawberry.field(description="The sales channel that sent the order in (null for "
                      "orders placed through the API, and for a caller that may not "
                      "manage the channel).")
    async def channel(self, info: Info) -> Annotated[
            SalesChannel, strawberry.lazy("api.channels")] | None:
        if self.channel_pk is None:
            return None
        node = await resolve_node(info, "SalesChannel", self.channel_pk)
        return cast("SalesChannel", node)

    @strawberry.field(description="The order's lines; a seller sees its own lines only.")
    async def lines(self, info: Info) -> list[OrderLine]:
        lines = self.known_lines
        if lines is None:
            rows = await info.context.loaders.lines_of_order.load(self.pk)
            lines = [OrderLine.from_model(r) for r in rows]
        return await _own_lines(info, lines, lambda line: line.variant_pk)


L = TypeVar("L")


async def _own_lines(info: Info, lines: list[L], variant_of: Callable[[L], int]) -> list[L]:
    """The lines the caller may see: a seller its own, everyone else all of them."""
    seller = permissions.own_lines_only(info.context.principal)
    if seller is None or not lines:
        return lines
    sellers = await info.context.loaders.seller_of_variant.load_many(
        [variant_of(line) for line in lines])
    return [line for line, owner in zip(lines, sellers, strict=True) if owner == seller]


@strawberry.type
class FulfillmentLine:
    quantity: int
    line_pk: strawberry.Private[int]
    warehouse_pk: strawberry.Private[int]

    @strawberry.field
    async def order_line(self, info: Info) -> OrderLine:
        return OrderLine.from_model(await info.context.loaders.order_line.load(self.line_pk))

    @strawberry.field
    async def warehouse(self, info: Info) -> Warehouse:
        return await _warehouse(info, self.warehouse_pk)


@strawberry.type
class Fulfillment(Node):
    pk: strawberry.Private[int]
    parts: strawberry.Private[list[FulfillmentLine]]

    @classmethod
    def from_row(cls, row: order_service.FulfillmentView) -> Fulfillment:
        return cls(id=_gid("Fulfillment", row.id), pk=row.id, parts=[
            FulfillmentLine(line_pk=lid, warehouse_pk=wid, quantity=q)
            for lid, wid, q in row.lines])

    @strawberry.field(description="What was shipped; a seller sees its own lines only.")
    async def lines(self, info: Info) -> list[FulfillmentLine]:
        if permissions.own_lines_only(info.context.principal) is None:
            return self.parts
        order_lines = await info.context.loaders.order_line.load_many(
            [p.line_pk for p in self.parts])
        variants = {line.id: line.variant_id for line in order_lines if line is not None}
        return await _own_lines(info, self.parts, lambda p: variants[p.line_pk])


@strawberry.type(description="One change of one stock's counters (the append-only ledger).")
class StockMovement(Node):
    type: MovementTypeEnum  # type: ignore[valid-type]
    quantity_change: int
    allocated_change: int
    quantity_after: int
    allocated_after: int
    reason: str | None
    actor: str | None
    created_at: datetime
    variant_pk: strawberry.Private[int]
    warehouse_pk: strawberry.Private[int]
    order_pk: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: models.StockMovement) -> StockMovement:
        created = m.created_at if m.created_at.tzinfo else m.created_at.replace(tzinfo=UTC)
        return cls(id=_gid("StockMovement", m.id), type=m.type,
                   quantity_change=m.quantity_change, allocated_change=m.allocated_change,
                   quantity_after=m.quantity_after, allocated_after=m.allocated_after,
                   reason=m.reason, actor=m.actor, created_at=created,
                   variant_pk=m.variant_id, warehouse_pk=m.warehouse_id, order_pk=m.order_id)

    @strawberry.field(graphql_type=ProductVariant)
    def variant(self, info: Info) -> ProductVariant | Awaitable[ProductVariant]:
        return _variant_now(info, self.variant_pk)

    @strawberry.field(graphql_type=Warehouse)
    def warehouse(self, info: Info) -> Warehouse | Awaitable[Warehouse]:
        return _warehouse_now(info, self.warehouse_pk)

    @strawberry.field(description="The order that caused the movement.")
    async def order(self, info: Info) -> Order | None:
        if self.order_pk is None or \
                not permissions.can_read_movement_order(info.context.principal):
            return None
        order = await info.context.loaders.order.load(self.order_pk)
        return Order.from_model(order) if order else None


@strawberry.type
class PurchaseOrderLine:
    quantity: int
    quantity_received: int
    variant_pk: strawberry.Private[int]

    @strawberry.field
    async def variant(self, info: Info) -> ProductVariant:
        return await _variant(info, self.variant_pk)


@strawberry.type
class PurchaseOrder(Node):
    pk: strawberry.Private[int]
    warehouse_pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: models.PurchaseOrder) -> PurchaseOrder:
        return cls(id=_gid("PurchaseOrder", m.id), pk=m.id, warehouse_pk=m.warehouse_id)

    @strawberry.field
    async def warehouse(self, info: Info) -> Warehouse:
        return await _warehouse(info, self.warehouse_pk)

    @strawberry.field
    async def lines(self, info: Info) -> list[PurchaseOrderLine]:
        rows = await info.context.loaders.purchase_order_lines.load(self.pk)
        return [PurchaseOrderLine(quantity=r.quantity, quantity_received=r.quantity_received,
                                  variant_pk=r.variant_id) for r in rows]


@strawberry.type
class OrderTypeAllocation:
    order_type: OrderTypeEnum  # type: ignore[valid-type]
    enabled: bool


@strawberry.type
class MarketplaceConfiguration:
    allocation: list[OrderTypeAllocation]

    @classmethod
    def from_settings(cls, settings: dict[models.OrderType, bool]) -> MarketplaceConfiguration:
        return cls(allocation=[OrderTypeAllocation(order_type=t, enabled=settings[t])
                               for t in models.OrderType])


# node types whose rows a ROW_READS loader reads by id: type name -> the loader's name
ROW_LOADER_OF: dict[str, str] = {
    "Seller": "seller", "Warehouse": "warehouse", "Product": "product",
    "ProductVariant": "variant", "Stock": "stock", "PurchaseOrder": "purchase_order",
    "StockMovement": "movement", "Order": "order", "OrderLine": "order_line"}


async def read_nodes_ahead(info: Info, found: Sequence[tuple[str, int]]) -> None:
    """The rows of the (type name, pk) `found` that ROW_READS read, read in one thread hop on
    one connection (a statement per type) and held by their loaders: `resolve_node` of each
    then answers without a hop per type. A failed read leaves them to read for themselves
    (and meet the error)."""
    loaders = info.context.loaders
    wanted: dict[str, list[int]] = {}
    for type_name, pk in found:
        name = ROW_LOADER_OF.get(type_name)
        if name is not None and not getattr(loaders, name).holds(pk):
            wanted.setdefault(name, []).append(pk)
    if len(wanted) < 2:
        return  # one loader reads its keys in one hop itself
    try:
        loaders.prime(await info.context.read_rows(read_ahead, wanted))
    except Exception:
        log.warning("reading nodes ahead failed; they read for themselves", exc_info=True)


class _NotHeld(Exception):
    """A row `_row_node` needs that its loader does not hold (loaded, without error)."""

    def __init__(self, loader: Loader[Any, Any], key: Any) -> None:
        self.loader = loader
        self.key = key


def _held(loader: Loader[Any, Any], key: Any) -> Any:
    value = held(loader, key)
    if value is NOT_LOADED:
        raise _NotHeld(loader, key)
    return value


# stock-side objects belong to the seller of their warehouse: type name -> (its loader's
# name, how it is built)
_STOCK_SIDE: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "Stock": ("stock", Stock.from_model),
    "PurchaseOrder": ("purchase_order", PurchaseOrder.from_model),
    "StockMovement": ("movement", StockMovement.from_model),
}
_ROW_NODES = frozenset({"Seller", "Warehouse", "Product", "ProductVariant", *_STOCK_SIDE})


def _row_node(info: Info, type_name: str, pk: int) -> Any:
    """`resolve_node` of the types built from the rows of ROW_READS loaders alone, from
    what the loaders hold (`_NotHeld` names the first row they do not)."""
    loaders = info.context.loaders
    principal = info.context.principal

    def visible(seller_id: int) -> bool:
        return permissions.can_see_seller_data(principal, seller_id)

    if type_name == "Seller":
        seller = _held(loaders.seller, pk)
        return Seller.from_model(seller) if seller and visible(seller.id) else None
    if type_name == "Warehouse":
        warehouse = _held(loaders.warehouse, pk)
        return Warehouse.from_model(warehouse) \
            if warehouse and visible(warehouse.seller_id) else None
    if type_name == "Product":
        product = _held(loaders.product, pk)
        return Product.from_model(product) if product and visible(product.seller_id) else None
    if type_name == "ProductVariant":
        variant = _held(loaders.variant, pk)  # its seller_id is its product's
        return ProductVariant.from_model(variant) \
            if variant is not None and visible(variant.seller_id) else None
    name, build = _STOCK_SIDE[type_name]
    row = _held(getattr(loaders, name), pk)
    if row is None:
        return None
    if permissions.can_read_stock(principal):  # an admin: no owner to look up
        return build(row)
    owner = _held(loaders.warehouse, row.warehouse_id)
    return build(row) if permissions.can_read_stock(principal, owner.seller_id) else None


NOT_HELD = object()  # `node_now`: the node needs a read first (`resolve_node`)


def node_now(info: Info, type_name: str, pk: int) -> Any:
    """The node `resolve_node` gives, when the loaders hold all it reads (after
    `read_nodes_ahead`, say): without a coroutine, a task and a loop turn; else NOT_HELD."""
    if type_name not in _ROW_NODES:
        return NOT_HELD
    try:
        return _row_node(info, type_name, pk)
    except _NotHeld:
        return NOT_HELD


async def resolve_node(info: Info, type_name: str, pk: int) -> Any:
    """The Node for a decoded ID, or None when it names nothing the caller may see."""
    loaders = info.context.loaders
    principal = info.context.principal

    if type_name in _ROW_NODES:
        while True:  # each row it needs loaded in turn, then answered from them
            try:
                return _row_node(info, type_name, pk)
            except _NotHeld as missing:
                await missing.loader.load(missing.key)  # an error is the field's
    if type_name == "SalesChannel":
        from api.channels import SalesChannel as ChannelNode  # it builds on this module

        channel = await loaders.channel.load(pk)
        return ChannelNode.from_model(channel) if channel is not None and \
            permissions.can_manage_seller(principal, channel.seller_id) else None
    if type_name == "ApiToken":
        from api.token_types import token_node  # it builds on this module's types

        return await token_node(info, pk)
    if type_name == "ShippingZone":
        zone = await loaders.zone.load(pk)
        return ShippingZone.from_row(zone) if zone else None
    if type_name == "SupplierFeed":
        from api.feeds import SupplierFeed as FeedNode  # it builds on this module

        found = await loaders.supplier_feed.load(pk)
        return FeedNode.from_model(found[0]) if found is not None and \
            permissions.can_manage_seller(principal, found[1]) else None
    if type_name == "WebhookSubscription":
        from api.webhooks import WebhookSubscription as SubscriptionNode  # builds on this

        subscription = await loaders.webhook_subscription.load(pk)
        if subscription is None:
            return None
        return SubscriptionNode.from_model(subscription) if permissions.can_manage_subscription(
            principal, subscription.seller_id) else None
    if type_name == "PickBatch":
        from api.batches import PickBatch as BatchNode  # it builds on this module

        batch = await loaders.pick_batch.load(pk)
        if batch is None:
            return None
        owner = await loaders.warehouse.load(batch.warehouse_id)
        return BatchNode.from_view(batch) \
            if permissions.can_manage_seller(principal, owner.seller_id) else None
    if type_name == "OrderLine":
        line = await loaders.order_line.load(pk)
        if line is None:
            return None
        order = await loaders.order.load(line.order_id)
        seller = await loaders.seller_of_variant.load(line.variant_id) \
            if permissions.own_lines_only(principal) is not None else None
        return OrderLine.from_model(line) \
            if permissions.can_read_line(principal, order.created_by_token_id, seller) else None
    if type_name == "Order":
        order = await loaders.order.load(pk)
        return Order.from_model(order) if order and await can_read_order(info, order) else None
    if type_name == "Fulfillment":
        fulfillment = await loaders.fulfillment.load(pk)
        if fulfillment is None:
            return None
        order = await loaders.order.load(fulfillment.order_id)
        return Fulfillment.from_row(fulfillment) if await can_read_order(info, order) else None
    return None


async def can_read_order(info: Info, order: models.Order) -> bool:
    principal = info.context.principal
    sellers = await info.context.loaders.sellers_of_order.load(order.id) \
        if permissions.seller_scope(principal) is not None else frozenset()
    return permissions.can_read_order(principal, order.created_by_token_id, sellers)


def _availability_key(variant: ProductVariant, args: dict[str, Any]) -> tuple[str, Any] | None:
    country = args.get("country")
    code = normalize_country(country) if isinstance(country, str) else None
    if country is not None and code is None:
        return None  # the field answers its error itself
    return "availability", (variant.pk, code)


def _variant_key(node: Any, args: dict[str, Any]) -> tuple[str, Any]:
    return "variant", node.variant_pk


def _warehouse_key(node: Any, args: dict[str, Any]) -> tuple[str, Any]:
    return "warehouse", node.warehouse_pk


KeyOf = Callable[[Any, dict[str, Any]], tuple[str, Any] | None]  # -> (loader's name, key)

# per type, its fields that answer at once when their loader holds the key (now_or_later)
PREFETCHED: dict[type, tuple[tuple[str, KeyOf], ...]] = {
    ProductVariant: (("quantityAvailable", _availability_key),),
    Stock: (("variant", _variant_key), ("warehouse", _warehouse_key)),
    StockMovement: (("variant", _variant_key), ("warehouse", _warehouse_key)),
}


@dataclass(frozen=True, slots=True)
class Ahead:
    """What the fields of a list's items of one type will ask their loaders for: each
    PREFETCHED field the document selects, once per set of arguments (api/lookahead.py)."""

    wanted: tuple[tuple[KeyOf, dict[str, Any]], ...]

    def keys(self, nodes: Sequence[Any]) -> dict[str, list[Any]]:
        """Loader's name -> the distinct keys `nodes`' fields will load, in order."""
        found: dict[str, dict[Any, None]] = {}
        for key_of, args in self.wanted:
            for node in nodes:
                if (pair := key_of(node, args)) is not None:
                    found.setdefault(pair[0], {})[pair[1]] = None
        return {name: list(keys) for name, keys in found.items()}

    def one_country(self) -> str | None:
        """The country every variant's `quantityAvailable` asks for, when they ask for one
        and the same (a page then reads it with its rows: `PageQuery.available_in`)."""
        asked = [args for key_of, args in self.wanted if key_of is _availability_key]
        country = asked[0].get("country") if len(asked) == 1 else None
        return normalize_country(country) if isinstance(country, str) else None


def ahead(info: Info, kind: type, path: Sequence[str]) -> Ahead:
    """What the fields at `path` below the current field will ask of items of `kind`."""
    name = kind.__strawberry_definition__.name  # type: ignore[attr-defined]
    return Ahead(tuple((key_of, args) for field, key_of in PREFETCHED.get(kind, ())
                       for args in arguments_of(info, path, field, name)))


N = TypeVar("N")


async def children(info: Info, loader: Any, parent: int, kind: type[N]) -> list[N]:
    """A parent's children, read by `loader` (a `loaders._Children`) and made into nodes of
    `kind` (its `from_model`), with what this field's selection will load of them (`ahead`)
    read in the same hop: once per selection, however many parents ask."""
    build: Callable[[Any], N] = kind.from_model  # type: ignore[attr-defined]
    selection = (kind, *map(id, info._raw_info.field_nodes))  # each parent's field alike
    if not loader.wants(selection):
        found = ahead(info, kind, ())
        if found.wanted:
            loader.want(selection, lambda rows: found.keys([build(row) for row in rows]))
    nodes = [build(row) for row in await loader.load(parent)]
    await prefetch(info, nodes, ())  # held already, unless asked before elsewhere
    return nodes


async def prefetch(info: Info, nodes: Sequence[Any], path: Sequence[str]) -> None:
    """Load, one batch per loader, what the fields at `path` below the current field will
    ask of each of `nodes` (`ahead`), so that they answer at once. Only ever ahead of time:
    a failed load is met again, and answered, by the fields themselves. (A page reads
    ahead in its own thread hop instead: `Context.read_page`.)"""
    pending: set[asyncio.Future[Any]] = set()
    loaders = info.context.loaders
    for kind in {type(n) for n in nodes}:
        wanted = ahead(info, kind, path).keys([n for n in nodes if type(n) is kind])
        for name, keys in wanted.items():
            loader = getattr(loaders, name)
            for key in keys:
                # the loader's own future, not the shielded one each field awaits
                future = loader.shared(key)
                if not future.done():
                    pending.add(future)
    if pending:
        # not cancelled with this field, never raising here (the fields meet the errors)
        await asyncio.wait(pending)
        for future in pending:
            if not future.cancelled():
                future.exception()  # retrieved: asyncio logs no "never retrieved" for it
