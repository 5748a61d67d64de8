"""A shortcut through strawberry for the common request: a JSON POST of a known-valid document.

Strawberry wraps every operation in per-request extension objects, an execution context and
a middleware manager; for a small request that costs more than graphql-core's own execution.
The lane calls graphql-core directly, logs and masks errors as strawberry does, and answers
through the view's own hooks. Whatever it is not sure of (GET, batches, other content types,
streaming, `extensions`, documents that are new and invalid) it leaves to strawberry.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

from cross_web import HTTPException
from graphql import (
    DocumentNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
)
from starlette.requests import Request
from starlette.responses import Response
from strawberry.asgi import GraphQL
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import MaskErrors
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema import Schema
from strawberry.schema._graphql_core import execution_context_class_kwargs
from strawberry.schema.schema import _coerce_error
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType as AllowedOperation
from strawberry.utils.await_maybe import await_maybe

from api.limits import CACHED_CHARS, UNLIMITED, Gate, GateExtension
from api.observe import current, label_of

CACHE_SIZE = 512
"""Valid documents kept, by query text (as many as the schema's ParserCache keeps)."""

_KEYS = frozenset({"query", "variables", "operationName", "extensions"})
_RUNNABLE = (OperationType.QUERY, OperationType.MUTATION)
_POST = AllowedOperation.from_http("POST")
# strawberry's steps the lane stands in for: a view that overrides one keeps strawberry's path
_REPLACED = ("run", "execute_operation", "execute_single", "parse_http_body",
             "is_request_allowed")


class _Document(NamedTuple):
    """A parsed document that passed strawberry's validation, with what the lane may run."""

    document: DocumentNode
    named: dict[str, OperationDefinitionNode]  # queries and mutations, by name
    only: OperationDefinitionNode | None  # the sole operation, when a query or mutation
    labels: dict[int, str | None]  # the access line's label of each, by id (api/observe.py)


class FastLane:
    """Answers the requests it can exactly as `view.run` would, skipping strawberry's wrapper."""

    def __init__(self, view: GraphQL[Any, Any], cache_size: int = CACHE_SIZE) -> None:
        self.view = view
        schema = view.schema
        assert isinstance(schema, Schema)
        self._schema = schema
        self._masks = _masks(view)
        self._cache: OrderedDict[str, _Document] = OrderedDict()
        self._cache_size = cache_size
        # the app's gate (api/limits.py); a plain view's lane validates without limits
        gate = getattr(getattr(view, "services", None), "gate", None)
        self._gate = gate if isinstance(gate, Gate) else Gate.of(schema, UNLIMITED, cache_size)
        self._execute_kwargs: dict[str, Any] = {
            "is_awaitable": optimized_is_awaitable,
            **execution_context_class_kwargs(schema.execution_context_class),
            **schema._get_custom_context_kwargs(None),
        }

    @property
    def enabled(self) -> bool:
        """False when strawberry would do something the lane does not (see `_masks`)."""
        return self._masks is not None

    async def respond(self, request: Request) -> Response | None:
        """The response `view.run(request)` would give, or None: strawberry must answer.

        Reads the body, which starlette keeps on `request` for strawberry to read again.
        """
        if self._masks is None or request.method != "POST":
            return None
        content_type = request.headers.get("content-type")
        # strawberry looks for "application/json" inside the media type, case-sensitively
        if content_type != "application/json" and (
                content_type is None or parse_content_type(content_type)[0] != "application/json"):
            return None
        view = self.view
        if (view._stream_transport_map
                and view._get_stream_transport_from_headers(request.headers) is not None):
            return None
        try:
            data = view.parse_json(await request.body())
        except HTTPException:
            return None
        if type(data) is not dict or not _KEYS.issuperset(data):
            return None
        query, variables = data.get("query"), data.get("variables")
        name = data.get("operationName")
        if (type(query) is not str or data.get("extensions") is not None
                or not (variables is None or type(variables) is dict)
                or not (name is None or type(name) is str)):
            return None
        document = self._document(query)
        if document is None:
            return None
        if name is None:
            # strawberry names the operation itself when the request does not
            operation = document.only
            operation_name = operation.name.value if operation and operation.name else None
        else:
            operation, operation_name = document.named.get(name), name
        if operation is None:
            return None
        entry = current()
        if entry is not None:
            entry.operation, entry.label = operation_name, document.labels[id(operation)]

        root_value = await view.get_root_value(request)
        sub_response = await view.get_sub_response(request)
        context = await view.get_context(request, response=sub_response)
        result = await self._execute(document.document, query, variables, name,
                                     operation_name, context, root_value)
        response_data = await view.process_result(request=request, result=result)
        if result.errors:
            view._handle_errors(result.errors, response_data)
        return view.create_response(response_data=response_data, sub_response=sub_response)

    def _document(self, query: str) -> _Document | None:
        """The cached valid document of `query`; None when the gate refuses it (strawberry
        then answers with the gate's errors)."""
        cache = self._cache
        document = cache.get(query)
        if document is not None:
            cache.move_to_end(query)
            return document
        checked = self._gate.check(query)
        if checked.document is None or checked.errors:
            return None
        parsed = checked.document
        operations = [d for d in parsed.definitions if isinstance(d, OperationDefinitionNode)]
        runnable = [op for op in operations if op.operation in _RUNNABLE]
        document = _Document(
            parsed, {op.name.value: op for op in runnable if op.name},
            runnable[0] if len(operations) == 1 and runnable else None,
            {id(op): label_of(op) for op in runnable})
        if len(query) <= CACHED_CHARS:
            cache[query] = document
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return document

    async def _execute(self, document: DocumentNode, query: str,
                       variables: dict[str, Any] | None, provided_name: str | None,
                       operation_name: str | None, context: Any,
                       root_value: Any) -> ExecutionResult:
        """What `Schema.execute` returns for a valid document, errors logged and masked."""
        schema = self._schema
        try:
            # an empty middleware manager, which strawberry would pass, wraps no resolver
            outcome = await await_maybe(execute(
                schema._schema, document, root_value=root_value, context_value=context,
                variable_values=variables, operation_name=operation_name,
                **self._execute_kwargs))
        except Exception as exc:
            # strawberry reports it unmasked: MaskErrors only sees results, not exceptions
            failure = [_coerce_error(exc)]
            self._log(failure, None, query, variables, provided_name, document, context,
                      root_value)
            return PreExecutionError(data=None, errors=failure, extensions={})
        errors = outcome.errors
        if errors:
            self._log(errors, outcome, query, variables, provided_name, document, context,
                      root_value)
            assert self._masks is not None
            for mask in self._masks:
                errors = [mask.anonymise_error(e) if mask.should_mask_error(e) else e
                          for e in errors]
        # the lane's allowed extensions report no results of their own
        return ExecutionResult(data=outcome.data, errors=errors, extensions={})

    def _log(self, errors: list[GraphQLError], outcome: Any, query: str,
             variables: dict[str, Any] | None, provided_name: str | None,
             document: DocumentNode, context: Any, root_value: Any) -> None:
        """Strawberry's error logging, with the execution context it would have by then."""
        schema = self._schema
        schema._process_errors(errors, ExecutionContext(
            query=query, schema=schema, allowed_operations=_POST, context=context,
            variables=variables, root_value=root_value, provided_operation_name=provided_name,
            graphql_document=document, pre_execution_errors=errors, result=outcome))


def _masks(view: GraphQL[Any, Any]) -> tuple[MaskErrors, ...] | None:
    """The schema's MaskErrors in the order strawberry applies them; None when the lane
    can't stand in for strawberry: a customised schema (beyond `process_errors`, which the
    lane calls too) or view, incremental delivery, or an extension other than GateExtension
    and MaskErrors (directives add one)."""
    schema = view.schema
    if (not isinstance(schema, Schema) or not _plain(type(schema))
            or schema.config.enable_experimental_incremental_execution
            or any(getattr(type(view), name) is not getattr(GraphQL, name)
                   for name in _REPLACED)):
        return None
    extensions = schema.get_extensions()
    if any(type(e) not in (GateExtension, MaskErrors) for e in extensions):
        return None
    # their on_operation hooks unwind last-entered first
    return tuple(e for e in reversed(extensions) if isinstance(e, MaskErrors))


def _plain(schema_type: type) -> bool:
    """Strawberry's Schema, or a subclass of it overriding `process_errors` only."""
    return schema_type is Schema or (
        schema_type.__bases__ == (Schema,)
        and not {name for name in vars(schema_type) if not name.startswith("_")}
        - {"process_errors"})
