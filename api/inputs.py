"""GraphQL input types (names and fields mirror API.md), and their mapping to the domain.

`ToDomain` builds a domain request (a dataclass, or a service's keywords) from an input field
by field: a field added to both sides needs no third edit, and one with nowhere to go fails
at import.
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import strawberry
from strawberry.types.base import StrawberryList, StrawberryOptional, has_object_definition
from strawberry.utils.str_converters import to_camel_case

from api import ids
from api.errors import collect
from api.types import OrderTypeEnum

T = TypeVar("T")
R = TypeVar("R")


@strawberry.input
class SellerCreateInput:
    name: str


@strawberry.input
class ShippingZoneCreateInput:
    name: str
    countries: list[str]


@strawberry.input
class WarehouseCreateInput:
    seller_id: strawberry.ID
    name: str
    shipping_zone_ids: list[strawberry.ID]
    priority: int = strawberry.field(
        default=0, description="Lower allocates first; ties go to the older warehouse.")


@strawberry.input
class ProductCreateInput:
    seller_id: strawberry.ID
    name: str


@strawberry.input
class ProductVariantCreateInput:
    product_id: strawberry.ID
    sku: str
    track_inventory: bool | None = True


@strawberry.input
class ProductVariantUpdateInput:
    track_inventory: bool | None = None


FORCE = "Allow on-hand below what orders hold allocated (a recount that found less); the "\
    "shortfall shows as Stock.quantityShort."


@strawberry.input
class StockInput:
    warehouse_id: strawberry.ID
    quantity: int
    force: bool | None = strawberry.field(default=False, description=FORCE)


@strawberry.input
class StockAdjustInput:
    variant_id: strawberry.ID
    warehouse_id: strawberry.ID
    delta: int
    reason: str
    expected_quantity: int | None = None
    force: bool | None = strawberry.field(default=False, description=FORCE)


@strawberry.input
class StockUpdateInput:
    variant_id: strawberry.ID
    warehouse_id: strawberry.ID
    low_stock_threshold: int | None = strawberry.field(
        default=None, description="Dashboards flag the stock when available falls below "
                                  "this; null clears it.")


@strawberry.input
class StockTransferInput:
    variant_id: strawberry.ID
    from_warehouse_id: strawberry.ID
    to_warehouse_id: strawberry.ID
    quantity: int


@strawberry.input
class PurchaseOrderLineInput:
    variant_id: strawberry.ID
    quantity: int


@strawberry.input
class PurchaseOrderCreateInput:
    warehouse_id: strawberry.ID
    lines: list[PurchaseOrderLineInput]


@strawberry.enum
class ErrorPolicy(enum.Enum):
    REJECT_EVERYTHING = "REJECT_EVERYTHING"
    REJECT_FAILED_ROWS = "REJECT_FAILED_ROWS"


@strawberry.input
class StockBulkUpdateInput:
    warehouse_id: strawberry.ID
    quantity: int
    variant_id: strawberry.ID | None = None
    sku: str | None = None
    force: bool | None = strawberry.field(default=False, description=FORCE)


@strawberry.input
class OrderTypeAllocationInput:
    order_type: OrderTypeEnum  # type: ignore[valid-type]
    enabled: bool


@strawberry.input
class MarketplaceConfigurationUpdateInput:
    allocation: list[OrderTypeAllocationInput] | None = None


@strawberry.input
class OrderLineInput:
    variant_id: strawberry.ID
    quantity: int


@strawberry.input
class OrderCreateInput:
    type: OrderTypeEnum  # type: ignore[valid-type]
    shipping_country: str
    lines: list[OrderLineInput]
    idempotency_key: str | None = None


@strawberry.input
class OrderLineUpdateInput:
    quantity: int


@strawberry.input
class OrderFulfillLineInput:
    order_line_id: strawberry.ID
    quantity: int
    warehouse_id: strawberry.ID | None = None


ID_TYPES: Mapping[str, str] = {
    "variant_id": "ProductVariant", "warehouse_id": "Warehouse",
    "from_warehouse_id": "Warehouse", "to_warehouse_id": "Warehouse",
    "order_line_id": "OrderLine", "seller_id": "Seller", "product_id": "Product",
    "shipping_zone_ids": "ShippingZone"}
"""The node type an input's ID field (or list of IDs) names, by the field's Python name."""

Convert = Callable[[Any, str], Any]
"""An input value -> the domain's, given its path for errors; may raise DomainError."""


class _Field(NamedTuple):
    source: str              # attribute of the strawberry input
    target: str              # keyword of the domain dataclass or service
    name: str                # GraphQL name, the last part of the field's error path
    rooted: bool             # a list: its items are numbered from its own name (lines.1.x)
    node: str | None         # an ID of this node type: decoded
    convert: Convert | None  # otherwise, None: passed on as is
    nullable: bool
    null: Any                # what a null becomes: None, or the target's default


class ToDomain(Generic[T]):
    """Calls `target` (a domain dataclass or a service) with an input's fields as keywords.

    Each input field goes to the keyword of its Python name (or `renamed`); IDs are decoded
    (`ID_TYPES`), lists of inputs mapped item by item to the target's item type, and a null
    for a keyword that takes no None gives its default. Checked when built: every field must
    reach a keyword, and every required keyword-only one (any, for a class) come from one.
    """

    def __init__(self, source: type, target: Callable[..., T], *,
                 renamed: Mapping[str, str] | None = None,
                 convert: Mapping[str, Convert] | None = None) -> None:
        self.target = target
        self.fields = _fields(source, target, renamed or {}, convert or {})
        self.build: Callable[[object, str], T] = _compile(self.fields, target)
        self._kwargs: Callable[[object, str], dict[str, Any]] = _compile(self.fields, dict)

    def kwargs(self, value: object, prefix: str = "") -> dict[str, Any]:
        """The target's keywords from `value`; `prefix` starts each field's error path."""
        return self._kwargs(value, prefix)

    def __call__(self, value: object, prefix: str = "") -> T:
        return self.build(value, prefix)

    def each(self, values: Sequence[object], name: str) -> list[T]:
        """One target per item, as `name.<i>`; every item's DomainError raised together."""
        build = self.build
        return collect(values, lambda i, v: build(v, f"{name}.{i}"))


def _compile(fields: Sequence[_Field], call: Callable[..., R]) -> Callable[[object, str], R]:
    """`call(keyword=converted field, ...)` as one function, written out as by hand.

    A bulk request maps 10k rows: a loop over the fields cost 1 µs more a row (50%), so the
    function is generated, as `dataclasses` writes `__init__`. Keywords are evaluated in field
    order, so the first bad field raises, as before.
    """
    env: dict[str, Any] = {"call": call, "ids": ids}
    reads, keywords = [], []
    for i, f in enumerate(fields):
        v = f"v{i}"
        reads.append(f"    {v} = value.{f.source}")
        path = repr(f.name) if f.rooted else f"at + {f.name!r}"
        if f.node is not None:
            expr = f"ids.decode({v}, {f.node!r}, {path})"
        elif f.convert is not None:
            env[f"convert{i}"] = f.convert
            expr = f"convert{i}({v}, {path})"
        else:
            expr = v
        if f.nullable and (expr != v or f.null is not None):
            env[f"null{i}"] = f.null
            expr = f"null{i} if {v} is None else {expr}"
        keywords.append(f"        {f.target}=({expr}),")
    source = "\n".join([
        "def build(value, prefix):",
        "    at = prefix + '.' if prefix else ''",
        *reads,
        "    return call(",
        *keywords,
        "    )"])
    exec(compile(source, f"<ToDomain {getattr(call, '__qualname__', call)}>", "exec"), env)
    return env["build"]  # type: ignore[no-any-return]


def _fields(source: type, target: Callable[..., Any], renamed: Mapping[str, str],
            convert: Mapping[str, Convert]) -> tuple[_Field, ...]:
    where = f"{source.__name__} -> {target.__qualname__}"
    if not has_object_definition(source):
        raise TypeError(f"{where}: {source.__name__} is not a strawberry input")
    parameters = inspect.signature(target).parameters
    hints = typing.get_type_hints(target)
    unknown = set(renamed) - {f.python_name for f in source.__strawberry_definition__.fields}
    if unknown:
        raise TypeError(f"{where}: renamed names no field: {sorted(unknown)}")
    fields = []
    for field in source.__strawberry_definition__.fields:
        python_name = field.python_name
        target_name = renamed.get(python_name, python_name)
        parameter = parameters.get(target_name)
        if parameter is None or parameter.kind in (parameter.POSITIONAL_ONLY,
                                                   parameter.VAR_POSITIONAL,
                                                   parameter.VAR_KEYWORD):
            raise TypeError(f"{where}: field {python_name!r} reaches no keyword "
                            f"{target_name!r}; add it to the target or rename it")
        hint = hints[target_name]
        field_type: Any = field.type
        nullable = isinstance(field_type, StrawberryOptional)
        null = None
        if nullable and not _takes_none(hint):
            null = parameter.default
            # an immutable default only (a dataclass's default_factory shows as a sentinel)
            if not isinstance(null, str | int | float | enum.Enum | tuple | frozenset):
                raise TypeError(f"{where}: {python_name!r} may be null, {target_name!r} "
                                f"takes no None and has no immutable default")
        type_ = field_type.of_type if nullable else field_type
        node = _node(where, python_name) if type_ is strawberry.ID else None
        fields.append(_Field(
            python_name, target_name, field.graphql_name or to_camel_case(python_name),
            isinstance(type_, StrawberryList), node,
            convert.get(python_name) or (
                None if node else _converter(where, python_name, type_, hint)),
            nullable, null))
    required = {name for name, p in parameters.items() if p.default is p.empty
                and (p.kind is p.KEYWORD_ONLY or isinstance(target, type))}
    missing = required - {f.target for f in fields}
    if missing:
        raise TypeError(f"{where}: no field gives {sorted(missing)}")
    return tuple(fields)


def _converter(where: str, name: str, type_: Any, hint: Any) -> Convert | None:
    """How a non-null value of the field becomes the target's; None: as it is."""
    if isinstance(type_, StrawberryList):
        item = type_.of_type
        if item is strawberry.ID:
            node = _node(where, name)
            return lambda v, path: collect(v, lambda i, x: ids.decode(x, node, f"{path}.{i}"))
        if has_object_definition(item):
            items = ToDomain(item, _item_type(where, name, hint))
            return items.each
        if isinstance(item, StrawberryOptional | StrawberryList):
            raise TypeError(f"{where}: {name!r}: lists of nulls or lists are not mapped")
        return None
    if has_object_definition(type_):
        return ToDomain(type_, _without_none(hint))
    return None


def _node(where: str, name: str) -> str:
    try:
        return ID_TYPES[name]
    except KeyError:
        raise TypeError(f"{where}: which node does ID field {name!r} name? "
                        f"Add it to ID_TYPES") from None


def _item_type(where: str, name: str, hint: Any) -> Any:
    """The item type of a `Sequence[X]` (or `list[X]`) keyword."""
    args = typing.get_args(_without_none(hint))
    if len(args) != 1:
        raise TypeError(f"{where}: {name!r} takes {hint}, not a sequence of one item type")
    return args[0]


def _takes_none(hint: Any) -> bool:
    return hint is Any or type(None) in typing.get_args(hint)


def _without_none(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if _takes_none(hint) and len(args) == 1 else hint
