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

`DirectLeaves` goes one step further for the commonest fields of all, attributes without
arguments: graphql-core's executor spends ~15 calls on each (a path, a resolve info, the
resolver, the non-null, list, leaf or object checks, the output coercion). An attribute
that holds a plain string, number or boolean (`sku`, `quantity`, `name`) is read and
coerced in place; one that holds an object or a list of objects of an object type (a
page's `edges`, an edge's `node`, `pageInfo`) has its selection executed on it at once.
A list of objects that graphql-core completes itself (an async resolver's: `nodes`, a
product's `variants`) has its items' selections executed at once as well, an interface's
items as the strawberry type each is. Anything else, or a value that would not complete
cleanly (null in a non-null field, an object its type does not claim, a cast object, an
error), takes graphql-core's own path, so answers and errors are graphql-core's.

What sorting out a selection finds (graphql-core's collected fields, the steps) depends on
the document alone when it has no directives (`@skip`, `@include`, `@defer` read
variables), except for arguments given as variables: then it is kept with the operation
(`_Shared`) and later requests of the same document (parsed once, cached by query text)
start from it instead of collecting and sorting their fields again.

Relies on strawberry's private back-reference from a graphql-core field to its
definition (as `api.coercion` does); without the fast paths none of this is installed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeGuard

import strawberry
from graphql import (
    FragmentSpreadNode,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLInt,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLString,
    ListValueNode,
    Node,
    ObjectValueNode,
    OperationDefinitionNode,
    VariableNode,
    get_nullable_type,
    is_leaf_type,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import (
    CollectedFields,
    DeferUsage,
    FieldDetailsList,
    FragmentDetails,
    GroupedFieldSet,
)
from graphql.execution.executor import to_nodes
from graphql.execution.values import get_argument_values
from graphql.pyutils import AwaitableOrValue, Path, Undefined, gather_with_cancel
from graphql.type.scalars import GRAPHQL_MAX_INT, GRAPHQL_MIN_INT
from strawberry.execution import optimized_is_awaitable as is_awaitable  # the executor's
from strawberry.relay.types import GlobalID
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import StrawberryContainer, StrawberryMaybe
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE
from strawberry.types.field import StrawberryField

Resolve = Callable[..., Any]
LEAVES = "_direct_leaves"  # an object type's attribute: its `_Step`s by field name


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
                step = _step(gql_field)
                if step is not None:
                    leaves[name] = step
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

    resolve.reads_info = info_name is not None  # type: ignore[attr-defined]
    return resolve


class _Step(NamedTuple):
    """A field `DirectLeaves` completes itself (no arguments, one of the resolvers made
    here): how its value is had, and what it completes to."""

    field: GraphQLField
    attribute: str | None  # read with getattr; None: the field's resolver is called
    info: bool  # the resolver reads its info: one is built before the call
    coerce: Callable[[Any], Any] | None  # a leaf's coerce_output_value; None: an object
    object_type: GraphQLObjectType | None  # an object's type (or a list's items')
    non_null: bool
    item_type: GraphQLOutputType | None  # a list's item type; None: not a list
    item_non_null: bool
    same: type | None = None  # a leaf's values of this exact type coerce to themselves


def _step(field: GraphQLField) -> _Step | None:
    """The field as a `_Step`: resolved by `_attribute` (without arguments) or `_method`,
    its type a scalar, an enum, an object type or a list of one (whose `is_type_of` is
    strawberry's own or none)."""
    resolve = field.resolve
    attribute = None if field.args else getattr(resolve, "attribute", None)
    reads_info = getattr(resolve, "reads_info", None)
    if attribute is None and reads_info is None:
        return None
    non_null = isinstance(field.type, GraphQLNonNull)
    type_: Any = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
    if isinstance(type_, GraphQLScalarType | GraphQLEnumType):
        return _Step(field, attribute, reads_info is True, type_.coerce_output_value, None,
                     non_null, None, False, _SAME.get(type_))
    item_type = None
    item_non_null = False
    if isinstance(type_, GraphQLList):
        item_type = type_ = type_.of_type
        item_non_null = isinstance(type_, GraphQLNonNull)
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
    if not isinstance(type_, GraphQLObjectType) or not _checked_alike(type_):
        return None
    return _Step(field, attribute, reads_info is True, None, type_, non_null, item_type,
                 item_non_null)


def _checked_alike(type_: GraphQLObjectType) -> bool:
    """Whether `is_type_of(value, None)` answers as graphql-core's call with a resolve
    info: no check at all, or strawberry's, which reads only the value."""
    check = type_.is_type_of
    return check is None or check.__qualname__.endswith("_get_is_type_of.<locals>.is_type_of")


def _resolved_alike(type_: GraphQLInterfaceType) -> bool:
    """Whether the interface's `resolve_type` is strawberry's own: an object of a strawberry
    type that implements it, not cast, not generic, resolves to that type."""
    resolve = type_.resolve_type
    return resolve is not None and resolve.__qualname__.endswith(
        "_get_resolve_type.<locals>.resolve_type")


def _completed_alike(named: Any) -> TypeGuard[GraphQLObjectType | GraphQLInterfaceType]:
    """Whether `DirectLeaves` completes values of `named` as graphql-core would: an object
    type `_checked_alike` or an interface `_resolved_alike`."""
    if isinstance(named, GraphQLObjectType):
        return _checked_alike(named)
    return isinstance(named, GraphQLInterfaceType) and _resolved_alike(named)


def _is(type_: GraphQLObjectType, value: Any) -> bool:
    """Whether `value` completes as an object of `type_` at once: not an exception or an
    awaitable (graphql-core raises or awaits those), and claimed by `is_type_of` if any."""
    if type_.is_type_of is None:  # graphql-core nulls Undefined
        return value is not Undefined and not isinstance(value, Exception) and \
            not is_awaitable(value)
    return type_.is_type_of(value, None) is True  # type: ignore[arg-type]  # unread


# values coerced without a second look (bool before int: it is one); any other is first
# checked to be neither an exception nor an awaitable, which graphql-core treats apart
_PLAIN = frozenset({str, int, float, bool})
_SLOW = object()


# one selection's fields in order: its response name, its field details, and the `_Step`
# when it is one (and asked for without directives) with its arguments' values; for a leaf
# read as an attribute, the attribute and the type whose values coerce to themselves (the
# commonest field, completed inline)
_Steps = tuple[tuple[str, FieldDetailsList, _Step | None, dict[str, Any], str | None,
                     type | None], ...]
_NO_ARGUMENTS: dict[str, Any] = {}
# an object's type and its selection's fields there
_Kind = tuple[GraphQLObjectType, GroupedFieldSet]


class _Shared:
    """What every execution of one operation without directives finds alike: the root's
    selection, graphql-core's collected fields of each selection (by its object type and the
    id of the field details they are collected from), and the steps of each selection whose
    arguments are literals (by its id). `known` holds the ids of the selections and field
    details kept here, which these hold alive: only those are looked up or kept, so a
    selection made afresh per execution neither misses forever nor piles up."""

    __slots__ = ("known", "root", "steps", "subfields")

    def __init__(self) -> None:
        self.root: dict[GraphQLObjectType, GroupedFieldSet] = {}
        self.subfields: dict[tuple[GraphQLObjectType, int],
                             tuple[FieldDetailsList, CollectedFields]] = {}
        self.steps: dict[int, tuple[GroupedFieldSet, _Steps | None]] = {}
        self.known: set[int] = set()

    def keep(self, selection: GroupedFieldSet) -> None:
        self.known.add(id(selection))
        self.known.update(id(details) for details in selection.values())


# id of an operation -> a weak reference to it and what its executions share (None: nothing)
_SHARED: dict[int, tuple[weakref.ref[OperationDefinitionNode], _Shared | None]] = {}


def _shared_of(operation: OperationDefinitionNode, fragments: dict[str, FragmentDetails]
               ) -> _Shared | None:
    """What executions of `operation` share, made on its first execution; None when its
    selections read variables (a directive, a fragment's own variables or arguments)."""
    key = id(operation)
    kept = _SHARED.get(key)
    if kept is not None and kept[0]() is operation:
        return kept[1]
    shared = _Shared() if _without_directives(operation, fragments, set()) else None

    def forget(ref: weakref.ref[OperationDefinitionNode]) -> None:
        entry = _SHARED.get(key)
        if entry is not None and entry[0] is ref:
            del _SHARED[key]

    _SHARED[key] = (weakref.ref(operation, forget), shared)
    return shared


def _without_directives(node: Any, fragments: dict[str, FragmentDetails], seen: set[str]
                        ) -> bool:
    """Whether the selections under `node`, and the fragments they spread, have no
    directives, fragment variables or fragment arguments."""
    selection_set = getattr(node, "selection_set", None)
    if selection_set is None:
        return True
    for selection in selection_set.selections:
        if selection.directives:
            return False
        if not isinstance(selection, FragmentSpreadNode):  # a field, an inline fragment
            if not _without_directives(selection, fragments, seen):
                return False
            continue
        if selection.arguments:
            return False
        name = selection.name.value
        if name in seen:
            continue
        seen.add(name)
        fragment = fragments.get(name)
        if fragment is None:
            continue  # graphql-core skips it too
        definition = fragment.definition
        if definition.directives or definition.variable_definitions or \
                not _without_directives(definition, fragments, seen):
            return False
    return True


def _literal(value: Node) -> bool:
    """Whether an argument's value holds no variable."""
    if isinstance(value, VariableNode):
        return False
    if isinstance(value, ListValueNode):
        return all(_literal(item) for item in value.values)
    if isinstance(value, ObjectValueNode):
        return all(_literal(field.value) for field in value.fields)
    return True


class DirectLeaves(Executor[Any]):
    """graphql-core's executor, completing the fields it can without its field machinery.

    A selection's fields are sorted out once per execution (the items of a list share
    their selection's `GroupedFieldSet`, so a page of 50 stocks does it once). Then each
    `_Step`'s value is read (or its resolver called, with a resolve info only when it asks
    for one) and completed in place: a leaf coerced, an object (or each object of a list)
    has its sub-selection executed on it as graphql-core's `complete_object_value` would,
    errors handled as its `execute_field` and `complete_list_item_value` do.

    Whatever is not clean (null where it may not be, an exception, an awaitable, an object
    its type does not claim, a value the leaf will not coerce, a deferred fragment) goes
    graphql-core's way: an attribute through `execute_field`, which reads it again (the
    same value); a resolver's value, had once, through `complete_value` with the resolve
    info `execute_field` would have built.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # each selection's steps by its id, kept with the selection so the id stays its own
        self._steps: dict[int, tuple[GroupedFieldSet, _Steps | None]] = {}
        self._shared = _shared_of(self.operation, self.fragments)

    def execute_collected_root_fields(
        self,
        root_type: GraphQLObjectType,
        root_value: Any,
        grouped_field_set: GroupedFieldSet,
        serially: bool,
        new_defer_usages: Sequence[DeferUsage],
    ) -> AwaitableOrValue[dict[str, Any]]:
        """graphql-core's, on the root selection kept for the operation when it shares."""
        shared = self._shared
        if shared is not None and not new_defer_usages:
            kept = shared.root.get(root_type)
            if kept is None:
                kept = shared.root.setdefault(root_type, grouped_field_set)  # first one kept
                if kept is grouped_field_set:
                    shared.keep(kept)
            grouped_field_set = kept
        return super().execute_collected_root_fields(root_type, root_value, grouped_field_set,
                                                     serially, new_defer_usages)

    def collect_subfields(self, return_type: GraphQLObjectType,
                          field_details_list: FieldDetailsList) -> CollectedFields:
        """graphql-core's, kept for the operation when it shares and the field details are
        its own."""
        shared = self._shared
        if shared is None or id(field_details_list) not in shared.known:
            return super().collect_subfields(return_type, field_details_list)
        key = (return_type, id(field_details_list))
        kept = shared.subfields.get(key)
        if kept is None:
            collected = super().collect_subfields(return_type, field_details_list)
            if collected.new_defer_usages or collected.forbidden_directive_instances:
                return collected
            # the first one kept (another thread's, if it came first), its details with it
            kept = shared.subfields.setdefault(key, (field_details_list, collected))
            if kept[1] is collected:
                shared.keep(collected.grouped_field_set)
        return kept[1]

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
            for response_name, field_details_list, step, arguments, attribute, same in steps:
                result = _SLOW
                if attribute is not None:  # a leaf read as an attribute: the commonest field
                    value: Any
                    try:
                        value = getattr(source_value, attribute)
                    except Exception:
                        value = _SLOW
                    else:
                        if type(value) is not same or (same is int and not (  # 32 bits
                                GRAPHQL_MIN_INT <= value <= GRAPHQL_MAX_INT)):  # type: ignore[operator]
                            value = _coerced(value, step)  # type: ignore[arg-type]
                    if value is not _SLOW:
                        results[response_name] = value
                        continue
                elif step is not None and position_context is None:
                    result = self._direct(parent_type, source_value, step, field_details_list,
                                          Path(path, response_name, name), arguments)
                if result is _SLOW:
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

    def _direct(self, parent_type: GraphQLObjectType, source: Any, step: _Step,
                details: FieldDetailsList, path: Path, arguments: dict[str, Any]) -> Any:
        """The field completed, or `_SLOW` (only before a resolver has been called)."""
        info = None
        if step.attribute is not None:
            try:
                value = getattr(source, step.attribute)
            except Exception:
                return _SLOW
        else:
            if step.info:
                info = self.build_resolve_info(step.field, to_nodes(details), parent_type,
                                               path)
            try:
                value = step.field.resolve(source, info, **arguments)  # type: ignore[misc]
            except Exception as raw_error:
                self.handle_field_error(raw_error, step.field.type, details, path)
                return None
        if step.coerce is not None:
            completed = _coerced(value, step)
        else:
            completed = self._complete_object(value, step, details, path)
        if completed is not _SLOW or step.attribute is not None:
            return completed
        if info is None:
            info = self.build_resolve_info(step.field, to_nodes(details), parent_type, path)
        return self._complete_resolved(value, step.field.type, details, info, path)

    def _complete_resolved(self, value: Any, type_: GraphQLOutputType,
                           details: FieldDetailsList, info: GraphQLResolveInfo[Any], path: Path
                           ) -> Any:
        """What `execute_field` does with a resolver's value (no deferral in play)."""
        try:
            if self.is_awaitable(value):
                return self.complete_awaitable_value(type_, details, info, path, value, None)
            return self._guarded(self.complete_value(type_, details, info, path, value, None),
                                 type_, details, path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, type_, details, path)
            return None

    def _complete_object(self, value: Any, step: _Step, details: FieldDetailsList,
                         path: Path) -> Any:
        """The object or list completed, or `_SLOW` (decided before any of it runs)."""
        if value is None:
            return _SLOW if step.non_null else None
        type_ = step.object_type
        assert type_ is not None
        if step.item_type is None:
            if not _is(type_, value):
                return _SLOW
        elif type(value) is not list or not all(
                _is(type_, item) if item is not None else not step.item_non_null
                for item in value):
            return _SLOW
        selection, deferred, _ = self.collect_subfields(type_, details)
        if deferred:
            return _SLOW
        try:
            if step.item_type is None:
                return self._guarded(self.execute_fields(type_, value, path, selection, None),
                                     step.field.type, details, path)
            kind = (type_, selection)
            return self._items(value, [None if item is None else kind for item in value],
                               step.item_type, details, path)
        except Exception as raw_error:  # as `execute_field`: null the field, or raise on
            self.handle_field_error(raw_error, step.field.type, details, path)
            return None

    def complete_value(self, return_type: GraphQLOutputType,
                       field_details_list: FieldDetailsList, info: GraphQLResolveInfo[Any],
                       path: Path, result: Any, position_context: Any
                       ) -> AwaitableOrValue[Any]:
        """graphql-core's, but a clean list of objects (an async resolver's `nodes`, a
        product's `variants`) has its items' selections executed at once (`_items`)."""
        if position_context is None and result is not None and result is not Undefined:
            if type(result) is list:
                kinds = self._kinds(return_type, field_details_list, result)
                if kinds is not None:
                    item_type = get_nullable_type(return_type).of_type  # type: ignore[union-attr]
                    return self._items(result, kinds, item_type, field_details_list, path)
            else:
                named = get_nullable_type(return_type)
                kind = self._kind_of(named, field_details_list, result) \
                    if _completed_alike(named) else None
                if kind is not None:  # an object: its fields, as complete_object_value
                    return self.execute_fields(kind[0], result, path, kind[1], None)
        return super().complete_value(return_type, field_details_list, info, path, result,
                                      position_context)

    def _kind_of(self, named: GraphQLObjectType | GraphQLInterfaceType,
                 details: FieldDetailsList, value: Any,
                 seen: dict[type, _Kind | None] | None = None) -> _Kind | None:
        """The object type and selection `value` completes with as `named` (one
        `_completed_alike`), when it completes cleanly as one; `seen` keeps each class's
        across a list's items."""
        cls = type(value)
        if seen is None:
            kind = self._kind(named, cls, details)
        elif cls in seen:
            kind = seen[cls]
        else:
            kind = seen[cls] = self._kind(named, cls, details)
        if kind is None or not _is(kind[0], value) or \
                getattr(value, TYPE_CAST_ATTRIBUTE, None) is not None:
            return None
        return kind

    def _kinds(self, return_type: GraphQLOutputType, details: FieldDetailsList,
               items: list[Any]) -> list[_Kind | None] | None:
        """Each item's object type and selection (None for a null item), when `return_type`
        is a list of an object type or of an interface strawberry resolves, and every item
        completes cleanly: None where nulls may be, an object its type claims, no deferred
        fragment. Otherwise None: graphql-core's way."""
        list_type = get_nullable_type(return_type)
        if not isinstance(list_type, GraphQLList):
            return None
        item_non_null = isinstance(list_type.of_type, GraphQLNonNull)
        named = get_nullable_type(list_type.of_type)
        if not _completed_alike(named):
            return None
        kinds: list[_Kind | None] = []
        seen: dict[type, _Kind | None] = {}
        for item in items:
            if item is None:
                if item_non_null:
                    return None
                kinds.append(None)
                continue
            kind = self._kind_of(named, details, item, seen)
            if kind is None:
                return None
            kinds.append(kind)
        return kinds

    def _kind(self, named: GraphQLObjectType | GraphQLInterfaceType, cls: type,
              details: FieldDetailsList) -> _Kind | None:
        """The object type an item of class `cls` completes as, and its selection."""
        if isinstance(named, GraphQLObjectType):
            type_ = named
        else:
            definition = getattr(cls, "__strawberry_definition__", None)
            if definition is None or definition.is_graphql_generic:
                return None
            found = self.schema.type_map.get(definition.name)
            if not isinstance(found, GraphQLObjectType) or not _checked_alike(found) or \
                    found.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF) \
                    is not definition or not self.schema.is_sub_type(named, found):
                return None
            type_ = found
        selection, deferred, _ = self.collect_subfields(type_, details)
        return None if deferred else (type_, selection)

    def _items(self, items: list[Any], kinds: list[_Kind | None],
               item_type: GraphQLOutputType, details: FieldDetailsList, path: Path) -> Any:
        """The list's items completed, each as the object type `kinds` gives with its
        selection, each error handled as `complete_list_item_value`."""
        completed: list[Any] = []
        awaitable_indices: list[int] = []
        is_awaitable = self.is_awaitable
        try:
            for index, (item, kind) in enumerate(zip(items, kinds, strict=True)):
                if kind is None:
                    completed.append(None)
                    continue
                item_path = Path(path, index, None)
                try:
                    done = self._guarded(self.execute_fields(kind[0], item, item_path,
                                                             kind[1], None),
                                         item_type, details, item_path)
                except Exception as raw_error:
                    self.handle_field_error(raw_error, item_type, details, item_path)
                    done = None
                if is_awaitable(done):
                    awaitable_indices.append(index)
                completed.append(done)
        except Exception:
            if awaitable_indices:
                self.settle_in_background([completed[i] for i in awaitable_indices])
            raise
        if not awaitable_indices:
            return completed
        return self._gathered_items(completed, awaitable_indices)

    def _guarded(self, completed: Any, type_: GraphQLOutputType, details: FieldDetailsList,
                 path: Path) -> Any:
        """`completed`; when awaitable, one whose error is handled at `path` as `type_`'s."""
        if not self.is_awaitable(completed):
            return completed

        async def guarded() -> Any:
            try:
                return await completed
            except Exception as raw_error:
                self.handle_field_error(raw_error, type_, details, path)
                return None

        return guarded()

    @staticmethod
    async def _gathered_items(completed: list[Any], awaitable_indices: list[int]
                              ) -> list[Any]:
        """`completed` with its awaitables awaited, as graphql-core's list completion."""
        if len(awaitable_indices) == 1:
            index = awaitable_indices[0]
            completed[index] = await completed[index]
            return completed
        awaited = await gather_with_cancel(*(completed[i] for i in awaitable_indices))
        for index, value in zip(awaitable_indices, awaited, strict=True):
            completed[index] = value
        return completed

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
        """The selection's steps (None when none of its fields is one to complete
        directly), kept for the rest of the execution."""
        # a middleware wraps every resolver: then graphql-core's path for all (strawberry
        # passes a manager per request, empty unless an extension resolves)
        wrapped = self.middleware_manager is not None and self.middleware_manager.middlewares
        shared = self._shared
        if wrapped or shared is None or id(grouped_field_set) not in shared.known:
            shared = None
        if shared is not None:
            kept = shared.steps.get(id(grouped_field_set))
            if kept is not None:
                self._steps[id(grouped_field_set)] = kept
                return kept
        direct = getattr(parent_type, LEAVES, None)
        steps: _Steps | None = None
        if direct and not wrapped:
            found = tuple(_with_leaf(response_name, details, *self._step_of(direct, details))
                          for response_name, details in grouped_field_set.items())
            if any(step is not None for _, _, step, _, _, _ in found):
                steps = found
        kept = self._steps[id(grouped_field_set)] = (grouped_field_set, steps)
        if shared is not None and all(  # arguments given as variables differ per execution
                _literal(argument.value) for details in grouped_field_set.values()
                for argument in details[0].node.arguments or ()):
            shared.steps[id(grouped_field_set)] = kept
        return kept

    def _step_of(self, direct: dict[str, _Step], details: FieldDetailsList
                 ) -> tuple[_Step | None, dict[str, Any]]:
        """The field's step and its arguments' values: the same for the whole execution
        (they come from the document and its variables), so coerced once here. A field
        with directives, or arguments that do not coerce, is left to `execute_field`."""
        step = direct.get(details[0].node.name.value)
        if step is None or any(d.node.directives for d in details):
            return None, _NO_ARGUMENTS
        if not step.field.args:
            return step, _NO_ARGUMENTS
        first = details[0]
        try:
            return step, get_argument_values(step.field, first.node, self.variable_values,
                                             first.fragment_variable_values,
                                             self.hide_suggestions)
        except Exception:
            return None, _NO_ARGUMENTS  # graphql-core raises it again, in its place


# graphql-core's scalars whose output coercion returns a value of this exact type as it is
# (Int does too within its 32 bits: `execute_fields` and `_coerced` check them)
_SAME: dict[Any, type] = {GraphQLString: str, GraphQLID: str, GraphQLBoolean: bool,
                          GraphQLInt: int}


def _with_leaf(response_name: str, details: FieldDetailsList, step: _Step | None,
               arguments: dict[str, Any]) -> tuple[str, FieldDetailsList, _Step | None,
                                                   dict[str, Any], str | None, type | None]:
    """A field's entry in `_Steps`: a leaf read as an attribute names it (its `same` type
    may be None: then every value goes through `_coerced`)."""
    if step is None or step.coerce is None or step.attribute is None:
        return response_name, details, step, arguments, None, None
    return response_name, details, step, arguments, step.attribute, step.same


def _coerced(value: Any, step: _Step) -> Any:
    """The leaf value coerced as `complete_leaf_value` would, or `_SLOW` where graphql-core
    does something else (null in a non-null field, an exception, an awaitable) or raises."""
    if type(value) is step.same and (
            type(value) is not int or GRAPHQL_MIN_INT <= value <= GRAPHQL_MAX_INT):
        return value  # what the scalar's coercion returns: the value itself
    if value is None:
        return _SLOW if step.non_null else None
    if type(value) not in _PLAIN and (isinstance(value, Exception) or is_awaitable(value)):
        return _SLOW
    try:
        coerced = step.coerce(value)  # type: ignore[misc]
    except Exception:
        return _SLOW
    return _SLOW if coerced is None or coerced is Undefined else coerced
