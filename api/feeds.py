"""Supplier feeds in the schema (API.md "Supplier feeds")."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api import ids
from api.channels import ChannelStatus, status_of
from api.errors import StockyardError, errors_from
from api.queries import Connection, Edge, PageInfo, _after, _first, _utc
from api.types import Info, Node, ProductVariant, Seller, Warehouse, _warehouse
from domain.errors import DomainError
from domain.models import SupplierFeed as FeedModel
from domain.services import feeds


@strawberry.type(description="A supplier item: which merchant variant the feed fills.")
class SupplierFeedItem:
    supplier_sku: str
    supplier_quantity: int | None = strawberry.field(description=(
        "The supplier's last figure (null before the first)."))
    shortfall: int = strawberry.field(description=(
        "Units allocated here that the supplier no longer has."))
    variant_pk: strawberry.Private[int]

    @strawberry.field
    async def variant(self, info: Info) -> ProductVariant:
        return ProductVariant.from_model(await info.context.loaders.variant.load(
            self.variant_pk))


@strawberry.type(description="A supplier's stock filling a merchant's warehouse.")
class SupplierFeed(Node):
    name: str
    status: ChannelStatus
    last_error: str | None
    last_error_at: datetime | None
    last_synced_at: datetime | None
    pk: strawberry.Private[int]
    warehouse_pk: strawberry.Private[int]
    supplier_pk: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: FeedModel) -> SupplierFeed:
        status = status_of(m.paused, m.failing)
        return cls(id=strawberry.ID(ids.encode("SupplierFeed", m.id)), pk=m.id,
                   warehouse_pk=m.warehouse_id, supplier_pk=m.supplier_seller_id,
                   name=m.name, status=status, last_error=m.last_error,
                   last_error_at=_utc(m.last_error_at), last_synced_at=_utc(m.last_synced_at))

    @strawberry.field(description="The merchant's warehouse that the feed fills.")
    async def warehouse(self, info: Info) -> Warehouse:
        return await _warehouse(info, self.warehouse_pk)

    @strawberry.field(description="The internal supplier; null for an external feed.")
    async def supplier(self, info: Info) -> Seller | None:
        if self.supplier_pk is None:
            return None
        return Seller.from_model(await info.context.loaders.seller.load(self.supplier_pk))

    @strawberry.field(description="Newest first.")
    async def items(self, info: Info, first: int | None = None, after: str | None = None
                    ) -> Connection[SupplierFeedItem]:
        size = _first(first)
        rows = await info.context.read(feeds.items_page, self.pk, size, _after(after))
        edges = [Edge(node=SupplierFeedItem(supplier_sku=r.supplier_sku,
                                            supplier_quantity=r.supplier_quantity,
                                            shortfall=r.shortfall, variant_pk=r.variant_id),
                      pk=r.id) for r in rows[:size]]
        return Connection(edges=edges, page_info=PageInfo.of(
            edges, after, has_next_page=len(rows) > size))


@strawberry.input
class SupplierFeedCreateInput:
    warehouse_id: strawberry.ID = strawberry.field(description=(
        "The merchant's warehouse that the feed fills."))
    name: str
    supplier_seller_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "A seller of this marketplace whose stock feeds it (admin only); without it the "
        "feed is external and its supplier posts to /feeds/{feedId}."))
    secret: str | None = None


@strawberry.input
class SupplierFeedUpdateInput:
    name: str | None = None
    secret: str | None = None
    paused: bool | None = None


@strawberry.input
class SupplierFeedItemInput:
    variant_id: strawberry.ID
    supplier_sku: str


@strawberry.type
class SupplierFeedCreatePayload:
    supplier_feed: SupplierFeed | None
    secret: str | None = strawberry.field(description="Shown here only, never again.")
    errors: list[StockyardError]


@strawberry.type
class SupplierFeedPayload:
    supplier_feed: SupplierFeed | None
    errors: list[StockyardError]


@strawberry.type
class SupplierFeedDeletePayload:
    errors: list[StockyardError]


@strawberry.type
class FeedMutations:
    @strawberry.mutation(description="A feed filling a merchant's warehouse; its secret "
                                     "(given or generated) is in this answer only.")
    async def supplier_feed_create(self, info: Info, input: SupplierFeedCreateInput
                                   ) -> SupplierFeedCreatePayload:
        try:
            warehouse = ids.decode(input.warehouse_id, "Warehouse", "input.warehouseId")
            supplier = None if input.supplier_seller_id is None else \
                ids.decode(input.supplier_seller_id, "Seller", "input.supplierSellerId")
            feed, secret = await info.context.run(
                feeds.create, warehouse_id=warehouse, name=input.name,
                supplier_seller_id=supplier, secret=input.secret)
        except DomainError as exc:
            return SupplierFeedCreatePayload(supplier_feed=None, secret=None,
                                             errors=errors_from(exc))
        return SupplierFeedCreatePayload(supplier_feed=SupplierFeed.from_model(feed),
                                         secret=secret, errors=[])

    @strawberry.mutation(description="Rename, a new secret, pause or resume.")
    async def supplier_feed_update(self, info: Info, id: strawberry.ID,
                                   input: SupplierFeedUpdateInput) -> SupplierFeedPayload:
        try:
            feed = await info.context.run(
                feeds.update, ids.decode(id, "SupplierFeed", "id"),
                feeds.FeedInput(name=input.name, secret=input.secret, paused=input.paused))
        except DomainError as exc:
            return SupplierFeedPayload(supplier_feed=None, errors=errors_from(exc))
        return SupplierFeedPayload(supplier_feed=SupplierFeed.from_model(feed), errors=[])

    @strawberry.mutation(description="At most 1,000 a call; the same variant again changes "
                                     "its supplier SKU. New items are filled at once.")
    async def supplier_feed_items_upsert(self, info: Info, feed_id: strawberry.ID,
                                         items: list[SupplierFeedItemInput]
                                         ) -> SupplierFeedPayload:
        try:
            rows = [feeds.ItemInput(ids.decode(item.variant_id, "ProductVariant",
                                               f"items.{i}.variantId"), item.supplier_sku)
                    for i, item in enumerate(items)]
            feed = await info.context.run(
                feeds.upsert_items, ids.decode(feed_id, "SupplierFeed", "feedId"), rows)
        except DomainError as exc:
            return SupplierFeedPayload(supplier_feed=None, errors=errors_from(exc))
        return SupplierFeedPayload(supplier_feed=SupplierFeed.from_model(feed), errors=[])

    @strawberry.mutation(description="The feed and its items go; the stock keeps its "
                                     "last figures.")
    async def supplier_feed_delete(self, info: Info, id: strawberry.ID
                                   ) -> SupplierFeedDeletePayload:
        try:
            await info.context.run(feeds.remove, ids.decode(id, "SupplierFeed", "id"))
        except DomainError as exc:
            return SupplierFeedDeletePayload(errors=errors_from(exc))
        return SupplierFeedDeletePayload(errors=[])
