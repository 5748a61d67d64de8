"""Sales channels and listings in the schema (API.md "Sales channels (inventory sync)")."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import strawberry

from api import ids
from api.errors import StockyardError, errors_from
from api.queries import Connection, Edge, PageInfo, _after, _allowed, _first
from api.types import Info, Node, Product, ProductVariant, Seller, Warehouse
from domain import permissions
from domain.errors import DomainError
from domain.models import SalesChannel as ChannelModel
from domain.models import SyncMode
from domain.services import channel_reads, channels

SyncModeEnum = strawberry.enum(SyncMode, name="SyncMode", description=(
    "ALL: push every matched listing; FEEDS_ONLY: only listings whose variant is an item of "
    "a supplier feed filling one of the channel's warehouses; NONE: push nothing."))


@strawberry.enum
class ChannelStatus(enum.Enum):
    OK = "OK"
    FAILING = "FAILING"
    PAUSED = "PAUSED"


def status_of(paused: bool, failing: bool) -> ChannelStatus:
    """A delivery target's status (channels, feeds, webhook subscriptions): PAUSED wins."""
    return ChannelStatus.PAUSED if paused else \
        ChannelStatus.FAILING if failing else ChannelStatus.OK


@strawberry.type
class Listing:
    external_id: str
    sku: str
    available: int | None = strawberry.field(description=(
        "The figure it should show now (null only when unmatched)."))
    last_pushed_quantity: int | None
    last_pushed_version: int | None
    last_pushed_at: datetime | None
    pending: bool
    variant_pk: strawberry.Private[int | None]

    @classmethod
    def from_view(cls, v: channel_reads.ListingView) -> Listing:
        return cls(external_id=v.external_id, sku=v.sku, available=v.available,
                   last_pushed_quantity=v.pushed_quantity,
                   last_pushed_version=v.pushed_version,
                   last_pushed_at=v.pushed_at,  # type: ignore[arg-type]
                   pending=v.pending, variant_pk=v.variant_id)

    @strawberry.field(description="Null: no variant of the channel's seller has this SKU.")
    async def variant(self, info: Info) -> ProductVariant | None:
        if self.variant_pk is None:
            return None
        variant = await info.context.loaders.variant.load(self.variant_pk)
        return ProductVariant.from_model(variant) if variant is not None else None


@strawberry.type
class SalesChannel(Node):
    name: str
    endpoint_url: str
    sync_mode: SyncModeEnum  # type: ignore[valid-type]
    status: ChannelStatus
    last_error: str | None
    last_error_at: datetime | None
    last_synced_at: datetime | None
    untracked_quantity: int
    max_requests_per_second: int
    pk: strawberry.Private[int]
    seller_pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: ChannelModel) -> SalesChannel:
        status = status_of(m.paused, m.failing)
        return cls(id=strawberry.ID(ids.encode("SalesChannel", m.id)), pk=m.id,
                   seller_pk=m.seller_id, name=m.name, endpoint_url=m.endpoint_url,
                   sync_mode=m.sync_mode, status=status, last_error=m.last_error,
                   last_error_at=m.last_error_at, last_synced_at=m.last_synced_at,
                   untracked_quantity=m.untracked_quantity,
                   max_requests_per_second=m.max_requests_per_second)

    @strawberry.field
    async def seller(self, info: Info) -> Seller:
        return Seller.from_model(await info.context.loaders.seller.load(self.seller_pk))

    @strawberry.field(description="Whose stock feeds the channel.")
    async def warehouses(self, info: Info) -> list[Warehouse]:
        rows = await info.context.loaders.warehouses_of_channel.load(self.pk)
        return [Warehouse.from_model(w) for w in rows]

    @strawberry.field(description="Listings to push whose current figure is not "
                                  "acknowledged yet.")
    async def pending_updates(self, info: Info) -> int:
        return await info.context.loaders.pending_of_channel.load(self.pk)

    @strawberry.field(description="Newest first; `unmatched`: no variant has the SKU; "
                                  "`pending`: waits for a push.")
    async def listings(self, info: Info, first: int | None = None, after: str | None = None,
                       unmatched: bool | None = None,
                       pending: bool | None = None) -> Connection[Listing]:
        size = _first(first)
        rows = await info.context.read(channel_reads.listings_page, self.pk, size,
                                       _after(after), unmatched, pending)
        edges = [Edge(node=Listing.from_view(r), pk=r.id) for r in rows[:size]]
        return Connection(edges=edges, page_info=PageInfo.of(
            edges, after, has_next_page=len(rows) > size))


# ---------------------------------------------------------------------------- inputs


@strawberry.input
class SalesChannelCreateInput:
    seller_id: strawberry.ID
    name: str
    endpoint_url: str = strawberry.field(description="http or https.")
    secret: str | None = strawberry.field(default=None, description=(
        "whsec_<base64 of 24-64 bytes>; generated when not given, and shown once."))
    sync_mode: SyncModeEnum = SyncMode.ALL  # type: ignore[valid-type]
    warehouse_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        "Whose stock feeds the channel; default: every warehouse of the seller, including "
        "ones created later."))
    untracked_quantity: int = 100
    max_requests_per_second: int = 10


@strawberry.input
class SalesChannelUpdateInput:
    name: str | None = None
    endpoint_url: str | None = None
    secret: str | None = None
    sync_mode: SyncModeEnum | None = None  # type: ignore[valid-type]
    warehouse_ids: list[strawberry.ID] | None = None
    untracked_quantity: int | None = None
    max_requests_per_second: int | None = strawberry.field(default=None, description=(
        "Pushes to this channel, all processes together, never exceed it."))
    paused: bool | None = None


@strawberry.input
class ListingInput:
    external_id: str
    sku: str


@strawberry.input
class ProductUpdateInput:
    name: str | None = None
    inventory_sync: bool | None = None


@strawberry.type
class SalesChannelCreatePayload:
    sales_channel: SalesChannel | None
    secret: str | None = strawberry.field(description="Shown here only, never again.")
    errors: list[StockyardError]


@strawberry.type
class SalesChannelPayload:
    sales_channel: SalesChannel | None
    errors: list[StockyardError]


@strawberry.type
class ProductUpdatePayload:
    product: Product | None
    errors: list[StockyardError]


def _warehouses(values: list[strawberry.ID] | None, prefix: str) -> list[int] | None:
    if values is None:
        return None
    return [ids.decode(v, "Warehouse", f"{prefix}.warehouseIds.{i}")
            for i, v in enumerate(values)]


def _data(input: SalesChannelCreateInput | SalesChannelUpdateInput) -> channels.ChannelInput:
    return channels.ChannelInput(
        name=input.name, endpoint_url=input.endpoint_url, secret=input.secret,
        sync_mode=input.sync_mode, warehouse_ids=_warehouses(input.warehouse_ids, "input"),
        untracked_quantity=input.untracked_quantity,
        max_requests_per_second=input.max_requests_per_second,
        paused=getattr(input, "paused", None))


async def _channel_payload(info: Info, call: Any, *args: Any) -> SalesChannelPayload:
    try:
        channel = await info.context.run(call, *args)
    except DomainError as exc:
        return SalesChannelPayload(sales_channel=None, errors=errors_from(exc))
    return SalesChannelPayload(sales_channel=SalesChannel.from_model(channel), errors=[])


@strawberry.type
class ChannelMutations:
    @strawberry.mutation(description="A sales channel of a seller; its secret (given or "
                                     "generated) is in this answer only.")
    async def sales_channel_create(self, info: Info, input: SalesChannelCreateInput
                                   ) -> SalesChannelCreatePayload:
        try:
            seller = ids.decode(input.seller_id, "Seller", "input.sellerId")
            channel, secret = await info.context.run(
                channels.create_channel, seller_id=seller, data=_data(input))
        except DomainError as exc:
            return SalesChannelCreatePayload(sales_channel=None, secret=None,
                                             errors=errors_from(exc))
        return SalesChannelCreatePayload(sales_channel=SalesChannel.from_model(channel),
                                         secret=secret, errors=[])

    @strawberry.mutation(description="A new endpoint or secret resumes a FAILING channel "
                                     "and pushes every listing.")
    async def sales_channel_update(self, info: Info, id: strawberry.ID,
                                   input: SalesChannelUpdateInput) -> SalesChannelPayload:
        try:
            channel_id = ids.decode(id, "SalesChannel", "id")
            data = _data(input)
        except DomainError as exc:
            return SalesChannelPayload(sales_channel=None, errors=errors_from(exc))
        return await _channel_payload(info, channels.update_channel, channel_id, data)

    @strawberry.mutation(description="At most 1,000 a call; the same externalId again "
                                     "changes its SKU.")
    async def listings_upsert(self, info: Info, channel_id: strawberry.ID,
                              listings: list[ListingInput]) -> SalesChannelPayload:
        try:
            channel = ids.decode(channel_id, "SalesChannel", "channelId")
        except DomainError as exc:
            return SalesChannelPayload(sales_channel=None, errors=errors_from(exc))
        rows = [channels.ListingInput(item.external_id, item.sku) for item in listings]
        return await _channel_payload(info, channels.upsert_listings, channel, rows)

    @strawberry.mutation
    async def listings_delete(self, info: Info, channel_id: strawberry.ID,
                              external_ids: list[str]) -> SalesChannelPayload:
        try:
            channel = ids.decode(channel_id, "SalesChannel", "channelId")
        except DomainError as exc:
            return SalesChannelPayload(sales_channel=None, errors=errors_from(exc))
        return await _channel_payload(info, channels.delete_listings, channel, external_ids)

    @strawberry.mutation(description="Push every listing's current figure now "
                                     "(INVALID_STATE while PAUSED or FAILING).")
    async def sales_channel_sync(self, info: Info, id: strawberry.ID) -> SalesChannelPayload:
        try:
            channel_id = ids.decode(id, "SalesChannel", "id")
        except DomainError as exc:
            return SalesChannelPayload(sales_channel=None, errors=errors_from(exc))
        return await _channel_payload(info, channels.request_sync, channel_id)

    @strawberry.mutation(description="inventorySync false leaves the product's listings "
                                     "alone on every channel.")
    async def product_update(self, info: Info, id: strawberry.ID,
                             input: ProductUpdateInput) -> ProductUpdatePayload:
        try:
            product = await info.context.run(
                channels.update_product, ids.decode(id, "Product", "id"), name=input.name,
                inventory_sync=input.inventory_sync)
        except DomainError as exc:
            return ProductUpdatePayload(product=None, errors=errors_from(exc))
        return ProductUpdatePayload(product=Product.from_model(product), errors=[])


@strawberry.type
class ChannelQueries:
    @strawberry.field(description="Newest first: an admin's every channel, a seller "
                                  "token's own.")
    async def sales_channels(
        self, info: Info, seller_id: strawberry.ID | None = None,
        status: ChannelStatus | None = None, first: int | None = None,
        after: str | None = None,
    ) -> Connection[SalesChannel]:
        principal = _allowed(permissions.require_manager, info.context.principal)
        wanted = None
        if seller_id is not None:
            try:
                wanted = ids.decode(seller_id, "Seller", "sellerId")
            except DomainError:
                wanted = -1
        scope = permissions.seller_scope(principal)
        if scope is not None:
            wanted = scope if wanted in (None, scope) else -1
        size = _first(first)
        rows = await info.context.read(channel_reads.channels_page, size, _after(after),
                                       wanted, status.value if status else None)
        edges = [Edge(node=SalesChannel.from_model(r), pk=r.id)
                 for r in rows[:size]]
        return Connection(edges=edges, page_info=PageInfo.of(
            edges, after, has_next_page=len(rows) > size))
