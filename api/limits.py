"""Request limits (API.md, "Access and operations"): refused before any resolver runs.

Both paths (strawberry's and the fast lane) get their documents from one `Gate`: it parses
with a token limit, checks depth, aliases and repeated fields on the document, then runs
GraphQL's validation, and keeps the answer for the next request with the same text. The
static checks run first so that an oversized document never reaches graphql-core's
`OverlappingFieldsCanBeMergedRule`, which is quadratic in the fields that share a name.

What depends on variables (a connection's `first`, the ids of `nodes`, the length of a
list variable) is checked by the executor's `build`, before graphql-core coerces the
variables: `request_errors`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    is_abstract_type,
    is_input_type,
    is_list_type,
    parse,
    type_from_ast,
)
from graphql.validation import ASTValidationRule
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension
from strawberry.schema import Schema
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext

from api.observe import current, label_of
from domain.errors import clip
from domain.models import OrderType, WebhookEvent
from domain.services import batches, catalog, orders, stock
from domain.settings import Limits

CACHE_SIZE = 512  # documents kept, by query text
CACHED_CHARS = 64 * 1024  # a longer text is checked every time, never kept
CACHE_CHARS = 2 * 2**20  # the texts kept, together (their documents take ~10 times more)
SAME_FIELD = 50  # selections of one response name in one (merged) selection set
EXPANSION = 10  # a document may visit this many fields per token, fragments expanded

# no limit at all (0 turns each off): for a plain strawberry view's fast lane
UNLIMITED = Limits(depth=0, aliases=0, tokens=0, document_chars=0, cost=0, list_items=0,
                   bulk_rows=0, batch=0, body_bytes=0, header_bytes=0, rate=0, burst=0)

DEFAULT_PAGE = 20  # a connection without `first` (api/queries.py answers as many)
MAX_PAGE = 100
# the most a plain list field is expected to hold, for the cost (README, "Limits"); a list
# not named here counts DEFAULT_LIST
# the most each plain list can hold, as the domain enforces it
LIST_SIZES: Mapping[str, int] = {
    "Order.lines": orders.MAX_LINES, "Fulfillment.lines": orders.MAX_LINES,
    "PurchaseOrder.lines": stock.MAX_PURCHASE_LINES,
    "OrderLine.allocations": catalog.MAX_WAREHOUSES_PER_SELLER,
    "Product.variants": catalog.MAX_VARIANTS_PER_PRODUCT,
    "ProductVariant.stocks": catalog.MAX_WAREHOUSES_PER_SELLER,
    "Warehouse.shippingZones": catalog.MAX_ZONES_PER_WAREHOUSE,
    "MarketplaceConfiguration.allocation": len(OrderType),
    "PickBatch.orders": batches.MAX_ORDERS, "PickBatch.lines": batches.MAX_LINES,
    "PickBatchCompletePayload.fulfillments": batches.MAX_ORDERS,
    "WebhookSubscription.events": len(WebhookEvent),
}
DEFAULT_LIST = 100
ERRORS_PER_ROW = 5  # a bulk row fails at most this many ways
SIZE_ARGUMENTS = frozenset({"first", "ids", "stocks"})  # the arguments `_size` reads
SIZES_KEPT = 64  # an operation's costs kept, one per set of sizes its variables give


class Checked(NamedTuple):
    """A query text after the gate: its document (None when it does not parse) and the
    errors that refuse it (empty: it may run)."""

    document: DocumentNode | None
    errors: list[GraphQLError]


class Gate:
    """Parse, limit and validate query texts, keeping the answers for the texts seen most
    recently (short ones only: a cache must not hold a 16 MiB document)."""

    def __init__(self, schema: GraphQLSchema, limits: Limits,
                 rules: Collection[type[ASTValidationRule]],
                 cache_size: int = CACHE_SIZE) -> None:
        self.schema = schema
        self.limits = limits
        self._rules = tuple(rules)
        self._cache: OrderedDict[str, Checked] = OrderedDict()
        self._cache_size = cache_size
        self._cached_chars = 0
        self._plans: dict[tuple[int, str | None], _Plan] = {}

    @classmethod
    def of(cls, schema: Schema, limits: Limits, cache_size: int = CACHE_SIZE) -> Gate:
        """The gate of a strawberry schema, validating with the rules strawberry uses
        (taken from where it keeps them)."""
        rules = ExecutionContext(query=None, schema=schema, allowed_operations=()
                                 ).validation_rules
        return cls(schema._schema, limits, rules, cache_size)

    def check(self, query: str) -> Checked:
        cache = self._cache
        checked = cache.get(query)
        if checked is not None:
            cache.move_to_end(query)
            return checked
        allowed = self.limits.document_chars
        if allowed and len(query) > allowed:  # refused unread, and never kept
            return Checked(None, [GraphQLError(
                f"The document is {len(query):,} characters long; the limit is {allowed:,}.",
                extensions={"code": "QUERY_TOO_LARGE"})])
        try:
            document = parse(query, max_tokens=self.limits.tokens or None)
        except GraphQLError as error:
            checked = Checked(None, [error])
        else:
            errors = document_errors(document, self.limits)
            if not errors:
                errors = validate_document(self.schema, document, self._rules)
            checked = Checked(document, errors)
        if len(query) <= CACHED_CHARS:
            cache[query] = checked
            self._cached_chars += len(query)
            while len(cache) > self._cache_size or self._cached_chars > CACHE_CHARS:
                dropped, _ = cache.popitem(last=False)
                self._cached_chars -= len(dropped)
                self._plans = {}  # rare (a new text pushed an old one out), cheap to rebuild
        return checked

    def request_errors(self, document: DocumentNode, operation_name: str | None,
                       variables: Mapping[str, Any] | None) -> list[GraphQLError]:
        """What the variables make too big: a list variable's length, the operation's cost.
        Costs nothing but a lookup for an operation whose sizes the variables do not set
        (an `orderCreate`, say): its plan is worked out once per document."""
        key = (id(document), operation_name)
        plan = self._plans.get(key)
        if plan is None or plan.document is not document:  # ids outlive their documents
            operation = _operation(document, operation_name)
            if operation is None:
                return []  # graphql-core reports it
            plan = _Plan(self.schema, document, operation)
            if len(self._plans) < 4 * self._cache_size:
                self._plans[key] = plan
        values = variables or {}
        errors = list(_list_variables(plan.list_variables, values, self.limits))
        if errors:
            return errors
        total = plan.cost.total(values)
        if self.limits.cost and total > self.limits.cost:
            return [GraphQLError(
                f"The operation may return {total:,} objects; the limit is "
                f"{self.limits.cost:,}. Ask for smaller pages (`first`) or fewer nested "
                "lists.", extensions={"code": "QUERY_TOO_COSTLY"})]
        return []


class _Plan:
    """What `Gate.request_errors` checks of one operation of one document."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode,
                 operation: OperationDefinitionNode) -> None:
        self.document = document
        # (name, type) of the variables whose values may hold lists
        self.list_variables: list[tuple[str, GraphQLInputType]] = []
        for definition in operation.variable_definitions or ():
            graphql_type = type_from_ast(schema, definition.type)
            if is_input_type(graphql_type) and _holds_lists(graphql_type):
                self.list_variables.append((definition.variable.name.value, graphql_type))
        self.cost = Cost(schema, document, operation)


_UNREAD = parse("{ __typename }")  # stands for a document refused before parsing


class GateExtension(SchemaExtension):
    """Strawberry's path through the app's `Gate` (standing in for ParserCache and
    ValidationCache): the same document, limits and validation as the fast lane."""

    checked: Checked | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        gate = _gate_of(context.context)
        query = context.query
        if gate is not None and query is not None and context.graphql_document is None:
            self.checked = gate.check(query)
            if self.checked.document is not None:
                context.graphql_document = self.checked.document
            elif self.checked.errors[0].extensions:  # refused unread: its error, no parse
                context.graphql_document = _UNREAD
            elif gate.limits.tokens:  # strawberry parses again and reports it its own way
                context.parse_options["max_tokens"] = gate.limits.tokens
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self.checked is not None and context.graphql_document is not None:
            # strawberry runs no validation of its own once errors are set, even empty ones
            context.pre_execution_errors = list(self.checked.errors)
        entry = current()
        if entry is not None and self.checked is not None and not self.checked.errors \
                and context.graphql_document is not None:
            entry.operation = context.operation_name
            entry.label = label_of(get_operation_ast(context.graphql_document,
                                                     context.operation_name))
        yield


def _gate_of(context: Any) -> Gate | None:
    services = getattr(context, "services", None)
    return getattr(services, "gate", None)


# -- the document alone ----------------------------------------------------------------


def document_errors(document: DocumentNode, limits: Limits) -> list[GraphQLError]:
    """Depth, aliases, repeated fields and literal list lengths of a parsed document."""
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    walk = _Walk(fragments, budget=EXPANSION * max(limits.tokens, 1000))
    errors: list[GraphQLError] = []
    aliases = 0
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
            aliases += _aliases(definition.selection_set)
    if limits.aliases and aliases > limits.aliases:
        errors.append(GraphQLError(f"The document has {aliases} aliases; the limit is "
                                   f"{limits.aliases}.", extensions={"code": "TOO_MANY_ALIASES"}))
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        try:
            depth = walk.merged([definition.selection_set], 1, limits.depth)
        except _Refused as refused:
            errors.append(refused.error)
            continue
        if limits.depth and depth > limits.depth:
            errors.append(GraphQLError(f"The operation is {depth} levels deep; the limit is "
                                       f"{limits.depth}.",
                                       extensions={"code": "QUERY_TOO_DEEP"}))
    errors.extend(_literal_lists(document, limits))
    return errors


class _Refused(Exception):
    def __init__(self, error: GraphQLError) -> None:
        self.error = error


class _Walk:
    """Selection sets with their fragments spread in, merged by response name as GraphQL
    executes them, within a budget of visited fields (fragments can nest exponentially)."""

    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode], budget: int) -> None:
        self.fragments = fragments
        self.budget = budget

    def fields(self, sets: Iterable[SelectionSetNode | None]) -> dict[str, list[FieldNode]]:
        """Response name -> the fields selected under it, fragments expanded."""
        grouped: dict[str, list[FieldNode]] = {}
        pending = [s for s in sets if s is not None]
        spread: set[str] = set()
        while pending:
            for selection in pending.pop().selections:
                if isinstance(selection, FieldNode):
                    self.budget -= 1
                    name = (selection.alias or selection.name).value
                    grouped.setdefault(name, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    fragment = self.fragments.get(selection.name.value)
                    if fragment is not None and fragment.name.value not in spread:
                        spread.add(fragment.name.value)  # once per set: a cycle ends here
                        pending.append(fragment.selection_set)
        if self.budget < 0:
            raise _Refused(GraphQLError(
                "The document expands to too many fields through its fragments.",
                extensions={"code": "QUERY_TOO_COMPLEX"}))
        return grouped

    def merged(self, sets: Sequence[SelectionSetNode | None], level: int, limit: int) -> int:
        """The depth below `sets`, refusing a response name selected more than SAME_FIELD
        times in one merged set; stops counting past `limit`."""
        deepest = level - 1
        for name, fields in self.fields(sets).items():
            if len(fields) > SAME_FIELD:
                raise _Refused(GraphQLError(
                    f"`{clip(name)}` is selected {len(fields)} times in one selection; the "
                    f"limit is {SAME_FIELD}.", extensions={"code": "QUERY_TOO_COMPLEX"}))
            children = [f.selection_set for f in fields if f.selection_set is not None]
            depth = level
            if children and (not limit or level <= limit):
                depth = self.merged(children, level + 1, limit)
            deepest = max(deepest, depth)
        return deepest


def _aliases(selection_set: SelectionSetNode | None) -> int:
    if selection_set is None:
        return 0
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += (selection.alias is not None) + _aliases(selection.selection_set)
        elif isinstance(selection, InlineFragmentNode):
            count += _aliases(selection.selection_set)
    return count


def _arguments_in(selection_set: SelectionSetNode | None
                  ) -> Iterator[tuple[FieldNode, ArgumentNode]]:
    """Every argument written in `selection_set`, with its field (fragment spreads are
    left to their own definitions)."""
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            for argument in selection.arguments or ():
                yield selection, argument
            yield from _arguments_in(selection.selection_set)
        elif isinstance(selection, InlineFragmentNode):
            yield from _arguments_in(selection.selection_set)


def _literal_lists(document: DocumentNode, limits: Limits) -> Iterator[GraphQLError]:
    """List values written into the document longer than the list limit (the bulk limit
    for rows of `stockBulkUpdate`)."""
    def longest(value: ValueNode) -> int:
        if isinstance(value, ListValueNode):
            return max(len(value.values), *(longest(v) for v in value.values[:10_000]), 0)
        if isinstance(value, ObjectValueNode):
            return max((longest(f.value) for f in value.fields), default=0)
        return 0

    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
            for field, argument in _arguments_in(definition.selection_set):
                where = f"{field.name.value}.{argument.name.value}"
                allowed = _allowed_items(where, limits)
                size = longest(argument.value)
                if allowed and size > allowed:
                    yield _too_long(where, size, allowed)


def _allowed_items(where: str, limits: Limits) -> int:
    return limits.bulk_rows if where == "stockBulkUpdate.stocks" else limits.list_items


def _too_long(where: str, size: int, allowed: int) -> GraphQLError:
    return GraphQLError(f"A list in `{where}` has {size:,} items; the limit is {allowed:,}.",
                        extensions={"code": "LIST_TOO_LONG"})


# -- with the request's variables ----------------------------------------------------------


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)


def _list_variables(variables: Iterable[tuple[str, GraphQLInputType]],
                    values: Mapping[str, Any], limits: Limits) -> Iterator[GraphQLError]:
    """Variables holding a list longer than the limit, at any depth of an input object."""
    if not limits.list_items:
        return
    for name, graphql_type in variables:
        value = values.get(name)
        if not isinstance(value, list | dict):
            continue
        found = _longest_list(value, graphql_type)
        if found is None:
            continue
        size, item = found
        allowed = limits.bulk_rows if item == "StockBulkUpdateInput" else limits.list_items
        if allowed and size > allowed:
            yield _too_long(f"${name}", size, allowed)


def _longest_list(value: Any, graphql_type: GraphQLInputType) -> tuple[int, str] | None:
    """(length, item type name) of the longest list in `value`, read as `graphql_type`."""
    unwrapped = get_nullable_type(graphql_type)
    best: tuple[int, str] | None = None
    if isinstance(unwrapped, GraphQLList):
        if not isinstance(value, list):
            return _longest_list(value, unwrapped.of_type)  # a single item stands for a list
        item_type = unwrapped.of_type
        best = (len(value), get_named_type(item_type).name)
        if _holds_lists(item_type):
            for item in value:
                inner = _longest_list(item, item_type)
                if inner is not None and inner[0] > best[0]:
                    best = inner
        return best
    if isinstance(unwrapped, GraphQLInputObjectType) and isinstance(value, dict):
        for field_name, field in unwrapped.fields.items():
            if field_name in value and _holds_lists(field.type):
                inner = _longest_list(value[field_name], field.type)
                if inner is not None and (best is None or inner[0] > best[0]):
                    best = inner
    return best


def _holds_lists(graphql_type: GraphQLInputType, seen: frozenset[str] = frozenset()) -> bool:
    unwrapped = get_nullable_type(graphql_type)
    if is_list_type(unwrapped):
        return True
    if isinstance(unwrapped, GraphQLInputObjectType) and unwrapped.name not in seen:
        return any(_holds_lists(f.type, seen | {unwrapped.name})
                   for f in unwrapped.fields.values())
    return False


class Cost:
    """How many objects an operation may return: every field of an object type counts
    once per item of each list around it. Static where the document says it all; sizes
    written as variables (`first: $n`, `ids: $ids`) are read from each request."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode,
                 operation: OperationDefinitionNode) -> None:
        self.schema = schema
        self.fragments = {d.name.value: d for d in document.definitions
                          if isinstance(d, FragmentDefinitionNode)}
        self.operation = operation
        root = schema.get_root_type(operation.operation)
        self.root = root
        # the count is the same for every request unless a size is a variable; then the
        # same for every request whose sizes are alike (`_sizes`): kept per sizes
        self.size_variables = tuple(sorted({
            argument.value.name.value
            for definition in (operation, *self.fragments.values())
            for _, argument in _arguments_in(definition.selection_set)
            if argument.name.value in SIZE_ARGUMENTS
            and isinstance(argument.value, VariableNode)}))
        self.fixed = None if self.size_variables else self._total({})
        self._by_sizes: dict[tuple[Any, ...], int] = {}

    def total(self, variables: Mapping[str, Any]) -> int:
        if self.fixed is not None:
            return self.fixed
        key = tuple(_sizes(variables.get(name)) for name in self.size_variables)
        total = self._by_sizes.get(key)
        if total is None:
            total = self._total(variables)
            if len(self._by_sizes) < SIZES_KEPT:
                self._by_sizes[key] = total
        return total

    def _total(self, variables: Mapping[str, Any]) -> int:
        if self.root is None:
            return 0
        walk = _Walk(self.fragments, budget=10**7)
        try:
            return self._set(walk, [self.operation.selection_set], self.root, 1, variables, {})
        except _Refused:
            return 0  # the document check refused it already

    def _set(self, walk: _Walk, sets: Sequence[SelectionSetNode | None],
             parent: GraphQLNamedType, multiplier: int, variables: Mapping[str, Any],
             parent_args: Mapping[str, Any]) -> int:
        if not isinstance(parent, GraphQLObjectType):
            # an interface or union: count its fields as the widest of its object types
            possible = self.schema.get_possible_types(parent)  # type: ignore[arg-type]
            return max((self._set(walk, sets, p, multiplier, variables, parent_args)
                        for p in possible), default=0)
        total = 0
        for fields in walk.fields(sets).values():
            field = fields[0]
            definition = parent.fields.get(field.name.value)
            if definition is None:
                continue
            named = get_named_type(definition.type)
            if not isinstance(named, GraphQLObjectType) and not is_abstract_type(named):
                continue  # scalars and enums come with their object
            args = _arguments(field, variables)
            size = _size(parent.name, field.name.value, definition.type, args, parent_args)
            count = multiplier * size
            total += count
            children = [f.selection_set for f in fields if f.selection_set is not None]
            if children:
                total += self._set(walk, children, named, count, variables, args)
        return total


def _sizes(value: Any) -> Any:
    """What `_size` reads of a size variable's value: an int itself, a list its length;
    any other value counts as none was given."""
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple):
        return (len(value),)
    return None


def _arguments(field: FieldNode, variables: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for argument in field.arguments or ():
        node = argument.value
        if isinstance(node, VariableNode):
            values[argument.name.value] = variables.get(node.name.value)
        elif isinstance(node, IntValueNode):
            values[argument.name.value] = int(node.value)
        elif isinstance(node, ListValueNode):
            values[argument.name.value] = node.values
    return values


def _size(parent: str, name: str, graphql_type: Any, args: Mapping[str, Any],
          parent_args: Mapping[str, Any]) -> int:
    """How many items the field may hold (1 for a single object)."""
    if name == "edges" and parent.endswith("Connection"):
        first = parent_args.get("first")
        return min(first, MAX_PAGE) if isinstance(first, int) and first >= 0 else DEFAULT_PAGE
    if not is_list_type(get_nullable_type(graphql_type)):
        return 1
    if parent == "Query" and name == "nodes":
        ids = args.get("ids")
        return len(ids) if isinstance(ids, list | tuple) else 1
    if parent == "StockBulkUpdatePayload":
        # its rows (results) and every row's errors (errors, when everything is rejected)
        rows = parent_args.get("stocks")
        count = len(rows) if isinstance(rows, list | tuple) else 1
        return count * (ERRORS_PER_ROW if name == "errors" else 1)
    if parent == "StockBulkResult" or get_named_type(graphql_type).name == "StockyardError":
        return ERRORS_PER_ROW
    return LIST_SIZES.get(f"{parent}.{name}", DEFAULT_LIST)



# -- the HTTP request ----------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class RequestLimits:
    """ASGI middleware: HTTP 431 for headers over `header_bytes` together, HTTP 413 for a
    body over `body_bytes` (by its Content-Length, or counted as it arrives), answered
    before the app reads more than the limit."""

    def __init__(self, app: ASGIApp, body_bytes: int, header_bytes: int) -> None:
        self.app = app
        self.body_bytes = body_bytes
        self.header_bytes = header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if self.header_bytes and sum(len(k) + len(v) + 4 for k, v in headers) \
                > self.header_bytes:
            await _refuse(send, 431, "REQUEST_HEADERS_TOO_LARGE",
                          f"The request headers exceed {self.header_bytes:,} bytes.")
            return
        limit = self.body_bytes
        if not limit:
            await self.app(scope, receive, send)
            return
        for key, value in headers:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                await _refuse(send, 413, "REQUEST_TOO_LARGE",
                              f"The request body exceeds {limit:,} bytes.")
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLarge:
            if not started:
                await _refuse(send, 413, "REQUEST_TOO_LARGE",
                              f"The request body exceeds {limit:,} bytes.")


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
