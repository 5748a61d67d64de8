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

`DirectLeaves` goes one step further for the commonest field of all, an attribute that
holds a plain string, number or boolean (`sku`, `quantity`, `name`): graphql-core's
executor spends ~15 calls on each (a path, a resolve info, the resolver, the non-null and
leaf checks, the output coercion), `DirectLeaves.execute_fields` reads the attribute and
coerces it in place. Anything else, or a value that would not coerce cleanly (null in a
non-null field, an error), takes graphql-core's own path, so answers and errors are
graphql-core's.

Relies on strawberry's private back-reference from a graphql-core field to its
definition (as `api.coercion` does); without the fast paths none of this is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    is_leaf_type,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import AwaitableOrValue, Path, Undefined, gather_with_cancel
from strawberry.relay.types import GlobalID
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import StrawberryContainer, StrawberryMaybe
from strawberry.types.field import StrawberryField

Resolve = Callable[..., Any]
LEAVES = "_direct_leaves"  # an object type's attribute: its `_Leaf`s by field name


def install(schema: strawberry.Schema) -> int:
    """Give every eligible field of `schema` its direct resolver; how many got one."""
    if schema.config.default_resolver is not getattr:
        return 0  # a custom default resolver: strawberry's path keeps calling it
    installed = 0
    for type_ in schema._schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        leaves = {}
        for name, gql_field in type_.fields.items():
            resolve = _direct(schema, gql_field)
            if resolve is not None:
                gql_field.resolve = resolve
                installed += 1
                leaf = _leaf(gql_field)
                if leaf is not None:
                    leaves[name] = leaf
        setattr(type_, LEAVES, leaves)
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
    resolve.attribute = name  # type: ignore[attr-defined]  # for `DirectLeaves`
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


class _Leaf(NamedTuple):
    """A field `DirectLeaves` completes itself: where its value is, how it is coerced."""

    attribute: str
    coerce: Callable[[Any], Any]  # the leaf type's coerce_output_value
    non_null: bool


# what an attribute may hold for the short way: no awaitable, no exception, nothing a
# custom scalar would read differently from graphql-core (bool before int: it is one)
_PLAIN = frozenset({str, int, float, bool})
_SLOW = object()


def _leaf(field: GraphQLField) -> _Leaf | None:
    """The field as a `_Leaf`: resolved by `_attribute`, no arguments, a scalar or enum."""
    if field.args:
        return None
    attribute = getattr(field.resolve, "attribute", None)
    non_null = isinstance(field.type, GraphQLNonNull)
    type_ = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
    if attribute is None or not isinstance(type_, GraphQLScalarType | GraphQLEnumType):
        return None
    return _Leaf(attribute, type_.coerce_output_value, non_null)


# one selection's fields in order: its response name, its field details, and the `_Leaf`
# when it is one (and asked for without arguments)
_Steps = tuple[tuple[str, FieldDetailsList, _Leaf | None], ...]


class DirectLeaves(Executor[Any]):
    """graphql-core's executor, completing plain attribute leaves without its field machinery.

    A selection's fields are sorted out once per execution (the items of a list share
    their selection's `GroupedFieldSet`, so a page of 50 stocks does it once); then each
    leaf is `coerce(getattr(source, attribute))` when the value's type is one of `_PLAIN`
    and coerces to a value. Every other case (null, an error, another type) goes through
    `execute_field` as before, which reads the attribute again: the same value.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # each selection's steps by its id, kept with the selection so the id stays its own
        self._steps: dict[int, tuple[GroupedFieldSet, _Steps | None]] = {}

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        kept = self._steps.get(id(grouped_field_set))
        steps = (kept if kept is not None else self._sort_out(parent_type, grouped_field_set))[1]
        if steps is None:
            return super().execute_fields(parent_type, source_value, path,
                                          grouped_field_set, position_context)
        results: dict[str, Any] = {}
        awaitable_fields: list[str] = []
        is_awaitable = self.is_awaitable
        name = parent_type.name
        try:
            for response_name, field_details_list, leaf in steps:
                if leaf is not None:
                    value = _complete_leaf(source_value, leaf)
                    if value is not _SLOW:
                        results[response_name] = value
                        continue
                result = self.execute_field(parent_type, source_value, field_details_list,
                                            Path(path, response_name, name),
                                            position_context)
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:  # as graphql-core: settle the others, they may fail too
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return self._gathered(results, awaitable_fields)

    @staticmethod
    async def _gathered(results: dict[str, Any], awaitable_fields: list[str]
                        ) -> dict[str, Any]:
        """`results` with its awaitables awaited, as graphql-core's `get_results`."""
        if len(awaitable_fields) == 1:
            field = awaitable_fields[0]
            results[field] = await results[field]
            return results
        awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
        results.update(zip(awaitable_fields, awaited, strict=True))
        return results

    def _sort_out(self, parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet
                  ) -> tuple[GroupedFieldSet, _Steps | None]:
        """The selection's steps (None when none of its fields is a leaf to complete
        directly), kept for the rest of the execution."""
        leaves = getattr(parent_type, LEAVES, None)
        steps: _Steps | None = None
        # a middleware wraps every resolver: then graphql-core's path for all (strawberry
        # passes a manager per request, empty unless an extension resolves)
        wrapped = self.middleware_manager is not None and self.middleware_manager.middlewares
        if leaves and not wrapped:
            found = tuple(
                (response_name, details,
                 None if details[0].node.arguments else leaves.get(details[0].node.name.value))
                for response_name, details in grouped_field_set.items())
            if any(leaf is not None for _, _, leaf in found):
                steps = found
        kept = self._steps[id(grouped_field_set)] = (grouped_field_set, steps)
        return kept


def _complete_leaf(source: Any, leaf: _Leaf) -> Any:
    """The leaf's completed value, or `_SLOW` for graphql-core's path."""
    try:
        value = getattr(source, leaf.attribute)
    except Exception:
        return _SLOW
    if value is None:
        return _SLOW if leaf.non_null else None
    if type(value) not in _PLAIN:
        return _SLOW
    try:
        coerced = leaf.coerce(value)
    except Exception:
        return _SLOW
    return _SLOW if coerced is None or coerced is Undefined else coerced
