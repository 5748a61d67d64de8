"""Catalog use cases: sellers, shipping zones, warehouses, products, variants, stock levels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from domain import permissions, sync
from domain.countries import normalize_country
from domain.errors import (
    DomainError,
    Duplicate,
    InvalidInput,
    NotFound,
    check_text,
    clip,
    raise_all,
)
from domain.events import ListingsChanged, StockChanged
from domain.models import (
    Product,
    ProductVariant,
    Seller,
    ShippingZone,
    ShippingZoneCountry,
    Warehouse,
    warehouse_shipping_zone,
)
from domain.permissions import Principal
from domain.services import channels as listings
from domain.services import stock
from domain.uow import UnitOfWork

MAX_NAME = 255
# the most a plain list of the API can hold: the cost limit counts these (api/limits.py)
MAX_WAREHOUSES_PER_SELLER = 100  # so at most 100 stocks per variant, allocations per line
MAX_ZONES_PER_WAREHOUSE = 100
MAX_VARIANTS_PER_PRODUCT = 100


@dataclass(frozen=True, slots=True)
class StockQuantity:
    warehouse_id: int
    quantity: int
    force: bool = False


def _name(value: str, field: str) -> str:
    return check_text(value, field, max_length=MAX_NAME, what="name")


def create_seller(uow: UnitOfWork, principal: Principal | None, *, name: str) -> Seller:
    permissions.require_admin(principal)
    seller = Seller(name=_name(name, "name"))
    with uow:
        uow.session.add(seller)
        uow.commit()
    return seller


def create_shipping_zone(
    uow: UnitOfWork, principal: Principal | None, *, name: str, countries: Sequence[str]
) -> tuple[ShippingZone, list[str]]:
    """A named set of ISO 3166-1 alpha-2 countries (duplicates are folded)."""
    permissions.require_admin(principal)
    zone_name = _name(name, "name")
    codes: list[str] = []
    errors: list[DomainError] = []
    for i, raw in enumerate(countries):
        code = normalize_country(raw)
        if code is None:
            errors.append(InvalidInput(f"{clip(raw)!r} is not an ISO 3166-1 alpha-2 code",
                                       field=f"countries.{i}"))
        elif code not in codes:
            codes.append(code)
    raise_all(errors)
    zone = ShippingZone(name=zone_name)
    with uow:
        uow.session.add(zone)
        uow.session.flush()
        uow.session.add_all(ShippingZoneCountry(zone_id=zone.id, country=c) for c in codes)
        uow.commit()
    return zone, codes


def create_warehouse(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    seller_id: int,
    name: str,
    zone_ids: Sequence[int],
    priority: int = 0,
) -> Warehouse:
    """A seller's warehouse serving the given zones; lower `priority` allocates first."""
    wh_name = _name(name, "name")
    with uow:
        s = uow.session
        permissions.require_seller_access(
            principal, seller_id if s.get(Seller, seller_id) else None,
            NotFound("seller not found", field="sellerId"))
        unique_zones = list(dict.fromkeys(zone_ids))
        if len(unique_zones) > MAX_ZONES_PER_WAREHOUSE:
            raise InvalidInput(f"a warehouse serves at most {MAX_ZONES_PER_WAREHOUSE} "
                               "shipping zones", field="shippingZoneIds")
        # the seller's row is locked, so two requests cannot both take the last place
        s.get(Seller, seller_id, with_for_update=True)
        if (s.scalar(select(func.count()).select_from(Warehouse)
                     .where(Warehouse.seller_id == seller_id)) or 0) >= MAX_WAREHOUSES_PER_SELLER:
            raise InvalidInput(f"a seller has at most {MAX_WAREHOUSES_PER_SELLER} warehouses",
                               field="sellerId")
        found = set(s.scalars(select(ShippingZone.id).where(ShippingZone.id.in_(unique_zones))))
        raise_all([
            NotFound("shipping zone not found", field=f"shippingZoneIds.{i}")
            for i, zid in enumerate(zone_ids) if zid not in found
        ])
        warehouse = Warehouse(seller_id=seller_id, name=wh_name, priority=priority)
        s.add(warehouse)
        s.flush()
        if unique_zones:
            s.execute(insert(warehouse_shipping_zone),
                      [{"warehouse_id": warehouse.id, "zone_id": z} for z in unique_zones])
        uow.commit()
    return warehouse


def create_product(
    uow: UnitOfWork, principal: Principal | None, *, seller_id: int, name: str
) -> Product:
    product_name = _name(name, "name")
    with uow:
        permissions.require_seller_access(
            principal, seller_id if uow.session.get(Seller, seller_id) else None,
            NotFound("seller not found", field="sellerId"))
        product = Product(seller_id=seller_id, name=product_name)
        uow.session.add(product)
        uow.commit()
    return product


def create_variant(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    product_id: int,
    sku: str,
    track_inventory: bool = True,
) -> ProductVariant:
    """A variant with a SKU unique among its seller's variants (two sellers may share one)."""
    clean_sku = check_text(sku, "sku", max_length=MAX_NAME, what="SKU")
    with uow:
        s = uow.session
        # locked, so two requests cannot both take the product's last place
        product = s.get(Product, product_id, with_for_update=True)
        permissions.require_seller_access(principal, product.seller_id if product else None,
                                          NotFound("product not found", field="productId"))
        assert product is not None  # require_seller_access raised otherwise
        if (s.scalar(select(func.count()).select_from(ProductVariant)
                     .where(ProductVariant.product_id == product_id)) or 0) \
                >= MAX_VARIANTS_PER_PRODUCT:
            raise InvalidInput(f"a product has at most {MAX_VARIANTS_PER_PRODUCT} variants",
                               field="productId")
        taken = Duplicate(f"this seller has a variant with SKU {clean_sku!r} already",
                          field="sku")
        if s.scalar(select(ProductVariant.id).where(ProductVariant.sku == clean_sku,
                                                    ProductVariant.seller_id == product.seller_id)):
            raise taken
        variant = ProductVariant(product_id=product_id, seller_id=product.seller_id,
                                 sku=clean_sku, track_inventory=track_inventory)
        s.add(variant)
        try:
            s.flush()
            channels = listings.variant_added(s, variant)
            if channels:
                uow.emit(ListingsChanged(tuple(sorted(channels))))
            uow.commit()
        except IntegrityError:
            # a concurrent request took the SKU between our check and our insert
            raise taken from None
    return variant


def update_variant(
    uow: UnitOfWork,
    principal: Principal | None,
    variant_id: int,
    *,
    track_inventory: bool | None,
) -> ProductVariant:
    """Toggle inventory tracking; existing allocations stay until their orders move on."""
    with uow:
        s = uow.session
        variant = s.get(ProductVariant, variant_id)
        product = s.get(Product, variant.product_id) if variant else None
        permissions.require_seller_access(principal, product.seller_id if product else None,
                                          NotFound("variant not found", field="id"))
        assert variant is not None
        if track_inventory is not None and track_inventory != variant.track_inventory:
            variant.track_inventory = track_inventory
            s.flush()
            channels = sync.refresh(s, variant_ids=[variant_id])  # no movement says so
            if channels:
                uow.emit(ListingsChanged(tuple(sorted(channels))))
            uow.emit(StockChanged((variant_id,)))
        uow.commit()
    return variant


def set_stock_quantities(
    uow: UnitOfWork,
    principal: Principal | None,
    variant_id: int,
    stocks: Sequence[StockQuantity],
) -> ProductVariant:
    """Set on-hand quantities per warehouse, creating missing stock records.

    On-hand may not drop below what orders hold allocated there (INVALID naming the orders)
    unless `force` is set. Every change is one STOCK_UPDATE movement in the ledger.
    """
    with uow:
        variant = uow.session.get(ProductVariant, variant_id)
        product = uow.session.get(Product, variant.product_id) if variant else None
        permissions.require_seller_access(
            principal, product.seller_id if product else None,
            NotFound("variant not found", field="variantId", variant_id=variant_id))
        assert variant is not None
        uow.session.expunge(variant)  # read-only here; keep it loaded past this block
    outcome = stock.bulk_set_quantities(
        uow, principal,
        [stock.BulkRow(warehouse_id=r.warehouse_id, quantity=r.quantity, variant_id=variant_id,
                       force=r.force) for r in stocks],
        reject_failed_rows=False, reason="stock level set")
    raise_all([e for row_errors in outcome.errors for e in row_errors])
    return variant
