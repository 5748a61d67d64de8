"""The framework's floor of one read: bare graphql-core walking exactly the answer the
server gave (README: "Read workloads", "Floor").

graphql-core's execution costs about 8 us a field on the bench machine whatever the
server does around it, so a dashboard page of ~400 fields cannot be served faster than
graphql-core walks it. `floor_seconds` times that walk for one request: `execute` of the
request's document against a schema built from the served schema's SDL, with no resolver
of ours (each field's value is read from the answer's `data` by its response key, each
abstract type from the answer's `__typename`), then `json.dumps` of the result, as the
server serializes too. Parsing and validation are left out: the server caches them by
query text. The floor's `data` must equal the answer's, so it did the same work.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from collections.abc import Callable
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLAbstractType,
    GraphQLResolveInfo,
    GraphQLSchema,
    build_schema,
    execute,
    parse,
    validate,
)

ROUNDS = 15  # batches timed; the floor is their median
BATCH_SECONDS = 0.03  # each batch runs the document this long, at least once


class FloorMismatch(Exception):
    """The floor could not walk the answer: the document does not fit the schema, or the
    answer lacks a field, has one more, or names no type for an abstract field."""


@functools.cache
def served_schema() -> GraphQLSchema:
    """The served schema rebuilt from its SDL: its types, fields and arguments, no
    resolvers, scalars that pass values through."""
    from api.schema import schema

    return build_schema(schema.as_str())


@functools.lru_cache(maxsize=64)
def _document(query: str) -> DocumentNode:
    """`query` parsed and validated once (the server caches both by query text)."""
    document = parse(query)
    errors = validate(served_schema(), document)
    if errors:
        raise FloorMismatch(f"document does not fit the served schema: {errors[0].message}")
    return document


def _read(source: Any, info: GraphQLResolveInfo[Any], **_args: Any) -> Any:
    """A field's value: the answer's, under its response key (alias or field name)."""
    try:
        return source[info.path.key]
    except KeyError:
        raise FloorMismatch(f"the answer has no {info.path.key!r}") from None


def _type_of(value: Any, info: GraphQLResolveInfo[Any], abstract_type: GraphQLAbstractType
             ) -> str:
    """An abstract field's type: the answer's `__typename`, else the only possible type."""
    name = value.get("__typename") if isinstance(value, dict) else None
    if isinstance(name, str):
        return name
    possible = info.schema.get_possible_types(abstract_type)
    if len(possible) == 1:
        return possible[0].name
    raise FloorMismatch(f"{abstract_type.name} at {info.path.as_list()}: the document must "
                        "select __typename for the floor to know the type")


def _walk(schema: GraphQLSchema, document: DocumentNode, variables: dict[str, Any] | None,
          operation: str | None, data: dict[str, Any]) -> ExecutionResult:
    result = execute(schema, document, root_value=data, variable_values=variables,
                     operation_name=operation, field_resolver=_read, type_resolver=_type_of)
    if isawaitable(result):  # never with these resolvers; keeps the type exact
        raise FloorMismatch("graphql-core did not complete synchronously")
    return result


def _walk_json(schema: GraphQLSchema, document: DocumentNode,
               variables: dict[str, Any] | None, operation: str | None,
               data: dict[str, Any]) -> str:
    """One execution and its serialization: what is timed."""
    return json.dumps({"data": _walk(schema, document, variables, operation, data).data})


def _per_execution(run: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        run()
    return (time.perf_counter() - start) / n


def floor_seconds(document: str, variables: dict[str, Any] | None, operation: str | None,
                  data: dict[str, Any], rounds: int = ROUNDS) -> float:
    """Median seconds of one bare graphql-core execution of `document` (with `variables`,
    `operation`) that walks `data`, the answer's `data`, plus `json.dumps`; over `rounds`
    batches of at least BATCH_SECONDS each. Raises FloorMismatch when the walk does not
    give `data` back (a field missing or extra, a type unknown)."""
    schema = served_schema()
    parsed = _document(document)
    first = _walk(schema, parsed, variables, operation, data)
    if first.errors:
        raise FloorMismatch(f"graphql-core could not walk the answer: {first.errors[0]}")
    if first.data != data:
        raise FloorMismatch("graphql-core's data differs from the answer (a field the "
                            "document does not select?)")
    run = functools.partial(_walk_json, schema, parsed, variables, operation, data)
    once = _per_execution(run, 1)
    n = max(1, math.ceil(BATCH_SECONDS / max(once, 1e-7)))
    _per_execution(run, n)  # warm
    return statistics.median(_per_execution(run, n) for _ in range(max(1, rounds)))


def answer_fields(value: Any) -> int:
    """Response entries of an answer: every key of every object in it (the fields
    graphql-core completes)."""
    if isinstance(value, dict):
        return len(value) + sum(answer_fields(v) for v in value.values())
    if isinstance(value, list):
        return sum(answer_fields(v) for v in value)
    return 0
