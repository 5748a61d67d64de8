"""Reads answer the same through the fast paths' direct resolvers and prefetching
(api/direct.py, api/lookahead.py, `types.prefetch`) as through strawberry's own path."""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from graphql import execute as graphql_execute
from graphql import parse
from graphql.execution import executor as executor_module
from graphql.execution.collect_fields import FragmentDetails
from graphql.pyutils import Undefined
from strawberry.extensions import SchemaExtension
from strawberry.utils.await_maybe import await_maybe

from api import direct, lookahead
from api.loaders import NOT_LOADED, Loader, held, now_or_later
from api.lookahead import arguments_of
from api.schema import FastExecutor, schema, schema_for
from api.types import PREFETCHED
from domain.models import Role
from tests.conftest import Api, Database, serve
from tests.factories import gid, shop

pytestmark = pytest.mark.anyio

AVAILABILITY = """query($skus: [String!], $c: String) { productVariants(skus: $skus, first: 5) {
  edges { node { sku de: quantityAvailable(country: "de") fr: quantityAvailable(country: $c)
                 all: quantityAvailable ...Again } } } }
fragment Again on ProductVariant { again: quantityAvailable(country: "DE") }"""
BAD_COUNTRY = """query($skus: [String!]) { productVariants(skus: $skus) {
  edges { node { sku quantityAvailable(country: "XX") } } } }"""
NODES = """query($ids: [ID!]!) { nodes(ids: $ids) { __typename id
  ... on ProductVariant { sku quantityAvailable(country: "FR") }
  ... on Stock { quantityAvailable variant { sku } warehouse { name } }
  ... on Warehouse { name } } }"""
PRODUCT = """query($id: ID!) { node(id: $id) { ... on Product { name variants {
  sku quantityAvailable(country: "DE") product { name } } } } }"""
DASHBOARD = """{ stocks(first: 50) { edges { node { quantity variant { sku product { name } }
  warehouse { name } } } }
  stockMovements(first: 50) { edges { node { quantityChange variant { sku }
  warehouse { name } } } } }"""


@pytest.fixture
async def strawberrys(db: Database) -> Any:
    """The same database served without the fast paths (strawberry's resolvers)."""
    async with serve(db, fast_paths=False) as off:
        yield off


async def test_reads_answer_alike_with_and_without_the_direct_resolvers(
        api: Api, strawberrys: Api) -> None:
    s = shop(api.db, stock1=7, stock2=5)
    w3 = s.world.warehouse(s.seller, [s.world.zone(["FR"])])
    second = s.world.variant(s.product, stocks={s.w1: 2, w3: 9})
    skus = [r[0] for r in api.db.rows("SELECT sku FROM product_variant ORDER BY id")]
    stock_ids = [r[0] for r in api.db.rows("SELECT id FROM stock ORDER BY id")]
    seller = api.token(Role.SELLER, s.seller)
    shopper = api.token(Role.STOREFRONT)
    requests = [
        (AVAILABILITY, {"skus": skus, "c": "fr"}, shopper),
        (AVAILABILITY, {"skus": skus}, shopper),  # $c unset: all warehouses
        (BAD_COUNTRY, {"skus": skus}, shopper),
        (NODES, {"ids": [gid("ProductVariant", second), gid("Stock", stock_ids[0]),
                         gid("Warehouse", w3), gid("Stock", stock_ids[-1]),
                         gid("ProductVariant", s.variant)]}, "admin"),
        (PRODUCT, {"id": gid("Product", s.product)}, shopper),
        (DASHBOARD, None, seller),
    ]
    for query, variables, token in requests:
        fast = await api.post(query, variables, token)
        slow = await strawberrys.post(query, variables, token)
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json()), query

    answer = await api.gql(AVAILABILITY, {"skus": skus, "c": "fr"}, shopper)
    assert {e["node"].pop("sku"): e["node"] for e in answer["productVariants"]["edges"]} == {
        skus[0]: {"de": 12, "fr": 12, "all": 12, "again": 12},
        skus[1]: {"de": 2, "fr": 11, "all": 11, "again": 2}}
    refused = (await api.post(BAD_COUNTRY, {"skus": skus}, shopper)).json()
    assert refused["errors"][0]["extensions"]["code"] == "INVALID"


def test_fields_with_input_objects_keep_strawberrys_resolver() -> None:
    mutation = schema._schema.type_map["Mutation"].fields
    query = schema._schema.type_map["Query"].fields
    variant = schema._schema.type_map["ProductVariant"].fields
    assert mutation["orderCreate"].resolve.__module__.startswith("strawberry")
    assert query["productVariants"].resolve.__module__ == "api.direct"  # leaf arguments
    assert variant["sku"].resolve.__module__ == "api.direct"
    off = schema_for(fast_paths=False)._schema.type_map["ProductVariant"].fields
    assert off["sku"].resolve.__module__.startswith("strawberry")
    assert direct.install(schema_for(fast_paths=True)) > 200  # idempotent: built once


async def test_a_loaded_value_answers_at_once_and_a_missing_one_later() -> None:
    async def load(keys: list[int]) -> list[int]:
        return [k * 10 for k in keys]

    loader: Loader[int, int] = Loader(load_fn=load)
    later = now_or_later(loader, 1, str)
    assert await later == "10"  # type: ignore[misc]
    assert now_or_later(loader, 1, str) == "10"  # loaded now: a plain value


async def test_values_read_ahead_are_held_as_a_dataloader_primes_them() -> None:
    asked: list[list[int]] = []

    async def load(keys: list[int]) -> list[int]:
        asked.append(keys)
        return [k * 10 for k in keys]

    loader: Loader[int, int] = Loader(load_fn=load)
    assert await loader.load(1) == 10

    loader.prime_many({1: -1, 2: 20, 3: 30})

    assert held(loader, 1) == 10  # a key already loaded keeps its value, as DataLoader's
    assert held(loader, 2) == 20 and now_or_later(loader, 3, str) == "30"
    assert held(loader, 4) is NOT_LOADED
    assert await loader.load(2) == 20 and await loader.load_many([3, 1]) == [30, 10]
    assert loader.holds(2) and not loader.holds(4)
    assert asked == [[1]]  # nothing given was read again

    loader.prime_many({2: -2})
    assert held(loader, 2) == 20  # cached now: kept
    loader.prime_many({2: 22, 5: 50}, force=True)
    assert held(loader, 2) == 22 and held(loader, 5) == 50
    loader.clear(5)
    loader.prime_many({6: 60})
    loader.clear_many([6])
    assert held(loader, 5) is NOT_LOADED and held(loader, 6) is NOT_LOADED
    loader.prime_many({7: 70})
    loader.clear_all()
    assert held(loader, 7) is NOT_LOADED and held(loader, 2) is NOT_LOADED


async def test_a_value_given_while_its_key_waits_in_a_batch_settles_the_batch() -> None:
    async def load(keys: list[int]) -> list[int]:
        return [k * 10 for k in keys]

    loader: Loader[int, int] = Loader(load_fn=load)
    waiting = loader.load(8)  # in a batch not sent yet

    loader.prime_many({8: 80, 9: 90})

    assert await waiting == 80 and held(loader, 9) == 90


@strawberry.interface
class Thing:
    @strawberry.field
    def qty(self, country: str | None = None) -> int:
        return 0


@strawberry.type
class Item(Thing):
    pass


@strawberry.type
class Other(Thing):
    pass


SEEN: list[list[dict[str, Any]]] = []


@strawberry.type
class Query:
    @strawberry.field
    def things(self, info: strawberry.Info) -> list[Thing]:
        SEEN.append(arguments_of(info, (), "qty", "Item"))
        return [Item()]


def test_lookahead_follows_fragments_aliases_and_variables_of_the_objects_type() -> None:
    small = strawberry.Schema(query=Query, types=[Item, Other])
    SEEN.clear()
    result = small.execute_sync("""query($c: String) { things { a: qty(country: "DE")
        b: qty(country: $c) qty ...F ... on Item { d: qty(country: "IT") }
        ... { e: qty(country: "ES") } ... on Other { o: qty(country: "NO") }
        ... on Thing { t: qty(country: "AT") } } }
        fragment F on Item { f: qty(country: "PL") }""", variable_values={"c": "FR"})
    assert result.errors is None
    # `... on Other` cannot apply to an Item: not asked for it
    assert SEEN == [[{"country": "DE"}, {"country": "FR"}, {}, {"country": "PL"},
                     {"country": "IT"}, {"country": "ES"}, {"country": "AT"}]]


def test_lookahead_walks_each_fragment_once_per_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    # each fragment spreads the next one twice: walked naively, 2^20 visits of the field
    # (a 1 KB document that held the event loop for seconds)
    depth = 20
    read: list[object] = []
    original = lookahead.value_from_ast_untyped
    monkeypatch.setattr(lookahead, "value_from_ast_untyped",
                        lambda *args: read.append(args) or original(*args))
    fragments = " ".join(f"fragment F{i} on Item {{ ...F{i + 1} ...F{i + 1} }}"
                         for i in range(depth))
    small = strawberry.Schema(query=Query, types=[Item, Other])
    SEEN.clear()
    result = small.execute_sync(f"{{ things {{ ...F0 }} }} {fragments} "
                                f'fragment F{depth} on Item {{ qty(country: "DE") }}')
    assert result.errors is None
    assert SEEN == [[{"country": "DE"}]]
    assert len(read) == 1


def test_every_prefetched_field_is_a_field_of_its_type() -> None:
    # a renamed field would silently turn its prefetching off
    for kind, fields in PREFETCHED.items():
        graphql_type = schema._schema.type_map[kind.__strawberry_definition__.name]
        assert {name for name, _ in fields} <= set(graphql_type.fields), kind


def test_arguments_strawberry_converts_keep_its_resolver() -> None:
    @strawberry.type
    class Converted:
        @strawberry.field
        def maybe(self, x: strawberry.Maybe[str]) -> str:
            return repr(x)

        @strawberry.field
        def global_id(self, id: strawberry.relay.GlobalID) -> str:
            return type(id).__name__

        @strawberry.field
        def plain(self, x: str | None = None) -> str:
            return repr(x)

    small = strawberry.Schema(query=Converted)
    before = small.execute_sync('{ maybe(x: "a") globalId(id: "VXNlcjox") plain(x: "a") }')
    assert direct.install(small) == 1  # only `plain`
    after = small.execute_sync('{ maybe(x: "a") globalId(id: "VXNlcjox") plain(x: "a") }')
    assert after.data == before.data


class Mood(enum.Enum):
    GLAD = "glad"


CALLS: list[str] = []  # the resolvers `Leafy`'s methods ran, in order


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Stranger:
    name: str


@strawberry.type
class Plain:  # no interface: no is_type_of, graphql-core completes whatever it holds
    name: str


class _Later:
    """An awaitable that makes its coroutine only when awaited (no warning when unread)."""

    def __await__(self) -> Any:
        return self._plain().__await__()

    @staticmethod
    async def _plain() -> Plain:
        return Plain(name="awaited")


@strawberry.type
class Leafy(Named):
    count: int
    ratio: float
    on: bool
    maybe: str | None
    mood: Mood
    when: datetime
    big: int  # past Int's 32 bits: graphql-core's error
    missing: str  # holds None: graphql-core's non-null error, the parent nulled
    kids: list[Leafy]  # objects in a list of non-null items
    holes: list[Leafy | None] | None  # objects and nulls
    stranger: Leafy  # holds an object of another type: is_type_of refuses it
    plainly: Plain  # an object type without is_type_of
    plains: list[Plain]
    raw: strawberry.Private[Any] = None

    @strawberry.field
    def broken(self) -> str:
        CALLS.append("broken")
        raise ValueError("no")

    @strawberry.field
    def doubled(self) -> int:
        CALLS.append("doubled")
        return self.count * 2

    @strawberry.field
    def child(self) -> Leafy | None:
        CALLS.append("child")
        return self.raw

    @strawberry.field
    def sure(self, info: strawberry.Info) -> Leafy:
        CALLS.append("sure")
        assert info.field_name == "sure" and info.context == {"k": 1}
        return self.raw if self.raw is not None else _leafy(name="made")

    @strawberry.field
    async def later(self, info: strawberry.Info) -> Leafy:
        CALLS.append("later")
        assert info.path.key == "later"
        return _leafy(name="later")

    @strawberry.field
    def stale(self) -> Leafy:  # a resolver's value that is not clean: an awaitable
        CALLS.append("stale")
        return self._stale()  # type: ignore[return-value]

    async def _stale(self) -> Leafy:
        return _leafy(name="stale")

    @strawberry.field
    def pending(self) -> Leafy:  # an awaitable from a resolver of an object type
        CALLS.append("pending")
        return self._stale()  # type: ignore[return-value]

    @strawberry.field
    def scaled(self, by: int = 2, tags: list[str] | None = None) -> int:
        CALLS.append(f"scaled {by} {tags}")
        return self.count * by

    @strawberry.field
    def named(self, info: strawberry.Info, name: str, mood: Mood | None = None) -> Leafy:
        CALLS.append(f"named {name} {mood}")
        assert info.field_name == "named"
        return _leafy(name=name)

    @strawberry.field
    def lost(self) -> Leafy:  # null from a resolver in a non-null field
        CALLS.append("lost")
        return None  # type: ignore[return-value]


@strawberry.type
class Twin(Named):  # another type of the interface
    twin: int = 2


@strawberry.type
class LeafQuery:
    @strawberry.field
    def leaves(self) -> list[Leafy | None]:
        return [_leafy(), None, _leafy(name="b", big=2**40), _leafy(missing=None)]

    @strawberry.field
    async def named(self, which: str = "clean") -> list[Named | None]:  # `nodes`' kind
        CALLS.append(f"named {which}")
        return _named(which)

    @strawberry.field
    async def sure_named(self, which: str = "clean") -> list[Named]:
        CALLS.append(f"sure named {which}")
        return [each for each in _named(which) if each is not None]

    @strawberry.field
    async def thing(self, which: str = "clean") -> Named | None:  # `node`'s kind
        CALLS.append(f"thing {which}")
        return _named(which)[-1]

    @strawberry.field
    async def sure_thing(self, which: str = "clean") -> Leafy:
        CALLS.append(f"sure thing {which}")
        return _named(which)[-1]  # type: ignore[no-any-return]

    @strawberry.field
    async def nothing(self) -> Plain | None:  # graphql-core's Undefined: null
        return Undefined  # type: ignore[no-any-return]

    @strawberry.field
    async def sure_nothing(self) -> Plain:
        return Undefined  # type: ignore[no-any-return]

    @strawberry.field
    async def nothings(self) -> list[Plain | None]:
        return [Plain(name="p"), Undefined]

    @strawberry.field
    async def kin(self, which: str = "clean") -> list[Leafy]:  # a product's `variants`' kind
        CALLS.append(f"kin {which}")
        items: list[Any] = [_leafy(name="k1"), _leafy(name="k2", missing=None)]
        if which == "null":
            items.insert(1, None)
        elif which == "stranger":
            items.append(Stranger(name="s"))
        elif which == "awaitable":
            items.append(_Later())
        return items

    @strawberry.field
    def one(self) -> Leafy:
        return _leafy(child=_leafy(name="inner"))


def _named(which: str) -> list[Any]:
    items: list[Any] = [_leafy(), None, Twin(name="t"), _leafy(name="b", big=2**40)]
    if which == "stranger":  # an object that does not implement the interface
        items.append(Stranger(name="s"))
    elif which == "cast":  # cast by hand: strawberry's resolve_type reads the cast
        items.append(strawberry.cast(Twin, Twin(name="c")))
    elif which == "error":
        items.append(ValueError("held"))
    return items


def _leafy(*, name: str = "a", big: int = 7, missing: str | None = "m",
           child: Leafy | None = None) -> Leafy:
    kids = [] if child is None else [child, _leafy(name="k2", missing=None)]
    return Leafy(name=name, count=3, ratio=0.5, on=True, maybe=None, mood=Mood.GLAD,
                 when=datetime(2026, 12, 7, tzinfo=UTC), big=big, missing=missing,
                 kids=kids, holes=[child, None] if child is not None else None,
                 stranger=Stranger(name="o"), plainly=_Later(),  # type: ignore[arg-type]
                 plains=[Plain(name="p"), ValueError("held")], raw=child)  # type: ignore[arg-type]


LEAF_QUERIES = [
    "{ leaves { name count ratio on maybe mood when big __typename } }",
    "{ leaves { name missing } }",
    "{ leaves { name broken } one { name } }",
    "{ one { a: name b: name name ... on Leafy { name count } child { name mood } } }",
    "query($yes: Boolean!) { one { name @include(if: $yes) count @skip(if: $yes) "
    "child { name } } }",
    "{ one { child { missing name } } }",
    "{ one { doubled kids { name doubled } holes { name } } }",
    "{ one { kids { name missing } } }",  # a non-null item's error nulls the list's parent
    "{ one { holes { name missing } } }",
    "{ one { name stranger { name } } }",
    "{ leaves { stranger { name } } }",
    "{ one { sure { name sure { name } } later { name count } } }",
    "{ one { stale { name } lost { name } } }",
    "{ one { pending { name } plainly { name } } }",
    "{ one { plains { name } } }",
    "query($by: Int!, $t: [String!]) { one { scaled a: scaled(by: 3) b: scaled(by: $by) "
    "c: scaled(tags: $t) d: scaled(tags: [\"x\"]) kids { scaled(by: $by) } } }",
    "query($n: String!) { leaves { named(name: $n) { name named(name: \"z\", mood: GLAD) "
    "{ name count } } } }",
    "{ leaves { lost { name } } }",
    "{ one { kids { sure { name } later { name } } } }",
    "{ one { child { kids { child { name } } } } }",
    "{ named { __typename name ... on Leafy { count doubled kids { name } } "
    "... on Twin { twin } } }",
    "{ named { name ... on Leafy { missing big } } }",  # errors inside clean items
    "query($w: String!) { named(which: $w) { __typename name ... on Twin { twin } } "
    "sureNamed(which: $w) { __typename name } }",
    "query($w: String!) { kin(which: $w) { name doubled later { name } } }",
    "query($w: String!) { thing(which: $w) { __typename name ... on Leafy { count kids "
    "{ name } } ... on Twin { twin } } sureThing(which: $w) { name count } }",
    "{ thing { name ... on Leafy { big } } }",  # an error inside a clean object
    "{ nothing { name } nothings { name } }",
    "{ one { name } sureNothing { name } }",
    "query($w: String!) { kin(which: $w) { name missing } }",
    "query($w: String!) { one { name } kin(which: $w) { ... @defer { name } } }",
]


@pytest.mark.parametrize("query", LEAF_QUERIES)
async def test_fields_completed_directly_answer_as_graphql_core(query: str) -> None:
    def made(executor: type[Any] | None) -> strawberry.Schema:
        return strawberry.Schema(query=LeafQuery, types=[Stranger, Twin],
                                 execution_context_class=executor)

    plain, fast = made(None), made(FastExecutor)
    assert direct.install(fast) > 0
    assert getattr(fast._schema.type_map["Leafy"], direct.LEAVES).keys() == {
        "name", "count", "ratio", "on", "maybe", "mood", "when", "big", "missing", "kids",
        "holes", "stranger", "plainly", "plains", "broken", "doubled", "child", "sure",
        "later", "stale", "pending", "scaled", "named", "lost"}
    for variables in ({"yes": True, "by": 5, "t": ["p", "q"], "n": "v", "w": "clean"},
                      {"yes": False, "by": -1, "t": None, "n": "", "w": "stranger"},
                      {"w": "cast", "yes": True, "by": 1, "t": [], "n": "c"},
                      {"w": "error", "yes": True, "by": 1, "t": [], "n": "e"},
                      {"w": "null", "yes": True, "by": 1, "t": [], "n": "e"},
                      {"w": "awaitable", "yes": True, "by": 1, "t": [], "n": "e"}):
        answers = []
        for each in (plain, fast):
            CALLS.clear()
            result = await each.execute(query, variable_values=variables,
                                        context_value={"k": 1})
            for _ in range(5):  # what an error left running in the background ends here
                await asyncio.sleep(0)
            answers.append((result, list(CALLS)))
        (want, want_calls), (got, got_calls) = answers
        assert got.data == want.data, query
        assert [(e.message, e.path) for e in got.errors or ()] == \
            [(e.message, e.path) for e in want.errors or ()], query
        assert got_calls == want_calls, query  # each resolver called once, in order
        if not any(bad in query for bad in ("broken", "missing", "big", "stranger", "lost",
                                            "stale", "plains", "$w", "sureNothing")):
            assert got.errors is None, got.errors


async def test_clean_fields_skip_graphql_cores_field_execution(
        monkeypatch: pytest.MonkeyPatch) -> None:
    executed: list[str] = []
    original = FastExecutor.execute_field

    def spy(self: Any, parent_type: Any, source: Any, details: Any, *args: Any) -> Any:
        executed.append(details[0].node.name.value)
        return original(self, parent_type, source, details, *args)

    monkeypatch.setattr(FastExecutor, "execute_field", spy)
    fast = strawberry.Schema(query=LeafQuery, execution_context_class=FastExecutor)
    direct.install(fast)
    clean = await fast.execute("{ one { name when mood doubled kids { name } holes { name } "
                               "child { name } sure { name } later { name } } }",
                               context_value={"k": 1})
    assert clean.errors is None and executed == []
    await fast.execute("{ leaves { missing } one { stranger { name } } }")
    assert executed == ["missing", "stranger"]  # graphql-core's way, for its errors


async def test_clean_lists_from_async_resolvers_skip_graphql_cores_item_completion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A list of an interface's objects (`nodes`) or of an object type (`variants`), or one
    object (`node`), from an async resolver: none goes through graphql-core's list,
    abstract or object completion, unless it is not clean."""
    completed: list[str] = []
    for name in ("complete_list_value", "complete_abstract_value", "complete_object_value"):
        original = getattr(FastExecutor, name)

        def spy(self: Any, *args: Any, _name: str = name, _original: Any = original) -> Any:
            completed.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(FastExecutor, name, spy)
    fast = strawberry.Schema(query=LeafQuery, types=[Stranger, Twin],
                             execution_context_class=FastExecutor)
    direct.install(fast)
    clean = await fast.execute("{ named { name ... on Twin { twin } } sureNamed { name } "
                               "kin { name kids { name } } thing { name } "
                               'sureThing(which: "null") { name } }')
    assert clean.errors is None and completed == []
    cast = await fast.execute('{ named(which: "cast") { name } }')
    assert cast.errors is None and "complete_abstract_value" in completed


def test_the_served_schema_completes_plain_leaves_directly() -> None:
    assert schema.execution_context_class is FastExecutor
    stock = getattr(schema._schema.type_map["Stock"], direct.LEAVES)
    assert {"id", "quantity", "quantityAllocated", "lowStockThreshold",
            "quantityAvailable"} <= stock.keys()
    # leaves whose values come back as they are, unless an Int's is past 32 bits
    assert (stock["quantity"].same, stock["id"].same) == (int, str)
    assert getattr(schema._schema.type_map["ProductVariant"], direct.LEAVES)[
        "trackInventory"].same is bool
    variant = stock["variant"]  # an object, through its resolver, which reads its info
    assert variant.attribute is None and variant.info and variant.coerce is None
    assert "quantityIncoming" in stock and stock["quantityIncoming"].info  # async
    edges = getattr(schema._schema.type_map["StockConnection"], direct.LEAVES)["edges"]
    assert edges.attribute == "edges" and edges.item_type is not None
    assert not hasattr(schema_for(fast_paths=False)._schema.type_map["Stock"], direct.LEAVES)


def test_a_list_completes_its_items_leaves_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    slow: list[str] = []  # fields that took graphql-core's `execute_field`
    original = FastExecutor.execute_field

    def spy(self: Any, parent_type: Any, source: Any, details: Any, *args: Any) -> Any:
        slow.append(details[0].node.name.value)
        return original(self, parent_type, source, details, *args)

    monkeypatch.setattr(FastExecutor, "execute_field", spy)
    fast = strawberry.Schema(query=LeafQuery, execution_context_class=FastExecutor)
    direct.install(fast)
    result = fast.execute_sync("{ leaves { name count } }")
    assert result.errors is None
    assert result.data is not None
    assert [item and sorted(item) for item in result.data["leaves"]] == [
        ["count", "name"], None, ["count", "name"], ["count", "name"]]
    assert "name" not in slow and "count" not in slow


def test_an_extension_that_resolves_sees_every_leaf() -> None:
    seen: list[str] = []

    class Watch(SchemaExtension):
        def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(info.field_name)
            return _next(root, info, *args, **kwargs)

    fast = strawberry.Schema(query=LeafQuery, execution_context_class=FastExecutor,
                             extensions=[Watch])
    direct.install(fast)
    assert fast.execute_sync("{ one { name count } }").errors is None
    assert seen == ["one", "name", "count"]


SHARED_QUERY = (
    "query($by: Int!, $n: String!, $w: String!) { one { scaled a: scaled(by: 3) "
    "b: scaled(by: $by) kids { name scaled(by: $by) ...Kid } } leaves { name ...Kid } "
    "named(which: $w) { __typename name ... on Twin { twin } } "
    "kin(which: $w) { name named(name: $n) { name } } }"
    " fragment Kid on Leafy { count doubled }")


async def test_a_document_without_directives_is_sorted_out_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Later executions of the same document reuse its collected fields and steps, and still
    take their arguments from each execution's variables; answers as graphql-core's."""
    collected: list[str] = []
    sorted_out: list[str] = []
    original_collect = executor_module.collect_subfields
    original_step_of = FastExecutor._step_of

    def collect(*args: Any) -> Any:
        collected.append(args[4].name)
        return original_collect(*args)

    def step_of(self: Any, steps: Any, details: Any) -> Any:
        sorted_out.append(details[0].node.name.value)
        return original_step_of(self, steps, details)

    monkeypatch.setattr(executor_module, "collect_subfields", collect)
    monkeypatch.setattr(FastExecutor, "_step_of", step_of)
    plain = strawberry.Schema(query=LeafQuery, types=[Stranger, Twin])
    fast = strawberry.Schema(query=LeafQuery, types=[Stranger, Twin],
                             execution_context_class=FastExecutor)
    direct.install(fast)
    document = parse(SHARED_QUERY)
    rounds = []
    for by, n, w in ((5, "v", "clean"), (-1, "", "stranger"), (2, "z", "null"),
                     (7, "q", "clean")):
        variables = {"by": by, "n": n, "w": w}
        collected.clear()
        sorted_out.clear()
        CALLS.clear()
        got = await await_maybe(graphql_execute(
            fast._schema, document, variable_values=variables, context_value={"k": 1},
            executor_class=FastExecutor))
        got_calls = list(CALLS)
        rounds.append((list(collected), list(sorted_out)))
        CALLS.clear()
        want = await plain.execute(SHARED_QUERY, variable_values=variables,
                                   context_value={"k": 1})
        assert got.data == want.data, variables
        assert [(e.message, e.path) for e in got.errors or ()] == \
            [(e.message, e.path) for e in want.errors or ()]
        assert got_calls == list(CALLS)
    first_collected, first_sorted = rounds[0]
    assert first_collected and first_sorted
    for again_collected, again_sorted in rounds[1:]:
        assert again_collected == []  # graphql-core's collection: kept from the first
        # only the selections with an argument given as a variable are sorted out again
        # only selections with an argument given as a variable are sorted out again: the
        # root, `one`'s, `kids`' and `kin`'s; not `leaves`', `named`'s items' or `named`'s
        assert sorted(again_sorted) == sorted([
            "one", "leaves", "named", "kin", "scaled", "scaled", "scaled", "kids", "name", "scaled",
            "count", "doubled", "name", "named"])
        assert len(first_sorted) > len(again_sorted)


@pytest.mark.parametrize(("query", "shared"), [
    ("{ one { name } }", True),
    ("query($x: Int!) { one { ...F kids { name } } } fragment F on Leafy { scaled(by: $x) }",
     True),
    ("query($y: Boolean!) { one { name @include(if: $y) } }", False),
    ("query($y: Boolean!) { one { ... @skip(if: $y) { name } } }", False),
    ("query($y: Boolean!) { one { ...F } } fragment F on Leafy { name @skip(if: $y) }",
     False),
    ("{ one { ...F @include(if: true) } } fragment F on Leafy { name }", False),
])
def test_only_documents_without_directives_share(query: str, shared: bool) -> None:
    document = parse(query)
    operation = document.definitions[0]
    fragments = {d.name.value: FragmentDetails(d) for d in document.definitions[1:]}
    kept = direct._shared_of(operation, fragments)  # type: ignore[arg-type]
    assert (kept is not None) is shared
    assert direct._shared_of(operation, fragments) is kept  # type: ignore[arg-type]
    key = id(operation)
    del document, operation
    import gc
    gc.collect()
    assert key not in direct._SHARED  # forgotten with its document
