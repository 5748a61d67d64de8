"""Webhook subscriptions (API.md "Stock webhooks"): who hears about which stocks; the events
themselves are recorded and delivered by domain/webhooks.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from domain import permissions, signing
from domain.errors import DomainError, InvalidInput, NotFound, raise_all
from domain.events import SubscriptionsChanged
from domain.models import Seller, StockMovement, WebhookDelivery, WebhookEvent, WebhookSubscription
from domain.permissions import Principal
from domain.services.channels import MAX_URL, _is_http_url, secret_error
from domain.uow import UnitOfWork
from domain.webhooks import encode_events


@dataclass(frozen=True, slots=True)
class SubscriptionInput:
    """webhookSubscriptionCreate's and webhookSubscriptionUpdate's input; None leaves a
    field as it is."""

    url: str | None = None
    events: Sequence[WebhookEvent] | None = None
    secret: str | None = None
    paused: bool | None = None


def _check(data: SubscriptionInput) -> None:
    errors: list[DomainError] = []
    if data.url is not None and not _is_http_url(data.url):
        errors.append(InvalidInput("url must be an http or https URL with a host, at most "
                                   f"{MAX_URL} characters", field="input.url"))
    if data.events is not None and not data.events:
        errors.append(InvalidInput("events must name at least one event",
                                   field="input.events"))
    if data.secret is not None and not signing.is_secret(data.secret):
        errors.append(secret_error("input.secret"))
    raise_all(errors)


def create(uow: UnitOfWork, principal: Principal | None, *, seller_id: int | None,
           data: SubscriptionInput) -> tuple[WebhookSubscription, str]:
    """A subscription and its secret (generated when none is given: shown this once).
    A seller token's subscription is always of its own stocks; an admin's of one seller's,
    or of every stock when `seller_id` is None. Events come from changes committed after
    it."""
    caller = permissions.require_manager(principal)
    if caller.seller_id is not None and seller_id is None:
        seller_id = caller.seller_id
    _check(data)
    if data.url is None or data.events is None:
        raise InvalidInput("url and events are required", field="input")
    secret = data.secret or signing.new_secret()
    with uow:
        s = uow.session
        if seller_id is not None:
            permissions.require_seller_access(
                caller, seller_id if s.get(Seller, seller_id) else None,
                NotFound("seller not found", field="input.sellerId"))
        subscription = WebhookSubscription(
            seller_id=seller_id, url=data.url, events=encode_events(data.events),
            secret=secret, paused=bool(data.paused), failing=False,
            after_movement=s.scalar(select(func.coalesce(func.max(StockMovement.id), 0))))
        s.add(subscription)
        s.flush()
        uow.commit()
    return subscription, secret


def _for_change(s: Session, principal: Principal | None, subscription_id: int
                ) -> WebhookSubscription:
    subscription = s.get(WebhookSubscription, subscription_id, with_for_update=True)
    permissions.require_manager(principal)
    if subscription is None or not permissions.can_manage_subscription(
            principal, subscription.seller_id):
        raise NotFound("webhook subscription not found", field="id")
    return subscription


def update(uow: UnitOfWork, principal: Principal | None, subscription_id: int,
           data: SubscriptionInput) -> WebhookSubscription:
    """Change what is given. A new url or secret clears FAILING and starts the retry
    schedule afresh; unpausing delivers what is pending."""
    _check(data)
    with uow:
        s = uow.session
        subscription = _for_change(s, principal, subscription_id)
        resumed = False
        if data.url is not None and data.url != subscription.url:
            subscription.url, resumed = data.url, True
        if data.secret is not None and data.secret != subscription.secret:
            subscription.secret, resumed = data.secret, True
        if data.events is not None:
            subscription.events = encode_events(data.events)
        if data.paused is not None:
            resumed = resumed or (subscription.paused and not data.paused)
            subscription.paused = data.paused
        if resumed:
            subscription.failing = False
            subscription.retry_at = 0.0
            subscription.failures = 0
            uow.emit(SubscriptionsChanged((subscription_id,)))
        s.flush()
        uow.commit()
    return subscription


def remove(uow: UnitOfWork, principal: Principal | None, subscription_id: int) -> None:
    """Delete the subscription and what it had pending."""
    with uow:
        s = uow.session
        _for_change(s, principal, subscription_id)
        s.execute(delete(WebhookDelivery)
                  .where(WebhookDelivery.subscription_id == subscription_id))
        s.execute(delete(WebhookSubscription).where(WebhookSubscription.id == subscription_id))
        uow.commit()


# -- reading -------------------------------------------------------------------------------


def page(s: Session, first: int, before_id: int | None, seller_id: int | None,
         scope: int | None) -> list[WebhookSubscription]:
    """Newest first, at most `first + 1`; `seller_id`: that seller's; `scope`: a seller
    token's seller (only its own)."""
    stmt = select(WebhookSubscription).order_by(WebhookSubscription.id.desc()) \
        .limit(first + 1)
    if before_id is not None:
        stmt = stmt.where(WebhookSubscription.id < before_id)
    for seller in (seller_id, scope):
        if seller is not None:
            stmt = stmt.where(WebhookSubscription.seller_id == seller)
    return list(s.scalars(stmt))


def by_id(s: Session, keys: Sequence[int]) -> list[WebhookSubscription | None]:
    found = {w.id: w for w in s.scalars(
        select(WebhookSubscription).where(WebhookSubscription.id.in_(set(keys))))}
    return [found.get(k) for k in keys]


def pending_counts(s: Session, keys: Sequence[int]) -> list[int]:
    counts = dict(s.execute(
        select(WebhookDelivery.subscription_id, func.count())
        .where(WebhookDelivery.subscription_id.in_(set(keys)))
        .group_by(WebhookDelivery.subscription_id)).all())
    return [int(counts.get(k, 0)) for k in keys]
