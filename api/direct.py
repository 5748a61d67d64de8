"""Resolvers graphql-core calls directly, instead of through strawberry's generic wrapper.

For every field of every object, strawberry's resolver makes an `Info`, converts the
arguments by walking their types, looks for field extensions and exception handlers,
and reaches the attribute or method through two more calls. A dashboard page of 50
stocks resolves ~400 fields: that bookkeeping was about a quarter of its time. Here each
field whose arguments are leaves (scalars, enums, lists of them: strawberry hands those
over as they are, lists copied) and which has no extension gets a resolver made for it
once: an attribute is read with `getattr` (strawberry's default resolver), a method is
called with its arguments renamed to their Python names and, if it asks, an `Info`.
Other fields (input objects, extensions, permission classes) keep strawberry's.

Relies on strawberry's private back-reference from a graphql-core field to its
definition (as `api.coercion` does); without the fast paths none of this is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from graphql import (
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    is_leaf_type,
)
from strawberry.relay.types import GlobalID
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import StrawberryContainer, StrawberryMaybe
from strawberry.types.field import StrawberryField

Resolve = Callable[..., Any]


def install(schema: strawberry.Schema) -> int:
    """Give every eligible field of `schema` its direct resolver; how many got one."""
    if schema.config.default_resolver is not getattr:
        return 0  # a custom default resolver: strawberry's path keeps calling it
    installed = 0
    for type_ in schema._schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for gql_field in type_.fields.values():
            resolve = _direct(schema, gql_field)
            if resolve is not None:
                gql_field.resolve = resolve
                installed += 1
    return installed


def _direct(schema: strawberry.Schema, gql_field: GraphQLField) -> Resolve | None:
    field = (gql_field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(field, StrawberryField) or field.extensions or field.is_subscription \
            or schema.schema_converter._get_field_exception_handlers(field):
        return None
    if field.base_resolver is None:
        return _attribute(field.python_name)
    resolver = field.base_resolver
    func = resolver.wrapped_func
    if isinstance(func, (staticmethod, classmethod)) or resolver.parent_parameter \
            or resolver.root_parameter:
        return None
    names: dict[str, str] = {}
    lists: set[str] = set()
    for argument in field.arguments:
        graphql_name = schema.config.name_converter.from_argument(argument)
        kind = _leaf_kind(gql_field.args[graphql_name].type)
        if kind is None or _converted(argument.type):
            return None
        names[graphql_name] = argument.python_name
        if kind == "list":
            lists.add(graphql_name)
    info_name = resolver.info_parameter.name if resolver.info_parameter else None
    return _method(func, with_self=resolver.self_parameter is not None, names=names,
                   lists=frozenset(lists), info_name=info_name,
                   info_class=schema.config.info_class, field=field)


def _leaf_kind(type_: Any) -> str | None:
    """"leaf" for a scalar or an enum, "list" for a list of them, else None."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        item = type_.of_type
        if isinstance(item, GraphQLNonNull):
            item = item.of_type
        return "list" if is_leaf_type(item) else None
    return "leaf" if is_leaf_type(type_) else None


def _converted(type_: Any) -> bool:
    """Whether strawberry turns the leaf into something else: a `Maybe` into `Some(...)`,
    a relay `GlobalID` string into a `GlobalID`."""
    while isinstance(type_, StrawberryContainer):
        if isinstance(type_, StrawberryMaybe):
            return True
        type_ = type_.of_type
    return type_ is GlobalID


def _attribute(name: str) -> Resolve:
    def resolve(source: Any, info: GraphQLResolveInfo[Any], **_: Any) -> Any:
        return getattr(source, name)

    resolve._is_default = True  # type: ignore[attr-defined]  # as strawberry marks its own
    return resolve


def _method(func: Callable[..., Any], *, with_self: bool, names: dict[str, str],
            lists: frozenset[str], info_name: str | None, info_class: type[Any],
            field: StrawberryField) -> Resolve:
    """`func` called as strawberry calls it: arguments under their Python names (`names`:
    GraphQL to Python), lists copied, an `Info` under `info_name` when it asks for one."""

    def resolve(source: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
        kwargs = {names[name]: list(value) if name in lists and value is not None else value
                  for name, value in args.items()} if args else {}
        if info_name is not None:
            kwargs[info_name] = info_class(_raw_info=info, _field=field)
        return func(source, **kwargs) if with_self else func(**kwargs)

    return resolve
