"""Sales channels and their listings (API.md "Sales channels"): each change that can move a
listing's figure works it out again in the same transaction (domain/sync.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from domain import permissions, signing, sync
from domain.errors import (
    DomainError,
    InvalidInput,
    InvalidState,
    NotFound,
    check_text,
    raise_all,
)
from domain.events import ListingsChanged
from domain.models import (
    Listing,
    Product,
    ProductVariant,
    SalesChannel,
    Seller,
    SyncMode,
    Warehouse,
    sales_channel_warehouse,
)
from domain.permissions import Principal
from domain.uow import UnitOfWork

MAX_LISTINGS = 1_000  # per listingsUpsert / listingsDelete
MAX_URL = 2_048
MAX_UNTRACKED = 2**31 - 1
MAX_RATE = 1_000  # maxRequestsPerSecond
MAX_TEXT = 255


@dataclass(frozen=True, slots=True)
class ChannelInput:
    """salesChannelCreate's and salesChannelUpdate's input; None leaves a field as it is
    (on create: its default). `warehouse_ids` None: every warehouse of the seller."""

    name: str | None = None
    endpoint_url: str | None = None
    secret: str | None = None
    sync_mode: SyncMode | None = None
    warehouse_ids: Sequence[int] | None = None
    untracked_quantity: int | None = None
    max_requests_per_second: int | None = None
    paused: bool | None = None


@dataclass(frozen=True, slots=True)
class ListingInput:
    external_id: str
    sku: str


def _check(data: ChannelInput, prefix: str = "input") -> None:
    errors: list[DomainError] = []
    for name, value in (("name", data.name),):
        if value is not None:
            try:
                check_text(value, f"{prefix}.{name}", max_length=MAX_TEXT, what=name)
            except InvalidInput as exc:
                errors.append(exc)
    if data.endpoint_url is not None and not _is_http_url(data.endpoint_url):
        errors.append(InvalidInput("endpointUrl must be an http or https URL with a host, "
                                   f"at most {MAX_URL} characters",
                                   field=f"{prefix}.endpointUrl"))
    if data.secret is not None and not signing.is_secret(data.secret):
        errors.append(secret_error(f"{prefix}.secret"))
    if data.untracked_quantity is not None and \
            not 0 <= data.untracked_quantity <= MAX_UNTRACKED:
        errors.append(InvalidInput("untrackedQuantity must be 0 or more",
                                   field=f"{prefix}.untrackedQuantity"))
    if data.max_requests_per_second is not None and \
            not 1 <= data.max_requests_per_second <= MAX_RATE:
        errors.append(InvalidInput(f"maxRequestsPerSecond must be between 1 and {MAX_RATE}",
                                   field=f"{prefix}.maxRequestsPerSecond"))
    raise_all(errors)


def secret_error(field: str) -> InvalidInput:
    """A secret that is not `whsec_` and the base64 of 24 to 64 bytes (channels, feeds and
    webhook subscriptions say it alike)."""
    return InvalidInput("secret must be whsec_ followed by the base64 of 24 to 64 bytes",
                        field=field)


def _is_http_url(url: str) -> bool:
    if len(url) > MAX_URL or url != url.strip() or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _warehouses(s: Session, principal: Principal, seller_id: int, ids: Sequence[int],
                prefix: str = "input") -> list[int]:
    unique = list(dict.fromkeys(ids))
    owners = dict(s.execute(select(Warehouse.id, Warehouse.seller_id)
                            .where(Warehouse.id.in_(unique))).all())
    errors: list[DomainError] = []
    for i, warehouse_id in enumerate(ids):
        owner = owners.get(warehouse_id)
        field = f"{prefix}.warehouseIds.{i}"
        if owner is None or (owner != seller_id and permissions.seller_scope(principal)):
            errors.append(NotFound("warehouse not found", field=field,
                                   warehouse_id=warehouse_id))
        elif owner != seller_id:
            errors.append(InvalidInput("the warehouse belongs to another seller", field=field,
                                       warehouse_id=warehouse_id))
    raise_all(errors)
    return unique


def create_channel(uow: UnitOfWork, principal: Principal | None, *, seller_id: int,
                   data: ChannelInput) -> tuple[SalesChannel, str]:
    """A channel and its secret (generated when `data` gives none: shown this once)."""
    _check(data)
    if data.name is None or data.endpoint_url is None:
        raise InvalidInput("name and endpointUrl are required", field="input")
    secret = data.secret or signing.new_secret()
    with uow:
        s = uow.session
        caller = permissions.require_seller_access(
            principal, seller_id if s.get(Seller, seller_id) else None,
            NotFound("seller not found", field="input.sellerId"))
        warehouses = None if data.warehouse_ids is None else \
            _warehouses(s, caller, seller_id, data.warehouse_ids)
        channel = SalesChannel(
            seller_id=seller_id, name=data.name.strip(), endpoint_url=data.endpoint_url,
            secret=secret, sync_mode=data.sync_mode or SyncMode.ALL,
            all_warehouses=warehouses is None,
            untracked_quantity=100 if data.untracked_quantity is None
            else data.untracked_quantity,
            max_requests_per_second=data.max_requests_per_second or 10,
            paused=bool(data.paused), failing=False)
        s.add(channel)
        s.flush()
        if warehouses:
            s.execute(insert(sales_channel_warehouse), [
                {"channel_id": channel.id, "warehouse_id": w} for w in warehouses])
        uow.commit()
    return channel, secret


def _channel_for_change(s: Session, principal: Principal | None, channel_id: int,
                        field: str = "id") -> tuple[SalesChannel, Principal]:
    channel = s.get(SalesChannel, channel_id, with_for_update=True)
    caller = permissions.require_seller_access(
        principal, channel.seller_id if channel else None,
        NotFound("sales channel not found", field=field))
    assert channel is not None
    return channel, caller


def update_channel(uow: UnitOfWork, principal: Principal | None, channel_id: int,
                   data: ChannelInput) -> SalesChannel:
    """Change what is given. A new endpoint or secret clears FAILING and pushes every
    listing; a new mode, warehouse set or untrackedQuantity works the figures out again;
    unpausing pushes what is pending."""
    _check(data)
    with uow:
        s = uow.session
        channel, caller = _channel_for_change(s, principal, channel_id)
        warehouses = None if data.warehouse_ids is None else \
            _warehouses(s, caller, channel.seller_id, data.warehouse_ids)
        full_push = False
        if data.name is not None:
            channel.name = data.name.strip()
        if data.endpoint_url is not None and data.endpoint_url != channel.endpoint_url:
            channel.endpoint_url, full_push = data.endpoint_url, True
        if data.secret is not None and data.secret != channel.secret:
            channel.secret, full_push = data.secret, True
        if data.sync_mode is not None and data.sync_mode != channel.sync_mode:
            channel.sync_mode = data.sync_mode
            full_push = full_push or sync.pushes(data.sync_mode)
        if data.untracked_quantity is not None:
            channel.untracked_quantity = data.untracked_quantity
        if data.max_requests_per_second is not None:
            channel.max_requests_per_second = data.max_requests_per_second
        if data.paused is not None:
            channel.paused = data.paused
        if warehouses is not None:
            channel.all_warehouses = False
            s.execute(delete(sales_channel_warehouse)
                      .where(sales_channel_warehouse.c.channel_id == channel_id))
            if warehouses:
                s.execute(insert(sales_channel_warehouse), [
                    {"channel_id": channel_id, "warehouse_id": w} for w in warehouses])
        if full_push:
            channel.failing = False
            channel.retry_at = 0.0
            channel.failures = 0
            _push_everything(s, channel_id)
        s.flush()
        sync.refresh(s, channel_ids=[channel_id])
        uow.emit(ListingsChanged((channel_id,)))
        uow.commit()
    return channel


def _push_everything(s: Session, channel_id: int) -> None:
    """Every listing of the channel waits for a push again (same versions)."""
    _take_leases(s, [channel_id])
    s.execute(update(Listing).where(Listing.channel_id == channel_id)
              .values(acked_version=None).execution_options(synchronize_session=False))


def _take_leases(s: Session, channel_ids: Sequence[int]) -> None:
    """A push of these channels in flight must not acknowledge what this transaction asks
    to push again (its listings' versions stay the same): the pusher's fence moves on, so
    its acknowledgement matches no channel row and writes nothing (sync.Pusher), and the
    next pusher may claim the channel at once. Locks the channel rows, before any listing,
    in the order an acknowledgement takes them."""
    if channel_ids:
        s.execute(update(SalesChannel).where(SalesChannel.id.in_(sorted(set(channel_ids))))
                  .values(lease=SalesChannel.lease + 1, lease_until=0.0)
                  .execution_options(synchronize_session=False))


def request_sync(uow: UnitOfWork, principal: Principal | None, channel_id: int
                 ) -> SalesChannel:
    """salesChannelSync: push every listing's current figure now."""
    with uow:
        s = uow.session
        channel, _ = _channel_for_change(s, principal, channel_id)
        if channel.paused or channel.failing:
            raise InvalidState("the channel is " + ("paused" if channel.paused else
                                                    "failing: update its endpoint or secret"),
                               field="id")
        _push_everything(s, channel_id)
        channel.retry_at = 0.0
        sync.refresh(s, channel_ids=[channel_id])
        uow.emit(ListingsChanged((channel_id,)))
        uow.commit()
    return channel


def upsert_listings(uow: UnitOfWork, principal: Principal | None, channel_id: int,
                    listings: Sequence[ListingInput]) -> SalesChannel:
    """Add listings, or change the SKU of those whose externalId exists; each is matched
    to the channel seller's variant of that SKU (or left unmatched)."""
    if len(listings) > MAX_LISTINGS:
        raise InvalidInput(f"at most {MAX_LISTINGS} listings per call", field="listings")
    errors: list[DomainError] = []
    cleaned: dict[str, str] = {}
    for i, item in enumerate(listings):
        try:
            external = check_text(item.external_id, f"listings.{i}.externalId",
                                  max_length=MAX_TEXT, what="externalId")
            sku = check_text(item.sku, f"listings.{i}.sku", max_length=MAX_TEXT, what="SKU")
        except InvalidInput as exc:
            errors.append(exc)
            continue
        cleaned[external] = sku  # the last one of an externalId given twice wins
    raise_all(errors)
    with uow:
        s = uow.session
        channel, _ = _channel_for_change(s, principal, channel_id, field="channelId")
        variants = dict(s.execute(select(ProductVariant.sku, ProductVariant.id).where(
            ProductVariant.seller_id == channel.seller_id,
            ProductVariant.sku.in_(sorted(set(cleaned.values()))))).all())
        existing = {row.external_id: row for row in s.execute(
            select(Listing.id, Listing.external_id, Listing.sku)
            .where(Listing.channel_id == channel_id,
                   Listing.external_id.in_(sorted(cleaned)))).all()}
        new = [{"channel_id": channel_id, "external_id": e, "sku": sku,
                "variant_id": variants.get(sku), "version": 0}
               for e, sku in cleaned.items() if e not in existing]
        if new:
            s.execute(insert(Listing), new)
        moved = [{"listing": existing[e].id, "new_sku": sku, "variant": variants.get(sku)}
                 for e, sku in cleaned.items() if e in existing and existing[e].sku != sku]
        for change in moved:
            # a new SKU is news to the store even when the figure stays: push it again
            s.execute(update(Listing).where(Listing.id == change["listing"]).values(
                sku=change["new_sku"], variant_id=change["variant"], acked_version=None,
                version=Listing.version + 1).execution_options(synchronize_session=False))
        s.flush()
        sync.refresh(s, channel_ids=[channel_id])
        uow.emit(ListingsChanged((channel_id,)))
        uow.commit()
    return channel


def delete_listings(uow: UnitOfWork, principal: Principal | None, channel_id: int,
                    external_ids: Sequence[str]) -> SalesChannel:
    """Forget these listings (unknown externalIds are ignored)."""
    if len(external_ids) > MAX_LISTINGS:
        raise InvalidInput(f"at most {MAX_LISTINGS} listings per call", field="externalIds")
    with uow:
        s = uow.session
        channel, _ = _channel_for_change(s, principal, channel_id, field="channelId")
        s.execute(delete(Listing).where(Listing.channel_id == channel_id,
                                        Listing.external_id.in_(list(set(external_ids)))))
        uow.commit()
    return channel


def variant_added(s: Session, variant: ProductVariant) -> set[int]:
    """A new variant takes the unmatched listings of its SKU on its seller's channels."""
    channels = select(SalesChannel.id).where(SalesChannel.seller_id == variant.seller_id)
    matched = list(s.execute(update(Listing).where(
        Listing.channel_id.in_(channels), Listing.sku == variant.sku,
        Listing.variant_id.is_(None)).values(variant_id=variant.id)
        .returning(Listing.id).execution_options(synchronize_session=False)).scalars())
    return sync.refresh(s, listing_ids=matched) if matched else set()


def inventory_sync_changed(s: Session, product_id: int, on: bool) -> set[int]:
    """Turning a product's sync back on pushes its listings again (the store may have been
    edited by hand meanwhile); turning it off leaves them alone."""
    if not on:
        return set()
    variants = select(ProductVariant.id).where(ProductVariant.product_id == product_id)
    _take_leases(s, list(s.scalars(select(Listing.channel_id).distinct()
                                   .where(Listing.variant_id.in_(variants)))))
    return set(s.execute(update(Listing).where(Listing.variant_id.in_(variants))
                         .values(acked_version=None)
                         .returning(Listing.channel_id)
                         .execution_options(synchronize_session=False)).scalars())


def update_product(uow: UnitOfWork, principal: Principal | None, product_id: int, *,
                   name: str | None = None, inventory_sync: bool | None = None) -> Product:
    """productUpdate: rename, or opt the product in or out of inventory sync."""
    if name is not None:
        check_text(name, "input.name", max_length=MAX_TEXT, what="name")
    with uow:
        s = uow.session
        product = s.get(Product, product_id)
        permissions.require_seller_access(principal, product.seller_id if product else None,
                                          NotFound("product not found", field="id"))
        assert product is not None
        if name is not None:
            product.name = name.strip()
        if inventory_sync is not None and inventory_sync != product.inventory_sync:
            product.inventory_sync = inventory_sync
            s.flush()
            channels = inventory_sync_changed(s, product_id, inventory_sync)
            if channels:
                uow.emit(ListingsChanged(tuple(sorted(channels))))
        uow.commit()
    return product
