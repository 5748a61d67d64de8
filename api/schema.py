"""Schema assembly: query, mutation, caches and error masking."""

from __future__ import annotations

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


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    types=[Seller, ShippingZone, Warehouse, Product, ProductVariant, Order, OrderLine,
           Fulfillment, Stock, StockMovement, PurchaseOrder],
    extensions=[
        # parsing and validating the same query text again is most of a small request's cost
        lambda: ParserCache(maxsize=512),  # the LRU itself is module-level, shared
        lambda: ValidationCache(maxsize=512),
        # anything unexpected reaches the client as "Unexpected error.", the log keeps the rest
        lambda: MaskErrors(should_mask_error=is_unexpected),
    ],
    # a 10k-row stockBulkUpdate spent 100 ms in graphql-core's generic variable coercion
    execution_context_class=FastCoercionExecutor,
)
# the hottest inputs skip strawberry's generic conversion
build_during_coercion(schema, StockBulkUpdateInput, OrderLineInput, OrderCreateInput)
