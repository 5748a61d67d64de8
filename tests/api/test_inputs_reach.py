"""Every input field of every mutation reaches the service the resolver calls.

The fields are read from the schema, recursively through nested inputs and lists. Each
mutation runs once with a value for every field, then once per field with only that field
changed; the service is replaced by a recorder (`Context.run`), and each changed field must
change the recorded call. A field that no path carries to its service fails here.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import strawberry
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
)
from sqlalchemy import create_engine

from api.app import build_app
from api.coercion import MIN_ROWS
from api.context import Context
from api.ids import encode
from api.inputs import ToDomain
from api.schema import schema
from domain.errors import InvalidState, NotFound
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio

Path = tuple[str | int, ...]
Call = tuple[Any, tuple[Any, ...], dict[str, Any]]

# the node type of each ID, by its name in the schema (a mutation's `id` by mutation)
NODES = {
    "variantId": "ProductVariant", "warehouseId": "Warehouse",
    "fromWarehouseId": "Warehouse", "toWarehouseId": "Warehouse",
    "orderLineId": "OrderLine", "sellerId": "Seller", "productId": "Product",
    "shippingZoneIds": "ShippingZone", "orderId": "Order",
    "productVariantUpdate.id": "ProductVariant", "orderLineUpdate.id": "OrderLine",
    "orderLineDelete.id": "OrderLine", "orderConfirm.id": "Order", "orderCancel.id": "Order",
    "purchaseOrderReceive.id": "PurchaseOrder", "tokenRevoke.id": "ApiToken",
    "channelId": "SalesChannel", "warehouseIds": "Warehouse",
    "salesChannelUpdate.id": "SalesChannel", "salesChannelSync.id": "SalesChannel",
    "productUpdate.id": "Product", "orderIds": "Order",
    "pickBatchComplete.id": "PickBatch", "pickBatchCancel.id": "PickBatch",
    "webhookSubscriptionUpdate.id": "WebhookSubscription",
    "webhookSubscriptionDelete.id": "WebhookSubscription",
    "feedId": "SupplierFeed", "supplierFeedUpdate.id": "SupplierFeed",
    "supplierFeedDelete.id": "SupplierFeed", "supplierSellerId": "Seller",
}
ROWS = MIN_ROWS + 1
"""Items of a list of inputs: long enough for `api.coercion`'s flat loop at the top level."""

MUTATIONS = schema._schema.mutation_type
assert MUTATIONS is not None


class Recorded(InvalidState):
    """The service was not run: its call was recorded."""


@pytest.fixture(params=[True, False], ids=["fast paths on", "fast paths off"])
async def client(request: pytest.FixtureRequest,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose services are never run; no database is reached."""
    app = build_app(create_engine("sqlite://"), lambda _event: None,
                    fast_paths=request.param)
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Each service call a resolver makes, instead of making it."""
    recorded: list[Call] = []

    async def record(_self: Context, fn: Any, *args: Any, **kwargs: Any) -> Any:
        recorded.append((fn, args, kwargs))
        raise Recorded("recorded")

    monkeypatch.setattr(Context, "run", record)
    return recorded


def leaf(type_: GraphQLInputType, node: str | None, variant: int) -> Any:
    """A value of a scalar or enum; variants 0 and 1 differ."""
    if isinstance(type_, GraphQLEnumType):
        return list(type_.values)[variant]
    assert isinstance(type_, GraphQLScalarType), type_
    if type_.name == "ID":
        assert node is not None
        return encode(node, 7 + variant)
    return {"Int": 7 + variant, "Float": 7.5 + variant, "String": f"S-{7 + variant}",
            "Boolean": variant == 0}[type_.name]


def sample(type_: GraphQLInputType, name: str, node: str | None) -> Any:
    """Variant 0 of a value of `type_` with every field given, nulls included."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        item = type_.of_type
        count = ROWS if isinstance(getattr(item, "of_type", item),
                                   GraphQLInputObjectType) else 1
        return [sample(item, name, node) for _ in range(count)]
    if isinstance(type_, GraphQLInputObjectType):
        return {field_name: sample(field.type, field_name, NODES.get(field_name))
                for field_name, field in type_.fields.items()}
    return leaf(type_, node, 0)


def leaves(type_: GraphQLInputType, path: Path, node: str | None
           ) -> Iterator[tuple[Path, Any]]:
    """Every leaf's path (a list's last item) and its variant 1."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        item = type_.of_type
        last = ROWS - 1 if isinstance(getattr(item, "of_type", item),
                                      GraphQLInputObjectType) else 0
        yield from leaves(item, (*path, last), node)
    elif isinstance(type_, GraphQLInputObjectType):
        for field_name, field in type_.fields.items():
            yield from leaves(field.type, (*path, field_name), NODES.get(field_name))
    else:
        yield path, leaf(type_, node, 1)


def node_of(mutation: str, name: str) -> str | None:
    return NODES.get(f"{mutation}.{name}") or NODES.get(name)


def cases() -> Iterator[tuple[str, Path]]:
    for mutation, definition in MUTATIONS.fields.items():
        for name, argument in definition.args.items():
            for path, _ in leaves(argument.type, (name,), node_of(mutation, name)):
                yield mutation, path


def document(mutation: str) -> str:
    args: dict[str, GraphQLArgument] = MUTATIONS.fields[mutation].args
    declared = ", ".join(f"${name}: {arg.type}" for name, arg in args.items())
    passed = ", ".join(f"{name}: ${name}" for name in args)
    return (f"mutation{f'({declared})' if declared else ''} "
            f"{{ {mutation}{f'({passed})' if passed else ''} {{ __typename }} }}")


def base_variables(mutation: str) -> dict[str, Any]:
    return {name: sample(arg.type, name, node_of(mutation, name))
            for name, arg in MUTATIONS.fields[mutation].args.items()}


def changed(variables: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    variables = copy.deepcopy(variables)
    at: Any = variables
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return variables


async def service_call(client: httpx.AsyncClient, calls: list[Call], mutation: str,
                       variables: dict[str, Any]) -> Call:
    """The one service call that running `mutation` with `variables` makes."""
    calls.clear()
    response = await client.post("/graphql", json={"query": document(mutation),
                                                    "variables": variables})
    body = response.json()
    assert "errors" not in body, body["errors"]
    assert len(calls) == 1, f"{mutation} reached no service: {body}"
    return calls[0]


CASES = list(cases())


def test_every_mutation_has_input_fields_to_check() -> None:
    assert {mutation for mutation, _ in CASES} == set(MUTATIONS.fields)
    assert ("orderCreate", ("input", "idempotencyKey")) in CASES
    assert ("stockBulkUpdate", ("stocks", ROWS - 1, "force")) in CASES


@pytest.mark.parametrize(("mutation", "path"), CASES,
                         ids=[f"{m}.{'.'.join(map(str, p))}" for m, p in CASES])
async def test_input_field_reaches_its_service(client: httpx.AsyncClient, calls: list[Call],
                                               mutation: str, path: Path) -> None:
    base = base_variables(mutation)
    [value] = [v for p, v in leaves(MUTATIONS.fields[mutation].args[str(path[0])].type,
                                    (path[0],), node_of(mutation, str(path[0]))) if p == path]

    before = await service_call(client, calls, mutation, base)
    after = await service_call(client, calls, mutation, changed(base, path, value))

    assert after[0] is before[0]
    assert after != before, (f"{mutation}: {'.'.join(map(str, path))} does not reach "
                             f"{before[0].__qualname__}")


# ------------------------------------------------------------ mismatches fail at import

@dataclass(frozen=True)
class Request:
    variant_id: int
    quantity: int
    note: str = "none"
    tags: list[str] = field(default_factory=list)


@strawberry.input
class Good:
    variant_id: strawberry.ID
    quantity: int
    memo: str | None = None


@strawberry.input
class Extra:
    variant_id: strawberry.ID
    quantity: int
    colour: str


@strawberry.input
class Short:
    variant_id: strawberry.ID


@strawberry.input
class UnknownId:
    thing_id: strawberry.ID
    quantity: int


@strawberry.input
class NullTags:
    variant_id: strawberry.ID
    quantity: int
    tags: list[str] | None = None


def test_fields_map_by_name_and_ids_decode() -> None:
    to_request = ToDomain(Good, Request, renamed={"memo": "note"})

    built = to_request(Good(variant_id=strawberry.ID(encode("ProductVariant", 3)), quantity=2))

    assert built == Request(variant_id=3, quantity=2, note="none")   # null: the default
    with pytest.raises(NotFound) as raised:
        to_request(Good(variant_id=strawberry.ID(encode("Order", 3)), quantity=2), "lines.4")
    assert raised.value.field == "lines.4.variantId"


@pytest.mark.parametrize(("source", "message"), [
    (Extra, "field 'colour' reaches no keyword 'colour'"),
    (Short, r"no field gives \['quantity'\]"),
    (UnknownId, "which node does ID field 'thing_id' name"),
    (NullTags, "'tags' may be null, 'tags' takes no None and has no immutable default"),
])
def test_a_field_with_nowhere_to_go_fails_when_mapped(source: type, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        ToDomain(source, Request, renamed={"thing_id": "variant_id"} if source is UnknownId
                 else None)
