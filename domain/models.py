"""SQLAlchemy models: the persistent shape of sellers, catalog, stock and orders."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class OrderType(enum.StrEnum):
    DRAFT = "DRAFT"
    QUOTE = "QUOTE"
    OFFER = "OFFER"
    REGULAR = "REGULAR"


class OrderStatus(enum.StrEnum):
    DRAFT = "DRAFT"
    QUOTE = "QUOTE"
    OFFER = "OFFER"
    UNFULFILLED = "UNFULFILLED"
    PARTIALLY_FULFILLED = "PARTIALLY_FULFILLED"
    FULFILLED = "FULFILLED"
    CANCELED = "CANCELED"


class MovementType(enum.StrEnum):
    STOCK_UPDATE = "STOCK_UPDATE"
    ADJUSTMENT = "ADJUSTMENT"
    ALLOCATION = "ALLOCATION"
    DEALLOCATION = "DEALLOCATION"
    FULFILLMENT = "FULFILLMENT"
    PURCHASE_RECEIVING = "PURCHASE_RECEIVING"
    TRANSFER_OUT = "TRANSFER_OUT"
    TRANSFER_IN = "TRANSFER_IN"
    FEED_IMPORT = "FEED_IMPORT"
    BATCH_PICK = "BATCH_PICK"


class Role(enum.StrEnum):
    ADMIN = "admin"
    SELLER = "seller"
    STOREFRONT = "storefront"


def _enum(cls: type[enum.StrEnum]) -> Enum:
    # stored as plain strings: adding a member never needs an ALTER TYPE
    return Enum(cls, native_enum=False, length=24, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    pass


class Seller(Base):
    __tablename__ = "seller"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))


class ShippingZone(Base):
    __tablename__ = "shipping_zone"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))


class ShippingZoneCountry(Base):
    __tablename__ = "shipping_zone_country"

    zone_id: Mapped[int] = mapped_column(
        ForeignKey("shipping_zone.id", ondelete="CASCADE"), primary_key=True
    )
    country: Mapped[str] = mapped_column(String(2), primary_key=True)

    __table_args__ = (Index("ix_shipping_zone_country_country", "country"),)


warehouse_shipping_zone = Table(
    "warehouse_shipping_zone",
    Base.metadata,
    Column(
        "warehouse_id",
        Integer,
        ForeignKey("warehouse.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "zone_id",
        Integer,
        ForeignKey("shipping_zone.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class Warehouse(Base):
    __tablename__ = "warehouse"

    id: Mapped[int] = mapped_column(primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("seller.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    # lower allocates first; ties go to the older warehouse
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Product(Base):
    __tablename__ = "product"

    id: Mapped[int] = mapped_column(primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("seller.id"))
    name: Mapped[str] = mapped_column(String(255))
    # False: no sales channel is told this product's figures (its listings are left alone)
    inventory_sync: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")

    # a seller's products newest first, a page at a time (migration 0022); unique, so that a
    # variant's (seller_id, product_id) can refer to it (migration 0023)
    __table_args__ = (Index("ix_product_seller", "seller_id", "id", unique=True),)


class ProductVariant(Base):
    __tablename__ = "product_variant"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id"), index=True)
    # the product's seller, kept here so that the database holds a SKU unique per seller
    # (two sellers may both sell "TSHIRT-M"; one seller cannot have it twice)
    seller_id: Mapped[int] = mapped_column(ForeignKey("seller.id"))
    sku: Mapped[str] = mapped_column(String(255))
    track_inventory: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (
        # SKU first: it also serves lookups by SKU alone (`productVariants(skus:)`)
        UniqueConstraint("sku", "seller_id", name="uq_product_variant_sku_seller"),
        # the seller is its product's, as the database holds (migration 0023): which
        # warehouses may serve the variant is known without reading its product
        # (`stock_rules.serves`)
        ForeignKeyConstraint(["seller_id", "product_id"], ["product.seller_id", "product.id"],
                             name="fk_product_variant_product_seller"),
        # a seller's variants newest first, a page at a time (migration 0022)
        Index("ix_product_variant_seller", "seller_id", "id"),
    )


class Stock(Base):
    __tablename__ = "stock"

    id: Mapped[int] = mapped_column(primary_key=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("product_variant.id"))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    quantity_allocated: Mapped[int] = mapped_column(Integer, default=0)
    # seller dashboards flag the stock when available falls below this
    low_stock_threshold: Mapped[int | None] = mapped_column(Integer)
    # the part of quantity_allocated that open pick batches hold ("batch reserve"); the
    # rest is held by the orders themselves ("order reserve")
    quantity_reserved_for_batches: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0")

    __table_args__ = (
        UniqueConstraint("variant_id", "warehouse_id", name="uq_stock_variant_warehouse"),
        CheckConstraint("quantity >= 0", name="ck_stock_quantity_nonnegative"),
        CheckConstraint("quantity_allocated >= 0", name="ck_stock_allocated_nonnegative"),
        CheckConstraint("quantity_reserved_for_batches >= 0 AND "
                        "quantity_reserved_for_batches <= quantity_allocated",
                        name="ck_stock_batch_reserve_range"),
        # `stocks(belowThreshold: true)` walks the stocks that have a threshold, newest
        # first, instead of every stock: an order's update of the counters leaves it be
        Index("ix_stock_with_threshold", "id",
              postgresql_where=text("low_stock_threshold IS NOT NULL"),
              sqlite_where=text("low_stock_threshold IS NOT NULL")),
        # a seller's stocks, newest first, warehouse by warehouse (reads._per_warehouse)
        Index("ix_stock_warehouse", "warehouse_id", "id"),
        Index("ix_stock_warehouse_with_threshold", "warehouse_id", "id",
              postgresql_where=text("low_stock_threshold IS NOT NULL"),
              sqlite_where=text("low_stock_threshold IS NOT NULL")),
    )


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[OrderType] = mapped_column(_enum(OrderType))
    status: Mapped[OrderStatus] = mapped_column(_enum(OrderStatus))
    shipping_country: Mapped[str] = mapped_column(String(2))
    # True while the order's tracked lines hold allocations (its type allocated at creation,
    # or it was confirmed); False for orders whose type had allocation turned off.
    allocated: Mapped[bool] = mapped_column(Boolean)
    # an idempotency key belongs to the caller that sent it: unique per token, and only
    # that token's requests find the order by it (NULL: created before keys were scoped)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_by_token_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # an order a sales channel sent in (POST /channels/{id}/orders): the channel and the
    # store's own id of it, unique per channel
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("sales_channel.id"))
    external_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        UniqueConstraint("idempotency_key", "created_by_token_id",
                         name="uq_orders_idempotency_key_token"),
        UniqueConstraint("channel_id", "external_id", name="uq_orders_channel_external_id"),
        # a status's orders newest first (`orders(statuses: [X])` pages) from the index
        # alone; it serves lookups by status too (migration 0018)
        Index("ix_orders_status_id", "status", "id"),
        # a token's orders newest first (a storefront's `orders`, a seller's own)
        Index("ix_orders_token_id", "created_by_token_id", "id"),
    )


class OrderLine(Base):
    __tablename__ = "order_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    # (no index of its own: no read goes from a variant to its lines, 0021)
    variant_id: Mapped[int] = mapped_column(ForeignKey("product_variant.id"))
    # the variant's seller, written with the line from product_variant (no foreign key:
    # the variant's own is the check): a seller's orders, newest first, from an index
    seller_id: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)
    quantity_fulfilled: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_order_line_seller_order", "seller_id", "order_id"),
        CheckConstraint("quantity > 0", name="ck_order_line_quantity_positive"),
        CheckConstraint(
            "quantity_fulfilled >= 0 AND quantity_fulfilled <= quantity",
            name="ck_order_line_fulfilled_range",
        ),
    )


class Allocation(Base):
    __tablename__ = "allocation"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_line.id"))
    stock_id: Mapped[int] = mapped_column(ForeignKey("stock.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("order_line_id", "stock_id", name="uq_allocation_line_stock"),
        CheckConstraint("quantity > 0", name="ck_allocation_quantity_positive"),
    )


class Fulfillment(Base):
    __tablename__ = "fulfillment"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class FulfillmentLine(Base):
    __tablename__ = "fulfillment_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    fulfillment_id: Mapped[int] = mapped_column(ForeignKey("fulfillment.id"), index=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_line.id"), index=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    quantity: Mapped[int] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("quantity > 0", name="ck_fulfillment_line_quantity"),)


class PickBatchStatus(enum.StrEnum):
    OPEN = "OPEN"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"


class PickBatch(Base):
    """Orders a warehouse picks together. While OPEN, the units of its lines are held by
    the batch (`Stock.quantity_reserved_for_batches`); completing it ships them."""

    __tablename__ = "pick_batch"

    id: Mapped[int] = mapped_column(primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    status: Mapped[PickBatchStatus] = mapped_column(_enum(PickBatchStatus))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_pick_batch_warehouse_status", "warehouse_id", "status"),)


class PickBatchLine(Base):
    """The units of one order line a batch holds: its whole allocation in the batch's
    warehouse when the batch was made. Kept after the batch completes or is canceled (what
    was picked, what was held); removed when its order is canceled while the batch is open."""

    __tablename__ = "pick_batch_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("pick_batch.id"), index=True)
    # the line's order, kept here so "is this order in an open batch?" needs no join
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_line.id"))
    stock_id: Mapped[int] = mapped_column(ForeignKey("stock.id"))
    quantity: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("batch_id", "order_line_id", name="uq_pick_batch_line_batch_line"),
        CheckConstraint("quantity > 0", name="ck_pick_batch_line_quantity_positive"),
    )


class StockMovement(Base):
    """One change of one stock's counters: the ledger. Rows are only ever inserted."""

    __tablename__ = "stock_movement"

    id: Mapped[int] = mapped_column(primary_key=True)
    # no foreign keys, no index of its own: the ids come from the row the same statement
    # changed, nothing deletes a stock or an order, and each key check locked the stock row
    # again; only the audit reads by stock, and it reads everything (migration 0005)
    stock_id: Mapped[int] = mapped_column(Integer)
    # denormalized from the stock so the ledger filters without a join
    variant_id: Mapped[int] = mapped_column(Integer)
    warehouse_id: Mapped[int] = mapped_column(Integer)
    type: Mapped[MovementType] = mapped_column(_enum(MovementType))
    quantity_change: Mapped[int] = mapped_column(Integer)
    allocated_change: Mapped[int] = mapped_column(Integer)
    quantity_after: Mapped[int] = mapped_column(Integer)
    allocated_after: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(500))
    order_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (
        Index("ix_stock_movement_variant", "variant_id", "id"),
        Index("ix_stock_movement_warehouse", "warehouse_id", "id"),
        # time ranges: rows arrive in time order, so a BRIN index is tiny and nearly free
        # to maintain on PostgreSQL (a B-tree elsewhere)
        Index("ix_stock_movement_created_at", "created_at", postgresql_using="brin"),
    )


class PurchaseOrder(Base):
    """Stock ordered from a supplier into one warehouse; received in one or more parts."""

    __tablename__ = "purchase_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class PurchaseOrderLine(Base):
    __tablename__ = "purchase_order_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    purchase_order_id: Mapped[int] = mapped_column(ForeignKey("purchase_order.id"))
    variant_id: Mapped[int] = mapped_column(ForeignKey("product_variant.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    quantity_received: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        UniqueConstraint("purchase_order_id", "variant_id", name="uq_po_line_variant"),
        CheckConstraint("quantity > 0", name="ck_po_line_quantity_positive"),
        CheckConstraint("quantity_received >= 0 AND quantity_received <= quantity",
                        name="ck_po_line_received_range"),
    )


class OrderTypeAllocation(Base):
    """Marketplace configuration: does an order of this type allocate stock?"""

    __tablename__ = "order_type_allocation"

    order_type: Mapped[OrderType] = mapped_column(_enum(OrderType), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    # sha256 of the token; the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role))
    seller_id: Mapped[int | None] = mapped_column(ForeignKey("seller.id"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # shown in the ledger's actor, e.g. `seller:3 "Berlin dashboard"`
    name: Mapped[str | None] = mapped_column(String(40))
    # written in batches, at most a minute behind (api/auth.py)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RelayPosition(Base):
    """How far a relay has handed the ledger on: every movement with `id <= last_id` has
    reached its consumer, or can never commit (domain/relay.py)."""

    __tablename__ = "relay_position"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class SyncMode(enum.StrEnum):
    ALL = "ALL"
    FEEDS_ONLY = "FEEDS_ONLY"
    NONE = "NONE"


class SalesChannel(Base):
    """An external store of a seller; Stockyard pushes its listings' figures there
    (domain/sync.py). The columns after `last_synced_at` are the push schedule."""

    __tablename__ = "sales_channel"

    id: Mapped[int] = mapped_column(primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("seller.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    endpoint_url: Mapped[str] = mapped_column(String(2048))
    # whsec_<base64>: kept to sign pushes and check inbound requests, never shown again
    secret: Mapped[str] = mapped_column(String(100))
    sync_mode: Mapped[SyncMode] = mapped_column(_enum(SyncMode))
    # True: every warehouse of the seller, later ones included; False: those listed in
    # sales_channel_warehouse
    all_warehouses: Mapped[bool] = mapped_column(Boolean)
    untracked_quantity: Mapped[int] = mapped_column(Integer)
    max_requests_per_second: Mapped[int] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # the endpoint refused our credentials (401/403): nothing is sent until it changes
    failing: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # Unix seconds: when the next push may start (backoff, Retry-After), when the next
    # request may go (maxRequestsPerSecond, across processes); failures in a row
    retry_at: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    next_request_at: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # one pusher at a time: it holds the lease until `lease_until` (Unix seconds), under
    # the fencing number `lease` (every claim takes the next one)
    lease: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


sales_channel_warehouse = Table(
    "sales_channel_warehouse",
    Base.metadata,
    Column("channel_id", ForeignKey("sales_channel.id", ondelete="CASCADE"), primary_key=True),
    Column("warehouse_id", ForeignKey("warehouse.id"), primary_key=True),
)


class Listing(Base):
    """A channel's listing, matched to the seller's variant of the same SKU.

    `figure` is what the listing should show, as last worked out, and `version` grows with
    every change of it; `acked_version` is the version the channel acknowledged at its
    current endpoint (NULL: not yet, or a full push is due). Pending: matched and
    acked_version below version."""

    __tablename__ = "listing"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("sales_channel.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    sku: Mapped[str] = mapped_column(String(255))
    variant_id: Mapped[int | None] = mapped_column(ForeignKey("product_variant.id"), index=True)
    figure: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=0)
    acked_version: Mapped[int | None] = mapped_column(Integer)
    pushed_quantity: Mapped[int | None] = mapped_column(Integer)
    pushed_version: Mapped[int | None] = mapped_column(Integer)
    pushed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Unix seconds: when the oldest change not acknowledged yet was committed (the sync
    # lag metric, domain/metrics.py); null when the channel has everything
    changed_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("channel_id", "external_id", name="uq_listing_channel_external_id"),
        Index("ix_listing_channel_sku", "channel_id", "sku"),
    )


class Lease(Base):
    """A job that at most one process may run at a time (the reconciliation): the holder
    until `expires_at` (Unix seconds), under the fencing number `fence` (every taking of
    the lease draws the next, and the holder's writes check it), and when the job is due
    next (`due_at`), so that the schedule outlives any one process."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    holder: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    due_at: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class WebhookEvent(enum.StrEnum):
    STOCK_UPDATED = "STOCK_UPDATED"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    BACK_IN_STOCK = "BACK_IN_STOCK"
    LOW_STOCK = "LOW_STOCK"


class WebhookSubscription(Base):
    """A receiver of stock events (API.md "Stock webhooks"): of one seller's stocks, or of
    every stock when `seller_id` is null (admin). The columns after `created_at` are the
    delivery schedule, as for a sales channel (domain/webhooks.py)."""

    __tablename__ = "webhook_subscription"

    id: Mapped[int] = mapped_column(primary_key=True)
    seller_id: Mapped[int | None] = mapped_column(ForeignKey("seller.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    # the WebhookEvent names, comma-separated, in declaration order
    events: Mapped[str] = mapped_column(String(100))
    secret: Mapped[str] = mapped_column(String(100))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # 401/403, or the whole retry schedule failed: nothing is sent until url or secret change
    failing: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # events come from movements after this one (not from the ledger's history)
    after_movement: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    retry_at: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # failed tries in a row of the oldest pending event: its place in the retry schedule
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class WebhookDelivery(Base):
    """An event waiting to be delivered; deleted once the receiver acknowledged it.

    A crossing (OUT_OF_STOCK, BACK_IN_STOCK, LOW_STOCK) is one row per movement that made
    it; STOCK_UPDATED is one row per stock at most while pending, brought up to date by
    later movements (coalesced). `version`: the movement's id, which grows with every
    change of the stock."""

    __tablename__ = "webhook_delivery"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscription.id", ondelete="CASCADE"))
    stock_id: Mapped[int] = mapped_column(Integer)
    event: Mapped[WebhookEvent] = mapped_column(_enum(WebhookEvent))
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        # a crossing is recorded once however often the relay hands its movement on;
        # STOCK_UPDATED rows are found by (subscription, stock, event)
        Index("ix_webhook_delivery_event", "subscription_id", "stock_id", "event", "version",
              unique=True),
        Index("ix_webhook_delivery_order", "subscription_id", "version", "id"),
    )


class SupplierFeed(Base):
    """A supplier's stock filling a merchant's warehouse (API.md "Supplier feeds"): an
    internal supplier (a seller here, `supplier_seller_id`) or an external one that posts
    its figures to /feeds/{id}."""

    __tablename__ = "supplier_feed"

    id: Mapped[int] = mapped_column(primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    supplier_seller_id: Mapped[int | None] = mapped_column(ForeignKey("seller.id"), index=True)
    secret: Mapped[str] = mapped_column(String(100))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    failing: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class SupplierFeedItem(Base):
    """A merchant variant the feed fills, and the supplier's SKU for it; the supplier's
    last figure (null before the first)."""

    __tablename__ = "supplier_feed_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("supplier_feed.id", ondelete="CASCADE"))
    # indexed: the relay looks up the items of every variant that changed (feeds.follow)
    variant_id: Mapped[int] = mapped_column(ForeignKey("product_variant.id"), index=True)
    supplier_sku: Mapped[str] = mapped_column(String(255), index=True)
    supplier_quantity: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("feed_id", "variant_id",
                                       name="uq_supplier_feed_item_variant"),)
