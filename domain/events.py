"""Events a unit of work publishes after a successful commit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StockChanged:
    """The available figures of these variants may have changed."""

    variant_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ListingsChanged:
    """These sales channels have listings to push now (their new figures and versions are
    committed already: the event only saves waiting for the sweeper)."""

    channel_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SubscriptionsChanged:
    """These webhook subscriptions may deliver now (resumed, or given a new url or
    secret)."""

    subscription_ids: tuple[int, ...]


Event = StockChanged | ListingsChanged | SubscriptionsChanged
