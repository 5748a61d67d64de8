"""DataLoaders: every nested field is fetched in one statement per level, never per row."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from domain.models import (
    Order,
    OrderLine,
    Product,
    ProductVariant,
    PurchaseOrder,
    Seller,
    Stock,
    StockMovement,
    Warehouse,
)
from domain.services import reads

K = TypeVar("K")
V = TypeVar("V")

Reader = Callable[..., Awaitable[Any]]


def _loader(read: Reader, fn: Callable[..., Sequence[V]]) -> DataLoader[Any, V]:
    async def load(keys: list[Any]) -> Sequence[V]:
        return await read(fn, keys)  # type: ignore[no-any-return]

    return DataLoader(load_fn=load)


def _by_id(read: Reader, model: type[Any]) -> DataLoader[int, Any]:
    async def load(keys: list[int]) -> Sequence[Any]:
        return await read(reads.by_id, model, keys)  # type: ignore[no-any-return]

    return DataLoader(load_fn=load)


class Loaders:
    def __init__(self, read: Reader) -> None:
        self.seller = _by_id(read, Seller)
        self.warehouse = _by_id(read, Warehouse)
        self.product = _by_id(read, Product)
        self.variant = _by_id(read, ProductVariant)
        self.order = _by_id(read, Order)
        self.order_line = _by_id(read, OrderLine)
        self.movement = _by_id(read, StockMovement)
        self.stock = _by_id(read, Stock)
        self.purchase_order = _by_id(read, PurchaseOrder)
        self.purchase_order_lines = _loader(read, reads.lines_of_purchase_orders)
        self.incoming = _loader(read, reads.incoming)
        self.stock_totals = _loader(read, reads.stock_totals)
        self.incoming_of_variant = _loader(read, reads.incoming_of_variants)
        self.zone = _loader(read, reads.zones)
        self.zone_ids_of_warehouse = _loader(read, reads.zone_ids_of_warehouses)
        self.variants_of_product = _loader(read, reads.variants_of_products)
        self.stocks_of_variant = _loader(read, reads.stocks_of_variants)
        self.availability = _loader(read, reads.availability)
        self.lines_of_order = _loader(read, reads.lines_of_orders)
        self.allocations_of_line = _loader(read, reads.allocations_of_lines)
        self.fulfillment = _loader(read, reads.fulfillments)
