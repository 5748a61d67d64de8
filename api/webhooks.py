"""Webhook subscriptions in the schema (API.md "Stock webhooks")."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api import ids
from api.channels import ChannelStatus, status_of
from api.errors import StockyardError, errors_from
from api.queries import Connection, Edge, PageInfo, _after, _allowed, _first, _utc
from api.types import Info, Node, Seller
from domain import permissions
from domain.errors import DomainError
from domain.models import WebhookEvent
from domain.models import WebhookSubscription as SubscriptionModel
from domain.services import webhooks
from domain.webhooks import decode_events

WebhookEventEnum = strawberry.enum(WebhookEvent, name="WebhookEvent", description=(
    "STOCK_UPDATED: any change of a stock's figures (may coalesce); OUT_OF_STOCK: available "
    "went from above 0 to 0; BACK_IN_STOCK: from 0 to above 0; LOW_STOCK: available fell "
    "below the stock's lowStockThreshold from at or above it."))


@strawberry.type(description="A receiver of signed stock events.")
class WebhookSubscription(Node):
    url: str
    events: list[WebhookEventEnum]  # type: ignore[valid-type]
    status: ChannelStatus
    last_error: str | None
    last_error_at: datetime | None
    last_delivered_at: datetime | None
    pk: strawberry.Private[int]
    seller_pk: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: SubscriptionModel) -> WebhookSubscription:
        status = status_of(m.paused, m.failing)
        return cls(id=strawberry.ID(ids.encode("WebhookSubscription", m.id)), pk=m.id,
                   seller_pk=m.seller_id, url=m.url, events=decode_events(m.events),
                   status=status, last_error=m.last_error,
                   last_error_at=_utc(m.last_error_at),
                   last_delivered_at=_utc(m.last_delivered_at))

    @strawberry.field(description="Null: every seller's stocks (an admin's subscription).")
    async def seller(self, info: Info) -> Seller | None:
        if self.seller_pk is None:
            return None
        return Seller.from_model(await info.context.loaders.seller.load(self.seller_pk))

    @strawberry.field(description="Events recorded and not yet acknowledged by the receiver.")
    async def pending_deliveries(self, info: Info) -> int:
        return await info.context.loaders.pending_of_subscription.load(self.pk)


@strawberry.input
class WebhookSubscriptionCreateInput:
    seller_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Only that seller's stocks (a seller token: always its own); an admin may omit it "
        "for every stock."))
    url: str = strawberry.field(description="http or https.")
    events: list[WebhookEventEnum]  # type: ignore[valid-type]
    secret: str | None = strawberry.field(default=None, description=(
        "whsec_<base64 of 24-64 bytes>; generated when not given, and shown once."))


@strawberry.input
class WebhookSubscriptionUpdateInput:
    url: str | None = None
    events: list[WebhookEventEnum] | None = None  # type: ignore[valid-type]
    secret: str | None = None
    paused: bool | None = None


@strawberry.type
class WebhookSubscriptionCreatePayload:
    webhook_subscription: WebhookSubscription | None
    secret: str | None = strawberry.field(description="Shown here only, never again.")
    errors: list[StockyardError]


@strawberry.type
class WebhookSubscriptionPayload:
    webhook_subscription: WebhookSubscription | None
    errors: list[StockyardError]


@strawberry.type
class WebhookSubscriptionDeletePayload:
    errors: list[StockyardError]


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(description="Events of stock changes committed from now on; the "
                                     "secret (given or generated) is in this answer only.")
    async def webhook_subscription_create(self, info: Info,
                                          input: WebhookSubscriptionCreateInput
                                          ) -> WebhookSubscriptionCreatePayload:
        try:
            seller = None if input.seller_id is None else \
                ids.decode(input.seller_id, "Seller", "input.sellerId")
            subscription, secret = await info.context.run(
                webhooks.create, seller_id=seller, data=webhooks.SubscriptionInput(
                    url=input.url, events=list(input.events), secret=input.secret))
        except DomainError as exc:
            return WebhookSubscriptionCreatePayload(webhook_subscription=None, secret=None,
                                                    errors=errors_from(exc))
        return WebhookSubscriptionCreatePayload(
            webhook_subscription=WebhookSubscription.from_model(subscription), secret=secret,
            errors=[])

    @strawberry.mutation(description="A new url or secret resumes a FAILING subscription; "
                                     "unpausing delivers what is pending.")
    async def webhook_subscription_update(self, info: Info, id: strawberry.ID,
                                          input: WebhookSubscriptionUpdateInput
                                          ) -> WebhookSubscriptionPayload:
        try:
            subscription = await info.context.run(
                webhooks.update, ids.decode(id, "WebhookSubscription", "id"),
                webhooks.SubscriptionInput(
                    url=input.url, secret=input.secret, paused=input.paused,
                    events=None if input.events is None else list(input.events)))
        except DomainError as exc:
            return WebhookSubscriptionPayload(webhook_subscription=None,
                                              errors=errors_from(exc))
        return WebhookSubscriptionPayload(
            webhook_subscription=WebhookSubscription.from_model(subscription), errors=[])

    @strawberry.mutation(description="The subscription and its pending events go.")
    async def webhook_subscription_delete(self, info: Info, id: strawberry.ID
                                          ) -> WebhookSubscriptionDeletePayload:
        try:
            await info.context.run(webhooks.remove,
                                   ids.decode(id, "WebhookSubscription", "id"))
        except DomainError as exc:
            return WebhookSubscriptionDeletePayload(errors=errors_from(exc))
        return WebhookSubscriptionDeletePayload(errors=[])


@strawberry.type
class WebhookQueries:
    @strawberry.field(description="Newest first: an admin's every subscription, a seller "
                                  "token's own.")
    async def webhook_subscriptions(
        self, info: Info, seller_id: strawberry.ID | None = None, first: int | None = None,
        after: str | None = None,
    ) -> Connection[WebhookSubscription]:
        principal = _allowed(permissions.require_manager, info.context.principal)
        wanted = None
        if seller_id is not None:
            try:
                wanted = ids.decode(seller_id, "Seller", "sellerId")
            except DomainError:
                wanted = -1
        size = _first(first)
        rows = await info.context.read(webhooks.page, size, _after(after), wanted,
                                       permissions.seller_scope(principal))
        edges = [Edge(node=WebhookSubscription.from_model(r), pk=r.id)
                 for r in rows[:size]]
        return Connection(edges=edges, page_info=PageInfo.of(
            edges, after, has_next_page=len(rows) > size))
