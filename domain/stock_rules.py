"""What a stock's figures mean, defined once: as SQL over `Stock` and as plain Python.

Every read, guard and payload uses these (as Saleor keeps them on its stock queryset), so
"available" and "serves the country" cannot drift apart between allocation, the ledger's
guarded updates, the API and the dashboards.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists

from domain.models import (
    ProductVariant,
    ShippingZoneCountry,
    Stock,
    Warehouse,
    warehouse_shipping_zone,
)

# On-hand minus allocated: below 0 after a forced recount left a shortfall. A guarded
# allocation of n units requires FREE >= n.
FREE = Stock.quantity - Stock.quantity_allocated
FREE_SQL = str(FREE)  # "stock.quantity - stock.quantity_allocated", for text() statements
# What orders may still allocate: FREE, never below 0 (`available`).
AVAILABLE = case((Stock.quantity > Stock.quantity_allocated, FREE), else_=0)


def available(quantity: int, allocated: int) -> int:
    """`AVAILABLE` of one stock's figures."""
    return max(quantity - allocated, 0)


def short(quantity: int, allocated: int) -> int:
    """Units allocated beyond on-hand (after a forced recount); 0 normally."""
    return max(allocated - quantity, 0)


def serves(country: Any) -> ColumnElement[bool]:
    """The stock's warehouse may ship the variant to `country` (a value or bind parameter):
    it belongs to the variant's seller and one of its shipping zones holds the country.

    SQL over a statement that joins the stock's `Warehouse` and its `ProductVariant`, whose
    seller is its product's (the database holds it: a foreign key on both), so the product
    is not read.
    """
    return and_(
        Warehouse.seller_id == ProductVariant.seller_id,
        exists().where(
            warehouse_shipping_zone.c.warehouse_id == Warehouse.id,
            ShippingZoneCountry.zone_id == warehouse_shipping_zone.c.zone_id,
            ShippingZoneCountry.country == country,
        ),
    )
