"""api/coercion.py: the flat loop gives graphql-core's values, and graphql-core's errors.

Every comparison is with graphql-core's generic coercion on the same input: values equal in
type, key and key order; for an input it refuses, the same errors word for word.
"""

from __future__ import annotations

from typing import Any

import pytest
import strawberry
from graphql import (
    DocumentNode,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    GraphQLString,
    Undefined,
    build_schema,
    parse,
)
from graphql.utilities import coerce_input_value
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from api.coercion import (
    MIN_ROWS,
    FastCoercionExecutor,
    build_during_coercion,
    coerce_long_lists,
    coerce_rows,
)
from api.inputs import StockBulkUpdateInput
from api.schema import schema
from api.types import OrderTypeEnum
from domain.models import OrderType
from tests.api.test_bulk_update import BULK, bulk, figures, many_variants, row
from tests.api.test_stock_operations import codes, snapshot
from tests.conftest import Api
from tests.factories import gid, shop

SDL = build_schema("""
  input Row {
    id: ID!
    name: String!
    count: Int!
    ratio: Float
    flag: Boolean = true
    note: String = "n/a"
    ref: ID
    level: Int! = 3
    share: Float = 0.5
  }
  input Custom { when: Date! }
  scalar Date
  type Query {
    rows(rows: [Row!]!, other: Int): Int
    maybeRows(rows: [Row]): Int
    custom(rows: [Custom!]!): Int
  }
""")
ROW = SDL.type_map["Row"]
assert isinstance(ROW, GraphQLInputObjectType)
ROWS = GraphQLNonNull(GraphQLList(GraphQLNonNull(ROW)))
MAYBE_ROWS = GraphQLList(ROW)
ROWS_QUERY = parse("query($rows: [Row!]!, $other: Int) { rows(rows: $rows, other: $other) }")
MAYBE_QUERY = parse("query($rows: [Row]) { maybeRows(rows: $rows) }")
GENERIC = StrawberryGraphQLCoreExecutionContext  # strawberry's default, graphql-core's build


def typed(value: Any) -> Any:
    """`value` with every scalar's type and every dict's key order made part of equality."""
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, dict):
        return [(k, typed(v)) for k, v in value.items()]
    return (type(value), value)


def fast_equals_generic(value: Any, type_: GraphQLInputType) -> Any:
    """Assert the flat loop gives graphql-core's value or defers to it; the flat value."""
    fast = coerce_rows(value, type_)
    if fast is not Undefined:
        assert typed(fast) == typed(coerce_input_value(value, type_))
    return fast


def valid_row(i: int) -> dict[str, Any]:
    return {"id": f"R{i}", "name": f"row {i}", "count": i, "ratio": i / 4}


def with_row(n: int, at: int, bad: Any) -> list[Any]:
    rows: list[Any] = [valid_row(i) for i in range(n)]
    rows[at] = bad
    return rows


def sources(executor: Any) -> dict[str, tuple[str, str, Any]]:
    return {name: (str(source.signature.type), source.signature.name, source.value)
            for name, source in executor.variable_values.sources.items()}


def same_build(graphql_schema: GraphQLSchema, document: DocumentNode,
               variables: dict[str, Any], operation_name: str | None = None) -> Any:
    """Variable values, or the errors as clients see them; asserted equal to graphql-core's."""
    fast, generic = (executor.build(graphql_schema, document, raw_variable_values=variables,
                                    operation_name=operation_name)
                     for executor in (FastCoercionExecutor, GENERIC))
    if isinstance(generic, list):
        assert isinstance(fast, list)
        assert [e.formatted for e in fast] == [e.formatted for e in generic]
        return [e.formatted for e in fast]
    assert not isinstance(fast, list)
    assert typed(fast.variable_values.coerced) == typed(generic.variable_values.coerced)
    assert sources(fast) == sources(generic)
    return fast.variable_values.coerced


# ------------------------------------------------------------------------ valid input

def test_defaults_omitted_and_null_fields_match_graphql_core() -> None:
    rows = [
        {"id": "a", "name": "all", "count": 1, "ratio": 1.5, "flag": False, "note": "x",
         "ref": "r", "level": 9, "share": 2.0},
        {"id": "b", "name": "defaults", "count": 2},
        {"id": "c", "name": "nulls", "count": 3, "ratio": None, "flag": None, "note": None,
         "ref": None, "share": None},
        {"count": -(2**31), "name": "", "id": "d"},   # other key order, Int bounds
        {"id": "e", "name": "max", "count": 2**31 - 1, "level": 0},
    ]

    fast = fast_equals_generic(rows, ROWS)

    assert fast is not Undefined
    assert fast[1] == {"id": "b", "name": "defaults", "count": 2, "flag": True, "note": "n/a",
                       "level": 3, "share": 0.5}
    assert fast[2] == {"id": "c", "name": "nulls", "count": 3, "ratio": None, "flag": None,
                       "note": None, "ref": None, "level": 3, "share": None}


def test_id_given_as_int_becomes_a_string_and_float_given_as_int_a_float() -> None:
    rows = [{"id": 7, "name": "n", "count": 1, "ratio": 3, "ref": -12, "share": 2**53}]

    fast = fast_equals_generic(rows, ROWS)

    assert typed(fast[0]["id"]) == (str, "7")
    assert typed(fast[0]["ref"]) == (str, "-12")
    assert typed(fast[0]["ratio"]) == (float, 3.0)
    assert typed(fast[0]["share"]) == (float, float(2**53))


def test_null_items_of_a_nullable_list_stay_null() -> None:
    rows = [valid_row(1), None, valid_row(2)]

    long = {"rows": with_row(100, 50, None)}

    fast = fast_equals_generic(rows, MAYBE_ROWS)
    coerced = same_build(SDL, MAYBE_QUERY, long)

    assert fast[1] is None and fast[0]["name"] == "row 1"
    assert list(coerce_long_lists(SDL, MAYBE_QUERY, long, None)) == ["rows"]
    assert coerced["rows"][50] is None


def test_out_name_keys_and_out_type_builds_each_row_once() -> None:
    built: list[dict[str, Any]] = []

    def out_type(value: dict[str, Any]) -> tuple[str, ...]:
        built.append(value)
        return tuple(value)

    pair = GraphQLInputObjectType("Pair", {
        "leftId": GraphQLInputField(GraphQLNonNull(GraphQLID), out_name="left_id"),
        "label": GraphQLInputField(GraphQLString, default_value="none", out_name="text")},
        out_type=out_type)
    pairs = GraphQLList(GraphQLNonNull(pair))

    fast = coerce_rows([{"leftId": 1}, {"leftId": "2", "label": "b"}], pairs)
    fast_count = len(built)
    generic = coerce_input_value([{"leftId": 1}, {"leftId": "2", "label": "b"}], pairs)

    assert fast == generic == [("left_id", "text"), ("left_id", "text")]
    assert built[:fast_count] == [{"left_id": "1", "text": "none"},
                                  {"left_id": "2", "text": "b"}]
    assert coerce_rows([{"leftId": 1}, {"leftId": True}], pairs) is Undefined
    assert len(built) == 4   # a refused list builds nothing: graphql-core will


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**33), 2**33) | st.text(max_size=3)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner,
                                                                 max_size=2),
    max_leaves=3)
FIELD_VALUES = {
    "id": st.text(max_size=4) | st.integers(-(2**70), 2**70),
    "name": st.text(max_size=4),
    "count": st.integers(-(2**31), 2**31 - 1),
    "ratio": st.none() | st.floats(allow_nan=False, allow_infinity=False)
             | st.integers(-(2**53), 2**53),
    "flag": st.none() | st.booleans(),
    "note": st.none() | st.text(max_size=4),
    "ref": st.none() | st.text(max_size=4) | st.integers(-(2**40), 2**40),
    "level": st.integers(-(2**31), 2**31 - 1),
    "share": st.none() | st.floats(allow_nan=False, allow_infinity=False),
}
REQUIRED = {"id", "name", "count"}


@st.composite
def valid_rows(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.permutations(list(FIELD_VALUES)))
    return {k: draw(FIELD_VALUES[k]) for k in keys
            if k in REQUIRED or draw(st.booleans())}


@settings(max_examples=300, deadline=None)
@given(st.lists(valid_rows(), max_size=8))
def test_valid_rows_take_the_flat_loop_and_match_graphql_core(rows: list[dict[str, Any]]) -> None:
    assert fast_equals_generic(rows, ROWS) is not Undefined


@settings(max_examples=500, deadline=None)
@given(st.lists(valid_rows(), min_size=1, max_size=4), st.data())
def test_any_odd_value_matches_graphql_core_or_defers_to_it(
    rows: list[Any], data: st.DataObject,
) -> None:
    i = data.draw(st.integers(0, len(rows) - 1))
    key = data.draw(st.sampled_from([*FIELD_VALUES, "unknown", ""]))
    change = data.draw(st.sampled_from(["set", "drop", "replace row", "insert row"]))
    if change == "set":
        rows[i] = {**rows[i], key: data.draw(JSON)}
    elif change == "drop":
        rows[i] = {k: v for k, v in rows[i].items() if k != key}
    else:
        rows[i:i + (change == "replace row")] = [data.draw(JSON)]

    fast_equals_generic(rows, ROWS)
    fast_equals_generic(rows, MAYBE_ROWS)


# ---------------------------------------------------------------- through the executor

def test_executor_coerces_a_long_list_in_the_flat_loop_like_graphql_core() -> None:
    rows = [valid_row(i) for i in range(MIN_ROWS + 1)]
    variables = {"rows": rows, "other": 5}

    coerced = same_build(SDL, ROWS_QUERY, variables)

    assert list(coerce_long_lists(SDL, ROWS_QUERY, variables, None)) == ["rows"]
    assert coerced["other"] == 5 and len(coerced["rows"]) == MIN_ROWS + 1


def test_short_lists_and_other_types_are_left_to_graphql_core() -> None:
    short = {"rows": [valid_row(i) for i in range(MIN_ROWS)]}
    custom = parse("query($rows: [Custom!]!) { custom(rows: $rows) }")
    dates = {"rows": [{"when": "2024-01-01"}] * 100}

    assert coerce_long_lists(SDL, ROWS_QUERY, short, None) == {}
    assert coerce_long_lists(SDL, custom, dates, None) == {}
    same_build(SDL, ROWS_QUERY, short)
    same_build(SDL, custom, dates)


@pytest.mark.parametrize("odd", [{"id": 1.0}, {"count": 3.0}, {"ratio": float("inf")}])
def test_values_the_flat_loop_is_unsure_of_go_to_graphql_core(odd: dict[str, Any]) -> None:
    variables = {"rows": with_row(100, 42, {**valid_row(42), **odd})}

    outcome = same_build(SDL, ROWS_QUERY, variables)

    assert coerce_long_lists(SDL, ROWS_QUERY, variables, None) == {}
    assert isinstance(outcome, dict) == ("ratio" not in odd)   # an infinite Float is an error


BAD_ROWS = {
    # name: (rows, graphql-core's message)
    "wrong type deep in the list": (
        with_row(100, 87, {**valid_row(87), "count": "7"}),
        "Variable '$rows' has invalid value at [87].count: Int cannot represent non-integer "
        "value: '7'"),
    "unknown field": (
        with_row(100, 3, {**valid_row(3), "colour": "red"}),
        "Variable '$rows' has invalid value at [3]: Expected value of type 'Row' not to "
        "include unknown field 'colour', found: {'id': 'R3', 'name': 'row 3', 'count': 3, "
        "'ratio': 0.75, 'colour': 'red'}."),
    "missing required field": (
        with_row(100, 99, {"id": "x", "count": 1}),
        "Variable '$rows' has invalid value at [99]: Expected value of type 'Row' to include "
        "required field 'name', found: {'id': 'x', 'count': 1}."),
    "Int above 32 bits": (
        with_row(100, 50, {**valid_row(50), "level": 2**31}),
        "Variable '$rows' has invalid value at [50].level: Int cannot represent non 32-bit "
        "signed integer value: 2147483648"),
    "bool for an Int": (
        with_row(100, 1, {**valid_row(1), "count": True}),
        "Variable '$rows' has invalid value at [1].count: Int cannot represent non-integer "
        "value: True"),
    "null item": (with_row(100, 0, None), None),
    "not an object": (with_row(100, 64, "row"), None),
    "null for a non-null field": (with_row(100, 10, {**valid_row(10), "name": None}), None),
    "int for a String": (with_row(100, 10, {**valid_row(10), "name": 10}), None),
    "Float too large": (with_row(100, 10, {**valid_row(10), "ratio": 2**1024}), None),
    "Float losing precision": (with_row(100, 10, {**valid_row(10), "ratio": 2**53 + 1}), None),
}


@pytest.mark.parametrize("name", list(BAD_ROWS))
def test_a_bad_row_gets_graphql_core_errors(name: str) -> None:
    rows, message = BAD_ROWS[name]
    variables = {"rows": rows}

    errors = same_build(SDL, ROWS_QUERY, variables)

    assert coerce_long_lists(SDL, ROWS_QUERY, variables, None) == {}
    assert isinstance(errors, list) and len(errors) == 1
    if message is not None:
        assert errors[0]["message"] == message


def test_errors_of_other_variables_are_unchanged_by_a_fast_list() -> None:
    variables = {"rows": [valid_row(i) for i in range(100)], "other": "five"}

    errors = same_build(SDL, ROWS_QUERY, variables)

    assert [e["message"] for e in errors] == [
        "Variable '$other' has invalid value: Int cannot represent non-integer value: "
        "'five'"]


def test_the_operation_is_picked_as_graphql_core_picks_it() -> None:
    two = parse("""query A($rows: [Row!]!) { rows(rows: $rows) }
                   query B($rows: [Row]) { maybeRows(rows: $rows) }""")
    rows: list[Any] = [valid_row(i) for i in range(100)]
    rows[9] = None   # only B takes it

    outcomes = {name: same_build(SDL, two, {"rows": rows}, name) for name in ("A", "B", None, "C")}

    assert list(coerce_long_lists(SDL, two, {"rows": rows}, "B")) == ["rows"]
    assert outcomes["B"]["rows"][9] is None
    assert [len(outcomes[name]) for name in ("A", None, "C")] == [1, 1, 1]   # errors


# ---------------------------------------------------------------- the real schema

def stock_rows(n: int) -> list[dict[str, Any]]:
    return [{"warehouseId": gid("Warehouse", 1), "quantity": i,
             **({"variantId": gid("ProductVariant", i)} if i % 2 else {"sku": f"S-{i}"})}
            for i in range(n)]


def test_bulk_rows_reach_the_resolver_as_inputs_whichever_path_coerced_them() -> None:
    document = parse(BULK)
    graphql_schema = schema._schema
    assert issubclass(schema.execution_context_class, FastCoercionExecutor)

    for n in (3, 100):
        coerced = same_build(graphql_schema, document, {"stocks": stock_rows(n)})["stocks"]

        assert all(type(r) is StockBulkUpdateInput for r in coerced)
        assert coerced[1] == StockBulkUpdateInput(
            warehouse_id=strawberry.ID(gid("Warehouse", 1)), quantity=1,
            variant_id=strawberry.ID(gid("ProductVariant", 1)), sku=None, force=False)


@pytest.mark.parametrize("bad", [{"quantity": "1"}, {"quantity": 2**31}, {"force": 1},
                                 {"colour": "red"}, {"warehouseId": None}, {"sku": 5}])
def test_a_bad_bulk_row_gets_graphql_core_errors(bad: dict[str, Any]) -> None:
    rows: list[Any] = stock_rows(200)
    rows[150] = {**rows[150], **bad}

    errors = same_build(schema._schema, parse(BULK), {"stocks": rows})

    assert len(errors) == 1 and errors[0]["message"].startswith(
        "Variable '$stocks' has invalid value at [150]")


@strawberry.input
class Inner:
    n: int


@strawberry.input
class Outer:
    kind: OrderTypeEnum  # type: ignore[valid-type]
    inner: list[Inner]
    note: str | None = "none"
    maybe_kind: OrderTypeEnum | None = None  # type: ignore[valid-type]


@strawberry.type
class Echo:
    @strawberry.field
    def echo(self, outer: Outer) -> str:
        return repr(outer)


def test_inputs_built_during_coercion_are_strawberrys_inputs_field_for_field() -> None:
    query = """query($o: Outer!) { echo(outer: $o) }"""
    variables = {"o": {"kind": "QUOTE", "inner": [{"n": 1}, {"n": 2}], "maybeKind": "OFFER"}}
    plain, fast = strawberry.Schema(query=Echo), strawberry.Schema(query=Echo)
    build_during_coercion(fast, Inner, Outer)

    by_strawberry = plain.execute_sync(query, variables)
    during_coercion = fast.execute_sync(query, variables)

    assert by_strawberry.errors is None
    assert during_coercion.data == by_strawberry.data
    assert by_strawberry.data == {"echo": repr(Outer(
        kind=OrderType.QUOTE, inner=[Inner(n=1), Inner(n=2)], note="none",
        maybe_kind=OrderType.OFFER))}


def test_a_nested_input_strawberry_would_convert_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Outer\.inner"):
        build_during_coercion(strawberry.Schema(query=Echo), Outer)


# ------------------------------------------------------------------------ end to end

@pytest.fixture(params=[True, False], ids=["fast paths on", "fast paths off"])
def fast_paths(request: pytest.FixtureRequest) -> bool:
    """The same answers with STOCKYARD_FAST_PATHS on and off."""
    return bool(request.param)


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["REJECT_EVERYTHING", "REJECT_FAILED_ROWS"])
async def test_a_long_bulk_update_with_one_bad_row_follows_the_error_policy(
    api: Api, policy: str,
) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    variants = many_variants(api, s, 50)
    rows = [r for i, (vid, sku) in enumerate(variants)
            for r in (row(s.w1, i + 1, sku=sku), row(s.w2, i + 2, variant=vid))]
    rows[70] = row(s.w1, -1, variant=variants[35][0])
    before = snapshot(api)

    payload = await bulk(api, rows, policy)

    assert len(rows) > MIN_ROWS
    assert [codes(r["errors"]) for r in payload["results"]] == [
        [("INVALID", "stocks.70.quantity")] if i == 70 else [] for i in range(len(rows))]
    if policy == "REJECT_EVERYTHING":
        assert payload["count"] == 0
        assert codes(payload["errors"]) == [("INVALID", "stocks.70.quantity")]
        assert snapshot(api) == before
    else:
        assert payload["count"] == len(rows) - 1
        assert payload["errors"] == []
        assert [figures(r)[2] if i != 70 else None  # type: ignore[index]
                for i, r in enumerate(payload["results"])] == [
            r["quantity"] if i != 70 else None for i, r in enumerate(rows)]
        assert s.world.stock(variants[35][0], s.w2) == (37, 0)
        assert api.db.scalar("SELECT COUNT(*) FROM stock WHERE variant_id = :v",
                             v=variants[35][0]) == 1   # its w1 row was the bad one


@pytest.mark.anyio
async def test_a_long_bulk_update_with_a_mistyped_row_is_graphql_cores_error(api: Api) -> None:
    s = shop(api.db, stock1=10)
    rows = [row(s.w1, 1, sku=f"S-{i}") for i in range(100)]
    rows[80] = {**rows[80], "quantity": 1.5}
    before = snapshot(api)

    response = await api.post(BULK, {"stocks": rows})

    assert response.status_code == 200
    assert [e["message"] for e in response.json()["errors"]] == [
        "Variable '$stocks' has invalid value at [80].quantity: Int cannot represent "
        "non-integer value: 1.5"]
    assert snapshot(api) == before


@pytest.mark.anyio
async def test_bulk_rows_written_inline_in_the_query_still_apply(api: Api) -> None:
    s = shop(api.db, stock1=10)
    query = f"""mutation {{ stockBulkUpdate(stocks: [
        {{warehouseId: "{gid("Warehouse", s.w1)}", variantId: "{gid("ProductVariant", s.variant)}",
          quantity: 4}}]) {{ count errors {{ code }} }} }}"""

    payload = (await api.gql(query))["stockBulkUpdate"]

    assert payload == {"count": 1, "errors": []}
    assert s.world.stock(s.variant, s.w1) == (4, 0)
