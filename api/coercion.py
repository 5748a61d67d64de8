"""Fast coercion of long lists of flat input objects, and inputs built during coercion.

graphql-core coerces a variable with one recursive call per list item and per field: 70k
calls for a 10k-row stockBulkUpdate. When the items are input objects whose fields are all
built-in scalars, one flat loop gives the same values. Any value it is not sure of sends the
whole variable back to graphql-core, so errors stay exactly graphql-core's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from math import isfinite
from typing import Any, NamedTuple, TypeVar

import strawberry
from graphql import (
    DocumentNode,
    GraphQLBoolean,
    GraphQLError,
    GraphQLFloat,
    GraphQLID,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    Undefined,
    is_input_type,
    is_required_input_field,
    type_from_ast,
)
from graphql.execution import Executor
from graphql.type.scalars import (
    GRAPHQL_MAX_INT,
    GRAPHQL_MIN_INT,
    coerce_boolean,
    coerce_float,
    coerce_id,
    coerce_int,
    coerce_string,
)
from graphql.utilities.coerce_input_value import coerce_default_value
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import StrawberryList, StrawberryOptional, has_object_definition
from strawberry.types.enum import StrawberryEnumDefinition
from strawberry.types.scalar import ScalarDefinition

T = TypeVar("T")

MIN_ROWS = 64
"""Shorter lists are left to graphql-core: the fast path would save little."""

_STRING, _ID, _INT, _BOOLEAN, _FLOAT = range(5)
_SCALARS: dict[GraphQLScalarType, tuple[int, Callable[[Any], Any]]] = {
    GraphQLString: (_STRING, coerce_string), GraphQLID: (_ID, coerce_id),
    GraphQLInt: (_INT, coerce_int), GraphQLBoolean: (_BOOLEAN, coerce_boolean),
    GraphQLFloat: (_FLOAT, coerce_float)}


class _Field(NamedTuple):
    name: str
    key: str                 # out_name or name, as graphql-core keys the coerced dict
    kind: int                # _STRING ... _FLOAT
    non_null: bool
    required: bool
    default: Any             # Undefined: a row without the field gets no key for it


class _Plan(NamedTuple):
    names: frozenset[str]
    fields: tuple[_Field, ...]
    out_type: Callable[[dict[str, Any]], Any] | None


def _plan(type_: GraphQLInputObjectType) -> _Plan | None:
    """How to coerce `type_` in the flat loop; None when only graphql-core may."""
    if type_.is_one_of:
        return None
    fields = []
    for name, field in type_.fields.items():
        field_type = field.type
        non_null = isinstance(field_type, GraphQLNonNull)
        scalar = field_type.of_type if non_null else field_type
        # built-in scalars only, untouched: a custom one may parse any way it likes
        kind, coerce = _SCALARS.get(scalar, (None, None))
        if kind is None or scalar.coerce_input_value is not coerce:
            return None
        try:
            default = coerce_default_value(field)
        except Exception:  # an invalid default: graphql-core reports it its own way
            return None
        fields.append(_Field(name, field.out_name or name, kind, non_null,
                             is_required_input_field(field), default))
    out_type = None if type_.out_type is GraphQLInputObjectType.out_type else type_.out_type
    return _Plan(frozenset(type_.fields), tuple(fields), out_type)


def coerce_rows(value: Any, type_: GraphQLInputType) -> Any:
    """What graphql-core's `coerce_input_value(value, type_)` gives for a list of flat
    input objects, or `Undefined` when the flat loop can't vouch for the value or type."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if not isinstance(type_, GraphQLList) or type(value) is not list:
        return Undefined
    item_type = type_.of_type
    nullable_items = not isinstance(item_type, GraphQLNonNull)
    if not nullable_items:
        item_type = item_type.of_type
    if not isinstance(item_type, GraphQLInputObjectType):
        return Undefined
    plan = _plan(item_type)
    if plan is None:
        return Undefined

    names, fields = plan.names, plan.fields
    rows: list[dict[str, Any] | None] = []
    append = rows.append
    for row in value:
        if type(row) is not dict:
            if row is None and nullable_items:
                append(None)
                continue
            return Undefined
        if not names.issuperset(row):
            return Undefined
        coerced: dict[str, Any] = {}
        for name, key, kind, non_null, required, default in fields:
            v = row.get(name, Undefined)
            t = type(v)
            # the usual values first; anything else graphql-core may coerce is checked below
            if ((t is str and kind <= _ID)
                    or (t is int and kind == _INT and GRAPHQL_MIN_INT <= v <= GRAPHQL_MAX_INT)
                    or (t is bool and kind == _BOOLEAN)):
                coerced[key] = v
            elif v is Undefined:
                if required:
                    return Undefined
                if default is not Undefined:
                    coerced[key] = default
            elif v is None:
                if non_null:
                    return Undefined
                coerced[key] = None
            elif t is int and kind == _ID:
                coerced[key] = str(v)
            elif kind == _FLOAT and (f := _as_float(v)) is not Undefined:
                coerced[key] = f
            else:
                return Undefined
        append(coerced)

    out_type = plan.out_type
    if out_type is None:
        return rows
    # only once every row is valid, so that a fallback calls out_type as often as before
    return [None if r is None else out_type(r) for r in rows]


def _as_float(v: Any) -> Any:
    """graphql-core's Float of a float or int; Undefined for anything else or a refusal."""
    if type(v) is float:
        return v if isfinite(v) else Undefined
    if type(v) is not int:
        return Undefined
    try:
        f = float(v)
    except OverflowError:
        return Undefined
    return f if int(f) == v else Undefined  # graphql-core refuses an int a float would round


def _operation(document: DocumentNode, operation_name: str | None
               ) -> OperationDefinitionNode | None:
    """The operation `Executor.build` picks, or None when it would pick none."""
    operation = None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            if operation_name is None:
                if operation:
                    return None
                operation = definition
            elif definition.name and definition.name.value == operation_name:
                operation = definition
    return operation


def coerce_long_lists(schema: GraphQLSchema, document: DocumentNode,
                      raw_variable_values: Mapping[str, Any],
                      operation_name: str | None) -> dict[str, Any]:
    """Coerced values of the variables the flat loop handles, by name."""
    operation = _operation(document, operation_name)
    if operation is None or not operation.variable_definitions:
        return {}
    names = [d.variable.name.value for d in operation.variable_definitions]
    if len(set(names)) != len(names):
        return {}
    coerced = {}
    for definition in operation.variable_definitions:
        name = definition.variable.name.value
        value = raw_variable_values.get(name)
        if type(value) is not list or len(value) <= MIN_ROWS:
            continue
        type_ = type_from_ast(schema, definition.type)
        if not is_input_type(type_):
            continue
        result = coerce_rows(value, type_)
        if result is not Undefined:
            coerced[name] = result
    return coerced


class LimitedExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, refusing what the request's variables make too big (the app's
    `Gate`: a list variable's length, the operation's cost) before coercing them."""

    @classmethod
    def build(
        cls,
        schema: GraphQLSchema,
        document: DocumentNode,
        root_value: Any = None,
        context_value: Any = None,
        raw_variable_values: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> list[GraphQLError] | Executor[Any]:
        gate = getattr(getattr(context_value, "services", None), "gate", None)
        if gate is not None:
            refused: list[GraphQLError] = gate.request_errors(
                document, operation_name,
                raw_variable_values if isinstance(raw_variable_values, dict) else None)
            if refused:
                return refused
        return cls.build_admitted(schema, document, root_value, context_value,
                                  raw_variable_values, operation_name, *args, **kwargs)

    @classmethod
    def build_admitted(
        cls,
        schema: GraphQLSchema,
        document: DocumentNode,
        root_value: Any,
        context_value: Any,
        raw_variable_values: dict[str, Any] | None,
        operation_name: str | None,
        *args: Any,
        **kwargs: Any,
    ) -> list[GraphQLError] | Executor[Any]:
        """`build` of a request within the limits: graphql-core's (strawberry's)."""
        return super().build(schema, document, root_value, context_value,
                             raw_variable_values, operation_name, *args, **kwargs)


class FastCoercionExecutor(LimitedExecutor):
    """The limited executor; long lists of flat input objects skip graphql-core's coercion."""

    @classmethod
    def build_admitted(
        cls,
        schema: GraphQLSchema,
        document: DocumentNode,
        root_value: Any,
        context_value: Any,
        raw_variable_values: dict[str, Any] | None,
        operation_name: str | None,
        *args: Any,
        **kwargs: Any,
    ) -> list[GraphQLError] | Executor[Any]:
        admitted = super().build_admitted
        fast = coerce_long_lists(schema, document, raw_variable_values, operation_name) \
            if isinstance(raw_variable_values, dict) else {}
        if not fast:
            return admitted(schema, document, root_value, context_value,
                            raw_variable_values, operation_name, *args, **kwargs)
        assert raw_variable_values is not None
        # graphql-core coerces an empty list in their place, then gets the real values
        placeholders = {**raw_variable_values, **{name: [] for name in fast}}
        executor = admitted(schema, document, root_value, context_value, placeholders,
                            operation_name, *args, **kwargs)
        if isinstance(executor, list):
            return executor
        values = executor.variable_values
        for name, value in fast.items():
            values.coerced[name] = value
            values.sources[name] = values.sources[name]._replace(
                value=raw_variable_values[name])
        return executor


def build_during_coercion(schema: strawberry.Schema, *input_types: type) -> None:
    """Let graphql-core build `input_types` (their `out_type`) and strawberry pass them on as is.

    Strawberry converts a list of inputs item by item, ~5 µs of bookkeeping each before
    the type's own `from_input` (50 ms for 10k rows); a list of leaves is only copied.
    Each type is built from its own fields: graphql-core keys the coerced values by Python
    name (`out_name`), so a field added to the input needs nothing here.
    """
    converter = schema.schema_converter
    for input_type in input_types:
        graphql_type = converter.from_input_object(input_type)
        graphql_type.out_type = _builder(  # type: ignore[method-assign,assignment]
            input_type, graphql_type, input_types)
        # marks the type as a leaf for argument conversion only: the schema is built already
        converter.scalar_registry[input_type] = ScalarDefinition(
            name=graphql_type.name, description=None, specified_by_url=None, serialize=None,
            parse_value=None, parse_literal=None)


def _builder(input_type: type[T], graphql_type: GraphQLInputObjectType,
             built: tuple[type, ...]) -> Callable[[dict[str, Any]], T]:
    """What strawberry's conversion gives for a coerced dict: enums become their class, and
    nested inputs must be built during coercion too (`built`), or this raises TypeError."""
    enums = []
    for name, field in graphql_type.fields.items():
        definition = field.extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
        field.out_name = definition.python_name
        type_ = _nullable(definition.type)
        is_list = isinstance(type_, StrawberryList)
        if is_list:
            type_ = _nullable(type_.of_type)
        if isinstance(type_, StrawberryEnumDefinition) and not is_list:
            enums.append((definition.python_name, type_.wrapped_cls))
        elif (isinstance(type_, StrawberryEnumDefinition | StrawberryList)
              or (has_object_definition(type_) and type_ not in built)):
            raise TypeError(f"{input_type.__name__}.{name}: {type_} is not built during "
                            f"coercion")

    if not enums:
        return lambda value: input_type(**value)

    def build(value: dict[str, Any]) -> T:
        for name, enum in enums:
            v = value.get(name)
            if v is not None:
                value[name] = enum(v)
        return input_type(**value)

    return build


def _nullable(type_: Any) -> Any:
    return type_.of_type if isinstance(type_, StrawberryOptional) else type_
