"""Schema assembly: query, mutation, caches and error masking."""

from __future__ import annotations

import dataclasses
import functools
import logging
from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.utils.logging import StrawberryLogger

from api import direct
from api.batches import BatchMutations, BatchQueries, PickBatch
from api.channels import ChannelMutations, ChannelQueries, SalesChannel
from api.coercion import FastCoercionExecutor, LimitedExecutor, build_during_coercion
from api.feeds import FeedMutations, SupplierFeed
from api.inputs import OrderCreateInput, OrderLineInput, StockBulkUpdateInput
from api.limits import GateExtension
from api.mutations import Mutation
from api.observe import current
from api.queries import Query
from api.types import (
    Fulfillment,
    Order,
    OrderLine,
    Product,
    ProductVariant,
    PurchaseOrder,
    Seller,
    ShippingZone,
    Stock,
    StockMovement,
    Warehouse,
)
from api.webhooks import WebhookMutations, WebhookQueries, WebhookSubscription
from domain.errors import clip


def is_unexpected(error: GraphQLError) -> bool:
    """Mask only exceptions nobody planned for; GraphQLErrors raised on purpose pass."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


client_log = logging.getLogger("stockyard.graphql")

# strawberry's DateTime (ISO 8601 with the offset, as before), naming its format for clients'
# code generators: `@specifiedBy(url: ...)`
DATE_TIME = dataclasses.replace(
    DateTimeDefinition, specified_by_url="https://datatracker.ietf.org/doc/html/rfc3339")


class StockyardSchema(strawberry.Schema):
    """Strawberry's schema, logging a client's mistakes apart from the server's faults."""

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        """A client's mistake (a validation error, a refused limit, a bad id or cursor, a
        denied field) is logged at INFO without a traceback: any client could otherwise
        fill the log and hide the real failures. An unexpected exception is logged once,
        at ERROR with its traceback (strawberry's logger), before MaskErrors hides it."""
        for error in errors:
            if is_unexpected(error):
                entry = current()
                if entry is not None:
                    entry.outcome = "failed"
                StrawberryLogger.error(error, execution_context)
            else:
                client_log.info("client error: %s (path %s)", clip(error.message, 200),
                                error.path)


class FastExecutor(direct.DirectLeaves, FastCoercionExecutor):
    """The fast paths' executor: long input lists coerced flat (api/coercion.py), plain
    leaves completed in place (api/direct.py)."""


def make_schema(*, fast_paths: bool = True) -> strawberry.Schema:
    """The schema; without `fast_paths`, graphql-core's coercion and strawberry's conversion
    of every input (`api.coercion` relies on private names of both)."""
    built = StockyardSchema(
        query=merge_types("Query", (Query, ChannelQueries, BatchQueries, WebhookQueries)),
        mutation=merge_types("Mutation", (Mutation, ChannelMutations, BatchMutations,
                                          WebhookMutations, FeedMutations)),
        types=[Seller, ShippingZone, Warehouse, Product, ProductVariant, Order, OrderLine,
               Fulfillment, Stock, StockMovement, PurchaseOrder, SalesChannel, PickBatch,
               WebhookSubscription, SupplierFeed],
        extensions=[
            # parsing, limits and validation, cached by query text: the app's `Gate`
            GateExtension,
            # anything unexpected reaches the client as "Unexpected error.", the log keeps
            # the rest
            lambda: MaskErrors(should_mask_error=is_unexpected),
        ],
        # a 10k-row stockBulkUpdate spent 100 ms in graphql-core's generic variable coercion,
        # a page of 50 stocks most of its time in its per-field machinery
        execution_context_class=FastExecutor if fast_paths else LimitedExecutor,
        # a batch's size is the app's to limit (`Limits.batch`, api/app.py)
        config=StrawberryConfig(batching_config={"max_operations": 2**31}),
        scalar_overrides={datetime: DATE_TIME},
    )
    if fast_paths:
        # the hottest inputs skip strawberry's generic conversion
        build_during_coercion(built, StockBulkUpdateInput, OrderLineInput, OrderCreateInput)
        # and most fields strawberry's generic resolver
        direct.install(built)
    return built


schema = make_schema()


@functools.cache
def schema_for(*, fast_paths: bool) -> strawberry.Schema:
    """`schema`, or one made without the fast paths (on first use: few apps want it)."""
    return schema if fast_paths else make_schema(fast_paths=False)
