"""Read resolvers: node lookup, paginated lists (newest first), configuration."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import strawberry
from graphql import GraphQLError

from api import ids
from api.token_types import ApiToken
from api.types import (
    NOT_HELD,
    Ahead,
    Info,
    MarketplaceConfiguration,
    MovementTypeEnum,
    Node,
    Order,
    OrderStatusEnum,
    OrderTypeEnum,
    Product,
    ProductVariant,
    Seller,
    Stock,
    StockMovement,
    Warehouse,
    ahead,
    denied,
    node_now,
    prefetch,
    read_nodes_ahead,
    resolve_node,
)
from domain import models, permissions
from domain.errors import PermissionDenied, clip, is_storable
from domain.permissions import Principal
from domain.services import configuration, reads

DEFAULT_PAGE = 20
MAX_PAGE = 100

T = TypeVar("T")
R = TypeVar("R")


@strawberry.type
class PageInfo:
    """Relay's page info for forward pagination (`first`/`after`)."""

    has_next_page: bool
    has_previous_page: bool = strawberry.field(description=(
        "Whether `after` was given: the row it names came before this page (not checked "
        "against the list, as the Relay spec allows for `first`/`after`)."))
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def of(cls, edges: Sequence[Edge[Any]], after: str | None, *,
           has_next_page: bool) -> PageInfo:
        """The page info of `edges`, read after the cursor `after`.

        `hasPreviousPage` is `after is not None` and costs no query: the cursor names a row
        the client was shown before this page. For `first`/`after` the Relay spec asks for no
        exact answer (true "if it can do so efficiently"), so a cursor of a row deleted since,
        or of a row another filter listed, answers true as well.
        """
        return cls(has_next_page=has_next_page, has_previous_page=after is not None,
                   start_cursor=_cursor(edges[0].pk) if edges else None,
                   end_cursor=_cursor(edges[-1].pk) if edges else None)


@strawberry.type
class Edge(Generic[T]):
    node: T
    pk: strawberry.Private[int]  # the node's row id, which its cursor names

    @strawberry.field
    def cursor(self) -> str:
        """Spelled when asked for: a dashboard's page selects `pageInfo { endCursor }`,
        seldom each edge's."""
        return _cursor(self.pk)


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def _cursor(pk: int) -> str:
    return ids.encode("cursor", pk)  # spelled as an ID, of the pseudo-type "cursor"


def _after(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        kind, _, pk = base64.b64decode(cursor, validate=True).decode().partition(":")
        if kind == "cursor" and pk.isdigit() and len(pk) <= 10 and int(pk) <= ids.MAX_PK:
            return int(pk)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise GraphQLError(f"`after` is not a cursor of this list: {clip(cursor)!r}",
                       extensions={"code": "INVALID"})


def _first(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    if not 0 <= first <= MAX_PAGE:
        raise GraphQLError(f"`first` must be between 0 and {MAX_PAGE}, got {first}.",
                           extensions={"code": "INVALID"})
    return first


def _seller_filter(info: Info, seller_id: strawberry.ID | None) -> int | None:
    """The sellerId argument, narrowed to the caller's own seller for seller tokens."""
    wanted = _filter_id(seller_id, "Seller", "sellerId")
    scope = permissions.seller_scope(info.context.principal)
    if scope is None:
        return wanted
    return scope if wanted in (None, scope) else -1


def _filter_id(value: strawberry.ID | None, type_name: str, arg: str) -> int | None:
    if value is None:
        return None
    try:
        found, pk = ids.parse(value)
    except ids.InvalidId:
        raise GraphQLError(f"`{arg}` is not a valid ID: {clip(value)!r}",
                           extensions={"code": "INVALID"}) from None
    return pk if found == type_name else -1  # another type's ID matches nothing


_NODES = ("edges", "node")  # where a page's nodes are, below its field


async def _page(
    info: Info, model: type[Any], kind: type[T], first: int | None, after: str | None,
    plan: Ahead | None = None, **filters: Any,
) -> Connection[T]:
    """A page of `model`'s rows as `kind` nodes (its `from_model`), newest first, with what
    the nodes' fields will load (`plan`, else looked up here) read ahead in the same thread
    hop (types.ahead)."""
    query = reads.PageQuery(first=_first(first), before_id=_after(after), **filters)
    rows, nodes = await info.context.read_page(
        model, query, kind.from_model,  # type: ignore[attr-defined]
        (plan or ahead(info, kind, _NODES)).keys)
    edges = [Edge(node=node, pk=row.id)
             for node, row in zip(nodes, rows[:query.first], strict=True)]
    return Connection(edges=edges,
                      page_info=PageInfo.of(edges, after, has_next_page=len(rows) > query.first))


def _check_texts(values: list[str], arg: str) -> None:
    if not all(is_storable(v) for v in values):
        raise GraphQLError(f"`{arg}` must not contain NUL or unpaired surrogate characters.",
                           extensions={"code": "INVALID"})


def _utc(moment: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC, like the stored ones."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _allowed(rule: Callable[..., R], *args: Any) -> R:
    """Apply a rule of domain/permissions.py; its refusal is the field's GraphQL error."""
    try:
        return rule(*args)
    except PermissionDenied as exc:
        raise denied(exc) from None


def _reader(info: Info) -> Principal:
    return _allowed(permissions.require_reader, info.context.principal)


@strawberry.type
class Query:
    @strawberry.field(description="Any object by its global ID; null when unknown.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        try:
            _reader(info)
            type_name, pk = ids.parse(id)
        except ids.InvalidId:
            return None
        return await resolve_node(info, type_name, pk)  # type: ignore[no-any-return]

    @strawberry.field
    async def nodes(
        self, info: Info, ids_: Annotated[list[strawberry.ID], strawberry.argument(name="ids")]
    ) -> list[Node | None]:
        _reader(info)
        parsed: list[tuple[str, int] | None] = []
        for value in ids_:
            try:
                parsed.append(ids.parse(value))
            except ids.InvalidId:
                parsed.append(None)
        await read_nodes_ahead(info, [each for each in parsed if each is not None])
        # those whose rows are held answer at once; the others are read all at once, so
        # each type's DataLoader reads what is not held yet in one statement
        found = [None if each is None else node_now(info, *each) for each in parsed]
        pending = [(i, each) for i, (each, node) in enumerate(zip(parsed, found, strict=True))
                   if each is not None and node is NOT_HELD]
        if pending:
            loaded = await asyncio.gather(*(resolve_node(info, *each) for _, each in pending))
            for (i, _), node in zip(pending, loaded, strict=True):
                found[i] = node
        await prefetch(info, [n for n in found if n is not None], ())
        return found

    @strawberry.field
    async def marketplace_configuration(self, info: Info) -> MarketplaceConfiguration:
        _reader(info)
        settings = await info.context.read(configuration.allocation_settings)
        return MarketplaceConfiguration.from_settings(settings)

    @strawberry.field(description="API tokens, newest first (admin token).")
    async def tokens(self, info: Info, first: int | None = None,
                     after: str | None = None) -> Connection[ApiToken]:
        _allowed(permissions.require_token_admin, info.context.principal)
        return await _page(info, models.ApiToken, ApiToken, first, after)

    @strawberry.field
    async def sellers(self, info: Info, first: int | None = None,
                      after: str | None = None) -> Connection[Seller]:
        return await _page(info, models.Seller, Seller, first, after,
                           only_id=permissions.seller_scope(_reader(info)))

    @strawberry.field
    async def warehouses(self, info: Info, seller_id: strawberry.ID | None = None,
                         first: int | None = None,
                         after: str | None = None) -> Connection[Warehouse]:
        _reader(info)
        return await _page(info, models.Warehouse, Warehouse, first, after,
                           seller_id=_seller_filter(info, seller_id))

    @strawberry.field
    async def products(self, info: Info, seller_id: strawberry.ID | None = None,
                       first: int | None = None,
                       after: str | None = None) -> Connection[Product]:
        _reader(info)
        return await _page(info, models.Product, Product, first, after,
                           seller_id=_seller_filter(info, seller_id))

    @strawberry.field
    async def product_variants(
        self, info: Info, skus: list[str] | None = None, first: int | None = None,
        after: str | None = None, sku_prefix: str | None = None,
        seller_id: strawberry.ID | None = None,
    ) -> Connection[ProductVariant]:
        _reader(info)
        _check_texts(skus or [], "skus")
        _check_texts([sku_prefix] if sku_prefix is not None else [], "skuPrefix")
        plan = ahead(info, ProductVariant, _NODES)
        return await _page(info, models.ProductVariant, ProductVariant, first,
                           after, plan, skus=tuple(skus) if skus is not None else None,
                           sku_prefix=sku_prefix,
                           variant_seller_id=_seller_filter(info, seller_id),
                           # by SKUs only: a bounded list, whatever plan sorts the page
                           available_in=plan.one_country() if skus is not None else None)

    @strawberry.field(description="Stock levels by warehouse for seller dashboards (admin, "
                                  "or a seller token for its own), newest first. outOfStock: "
                                  "nothing available; belowThreshold: available below the "
                                  "stock's lowStockThreshold.")
    async def stocks(
        self, info: Info, seller_id: strawberry.ID | None = None,
        warehouse_id: strawberry.ID | None = None, sku_prefix: str | None = None,
        out_of_stock: bool | None = None, below_threshold: bool | None = None,
        first: int | None = None, after: str | None = None,
    ) -> Connection[Stock]:
        _allowed(permissions.require_stock_reader, info.context.principal, "stock levels")
        _check_texts([sku_prefix] if sku_prefix is not None else [], "skuPrefix")
        return await _page(
            info, models.Stock, Stock, first, after,
            warehouse_id=_filter_id(warehouse_id, "Warehouse", "warehouseId"),
            stock_seller_id=_seller_filter(info, seller_id), sku_prefix=sku_prefix,
            out_of_stock=out_of_stock, below_threshold=below_threshold)

    @strawberry.field(description="The stock ledger, newest first (admin token, or a seller "
                                  "token for its own warehouses). `since` is inclusive, "
                                  "`until` exclusive.")
    async def stock_movements(
        self, info: Info, variant_id: strawberry.ID | None = None,
        warehouse_id: strawberry.ID | None = None,
        types: list[MovementTypeEnum] | None = None,  # type: ignore[valid-type]
        since: datetime | None = None, until: datetime | None = None,
        first: int | None = None, after: str | None = None,
    ) -> Connection[StockMovement]:
        principal = _allowed(permissions.require_stock_reader, info.context.principal,
                             "the stock ledger")
        return await _page(
            info, models.StockMovement, StockMovement, first, after,
            variant_id=_filter_id(variant_id, "ProductVariant", "variantId"),
            warehouse_id=_filter_id(warehouse_id, "Warehouse", "warehouseId"),
            warehouse_seller_id=permissions.seller_scope(principal),
            movement_types=tuple(models.MovementType(t) for t in types) if types else None,
            since=_utc(since), until=_utc(until))

    @strawberry.field(description="Orders, newest first: every order for an admin; for a "
                                  "seller, those holding its variants (with its own lines "
                                  "only); for a storefront, those it created.")
    async def orders(
        self, info: Info,
        statuses: list[OrderStatusEnum] | None = None,  # type: ignore[valid-type]
        types: list[OrderTypeEnum] | None = None,  # type: ignore[valid-type]
        first: int | None = None, after: str | None = None,
    ) -> Connection[Order]:
        scope = _allowed(permissions.order_scope, info.context.principal)
        return await _page(
            info, models.Order, Order, first, after,
            order_token_id=None if scope.everything else scope.token_id,
            order_seller_id=scope.seller_id,
            statuses=tuple(models.OrderStatus(s) for s in statuses) if statuses else None,
            types=tuple(models.OrderType(t) for t in types) if types else None)
