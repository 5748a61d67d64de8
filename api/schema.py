"""Schema assembly: query, mutation, caches and error masking."""

from __future__ import annotations

import functools

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache

from api.coercion import FastCoercionExecutor, build_during_coercion
from api.inputs import OrderCreateInput, OrderLineInput, StockBulkUpdateInput
from api.mutations import Mutation
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


def is_unexpected(error: GraphQLError) -> bool:
    """Mask only exceptions nobody planned for; GraphQLErrors raised on purpose pass."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def make_schema(*, fast_paths: bool = True) -> strawberry.Schema:
    """The schema; without `fast_paths`, graphql-core's coercion and strawberry's conversion
    of every input (`api.coercion` relies on private names of both)."""
    built = strawberry.Schema(
        query=Query,
        mutation=Mutation,
        types=[Seller, ShippingZone, Warehouse, Product, ProductVariant, Order, OrderLine,
               Fulfillment, Stock, StockMovement, PurchaseOrder],
        extensions=[
            # parsing and validating the same query text again is most of a small request's
            # cost
            lambda: ParserCache(maxsize=512),  # the LRU itself is module-level, shared
            lambda: ValidationCache(maxsize=512),
            # anything unexpected reaches the client as "Unexpected error.", the log keeps
            # the rest
            lambda: MaskErrors(should_mask_error=is_unexpected),
        ],
        # a 10k-row stockBulkUpdate spent 100 ms in graphql-core's generic variable coercion
        execution_context_class=FastCoercionExecutor if fast_paths else None,
    )
    if fast_paths:
        # the hottest inputs skip strawberry's generic conversion
        build_during_coercion(built, StockBulkUpdateInput, OrderLineInput, OrderCreateInput)
    return built


schema = make_schema()


@functools.cache
def schema_for(*, fast_paths: bool) -> strawberry.Schema:
    """`schema`, or one made without the fast paths (on first use: few apps want it)."""
    return schema if fast_paths else make_schema(fast_paths=False)
