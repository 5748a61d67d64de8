"""DataLoaders: every nested field is fetched in one statement per level, never per row."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

from strawberry.dataloader import DataLoader

from domain.models import (
    Order,
    OrderLine,
    Product,
    ProductVariant,
    PurchaseOrder,
    PurchaseOrderLine,
    SalesChannel,
    Seller,
    Stock,
    StockMovement,
    Warehouse,
    WebhookSubscription,
)
from domain.rows import DriverRead, Reading
from domain.services import batches, channel_reads, feeds, reads, webhooks
from domain.services.batches import BatchView
from domain.services.orders import AllocationView, FulfillmentView

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")

Reader = Callable[..., Awaitable[Any]]
KeysOf = Callable[[list[Any]], dict[str, list[Any]]]  # rows -> loader's name -> keys

log = logging.getLogger("stockyard")


class Loader(DataLoader[K, V]):
    """A DataLoader whose every waiter awaits its own shield of the key's shared future,
    and which holds values read ahead in a plain dict until a field loads one.

    When a non-null field fails, graphql-core cancels the field's pending siblings; a
    cancelled waiter of a plain DataLoader cancels the future it shares with every other
    field that asked for the same key, and they receive a CancelledError (not an Exception:
    it got past every error handler and answered HTTP 500).

    Values primed (`prime_many`, the reads ahead of a page's fields) go to `given`, where
    `held` finds them: a settled future per value, as DataLoader primes, cost a dashboard
    page of 50 stocks 50 us. A key is in `given` or in the cache, never both; a `load` of a
    given key moves it to the cache first. The loaders here key the cache by the key itself
    (no `cache_key_fn`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.given: dict[K, V] = {}

    def load(self, key: K) -> asyncio.Future[V]:
        return asyncio.shield(self.shared(key))

    def shared(self, key: K) -> asyncio.Future[V]:
        """The key's own future, the one each `load` shields."""
        if key in self.given:
            super().prime_many({key: self.given.pop(key)})
        return cast("asyncio.Future[V]", super().load(key))

    def holds(self, key: K) -> bool:
        """Whether the key is given or cached (loaded, being loaded, or failed)."""
        return key in self.given or self.cache_map.get(key) is not None

    def prime_many(self, data: Mapping[K, V], force: bool = False) -> None:
        """DataLoader's: a key already cached keeps its value unless `force`; a key waiting
        in a batch not sent yet gets the value (DataLoader's own way, then)."""
        if not self.cache or force or (self.batch is not None and not self.batch.dispatched):
            for key in data:
                self.given.pop(key, None)
            super().prime_many(data, force)
            return
        cached = self.cache_map.get
        for key, value in data.items():
            if key not in self.given and cached(key) is None:
                self.given[key] = value

    def clear(self, key: K) -> None:
        if self.given.pop(key, NOT_LOADED) is NOT_LOADED:  # a given key is not cached
            super().clear(key)

    def clear_many(self, keys: Iterable[K]) -> None:
        super().clear_many([key for key in keys
                            if self.given.pop(key, NOT_LOADED) is NOT_LOADED])

    def clear_all(self) -> None:
        self.given.clear()
        super().clear_all()


def now_or_later(loader: Loader[K, V], key: K, then: Callable[[V], R]
                 ) -> R | Awaitable[R]:
    """`then` of the loader's value for `key`: at once when it is already loaded (prefetched
    by a list resolver, api/lookahead.py), else an awaitable of it.

    A resolver returning a plain value costs graphql-core no coroutine, task or loop turn;
    for the items of a list, that was most of a small read's time.
    """
    value = held(loader, key)
    return _later(loader, key, then) if value is NOT_LOADED else then(value)


NOT_LOADED = object()  # `held`: the loader has no value for the key (yet, or failed)


def held(loader: Loader[K, V], key: K) -> Any:
    """The value the loader holds for `key`, loaded without error; else NOT_LOADED."""
    value = loader.given.get(key, NOT_LOADED)
    if value is not NOT_LOADED:
        return value
    future = loader.cache_map.get(key)
    if future is None or not future.done() or future.cancelled() or \
            future.exception() is not None:
        return NOT_LOADED
    return future.result()


async def _later(loader: Loader[K, V], key: K, then: Callable[[V], R]) -> R:
    return then(await loader.load(key))


def _loader(read: Reader, fn: Callable[..., Sequence[V]]) -> Loader[Any, V]:
    async def load(keys: list[Any]) -> Sequence[V]:
        return await read(fn, keys)  # type: ignore[no-any-return]

    return Loader(load_fn=load)


def _by_id(read: Reader, model: type[Any]) -> Loader[int, Any]:
    async def load(keys: list[int]) -> Sequence[Any]:
        return await read(reads.by_id, model, keys)  # type: ignore[no-any-return]

    return Loader(load_fn=load)


def _rows_of(model: type[Any]) -> DriverRead[[Sequence[int]], list[Any]]:
    def read(dialect: str, keys: Sequence[int]) -> Reading[list[Any]]:
        return reads.rows_by_id.reading(dialect, model, keys)

    return DriverRead(read)


# loader's name -> its batch read on a driver connection planned once (Context.read_rows):
# rows by id and a parent's children (a product's variants, a variant's stocks), as rows with
# the model's column attributes, not ORM objects (`reads.rows_by_id`), and sums over ids;
# the same reads serve reads ahead (`read_ahead`)
ROW_READS: dict[str, DriverRead[..., Any]] = {
    "seller": _rows_of(Seller), "warehouse": _rows_of(Warehouse),
    "product": _rows_of(Product), "variant": _rows_of(ProductVariant),
    "order": _rows_of(Order), "order_line": _rows_of(OrderLine),
    "movement": _rows_of(StockMovement), "stock": _rows_of(Stock),
    "purchase_order": _rows_of(PurchaseOrder), "availability": reads.availability,
    "variants_of_product": reads.variants_of_products,
    "stocks_of_variant": reads.stocks_of_variants,
}


def carried(query: reads.PageQuery, rows: Sequence[Any]) -> dict[str, dict[Any, Any]]:
    """Loader's name -> {key: value} that a page's rows carry: each variant's availability
    in `query.available_in` (`reads.page`'s `available` column)."""
    if query.available_in is None:
        return {}
    return {"availability": {(row.id, query.available_in): int(row.available)
                             for row in rows}}


@DriverRead
def read_ahead(dialect: str, wanted: dict[str, list[Any]]
               ) -> Reading[dict[str, dict[Any, Any]]]:
    """Loader's name -> {key: value} for the keys `wanted` of each (ROW_READS' loaders)."""
    found: dict[str, dict[Any, Any]] = {}
    for name, keys in wanted.items():
        values = yield from ROW_READS[name].reading(dialect, keys)
        found[name] = dict(zip(keys, values, strict=True))
    return found


@DriverRead
def children_and_ahead(dialect: str, name: str, keys: Sequence[Any], ahead: Sequence[KeysOf]
                       ) -> Reading[tuple[Sequence[Any], dict[str, dict[Any, Any]]]]:
    """Each parent's children (ROW_READS' `name`) and, on the same connection, what `ahead`
    names of them (`read_ahead`). A failed read ahead is logged and leaves the fields to
    read for themselves."""
    found = yield from ROW_READS[name].reading(dialect, keys)
    children = [child for each in found for child in each]
    wanted: dict[str, dict[Any, None]] = {}
    for keys_of in ahead:
        for loader_name, loader_keys in keys_of(children).items():
            wanted.setdefault(loader_name, {}).update(dict.fromkeys(loader_keys))
    values: dict[str, dict[Any, Any]] = {}
    if wanted:
        with ahead_failing("a list's"):
            values = yield from read_ahead.reading(
                dialect, {n: list(k) for n, k in wanted.items()})
    return found, values


@contextlib.contextmanager
def ahead_failing(what: str) -> Iterator[None]:
    """A failed read ahead is logged: the fields read for themselves (and meet the error)."""
    try:
        yield
    except Exception:
        log.warning("reading ahead of %s fields failed; they read for themselves", what,
                    exc_info=True)


class _Children(Loader[Any, list[Any]]):
    """A loader of each parent's children whose batch also reads, in the same thread hop,
    what the children's fields will load: a field asking for children first says how to
    name those keys (`want`, once per selection), and the batch primes the loaders with
    them."""

    def __init__(self, loaders: Loaders, name: str) -> None:
        self._loaders = loaders
        self._name = name
        self._ahead: dict[Any, KeysOf] = {}  # selection -> its keys of the children
        super().__init__(load_fn=self._load_children)

    def wants(self, selection: Any) -> bool:
        """Whether the next batch already reads ahead for `selection`."""
        return selection in self._ahead

    def want(self, selection: Any, keys_of: KeysOf) -> None:
        """Read what `keys_of` names of the children along with the next batch."""
        self._ahead[selection] = keys_of

    async def _load_children(self, keys: list[Any]) -> Sequence[list[Any]]:
        ahead, self._ahead = list(self._ahead.values()), {}
        found, values = await self._loaders.read_rows(children_and_ahead, self._name, keys,
                                                      ahead)
        self._loaders.prime(values)
        return found  # type: ignore[no-any-return]


class Loaders:
    """A request's DataLoaders, each made when a resolver first asks for it.

    A mutation answering with a few ids uses none of them: building all of them up
    front was about a tenth of the server's CPU per orderCreate.
    """

    def __init__(self, read: Reader, read_rows: Reader) -> None:
        self._read = read
        self.read_rows = read_rows

    def prime(self, found: dict[str, dict[Any, Any]]) -> None:
        """Hold values read ahead (`read_ahead`): their fields answer at once."""
        for name, values in found.items():
            getattr(self, name).prime_many(values)

    @functools.cached_property
    def seller(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["seller"])

    @functools.cached_property
    def warehouse(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["warehouse"])

    @functools.cached_property
    def product(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["product"])

    @functools.cached_property
    def variant(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["variant"])

    @functools.cached_property
    def order(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["order"])

    @functools.cached_property
    def order_line(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["order_line"])

    @functools.cached_property
    def movement(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["movement"])

    @functools.cached_property
    def stock(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["stock"])

    @functools.cached_property
    def purchase_order(self) -> Loader[int, Any]:
        return _loader(self.read_rows, ROW_READS["purchase_order"])

    @functools.cached_property
    def purchase_order_lines(self) -> Loader[Any, list[PurchaseOrderLine]]:
        return _loader(self._read, reads.lines_of_purchase_orders)

    @functools.cached_property
    def incoming(self) -> Loader[Any, int]:
        return _loader(self._read, reads.incoming)

    @functools.cached_property
    def stock_totals(self) -> Loader[Any, reads.StockTotals]:
        return _loader(self._read, reads.stock_totals)

    @functools.cached_property
    def incoming_of_variant(self) -> Loader[Any, int]:
        return _loader(self._read, reads.incoming_of_variants)

    @functools.cached_property
    def zone(self) -> Loader[Any, reads.ZoneRow | None]:
        return _loader(self._read, reads.zones)

    @functools.cached_property
    def zone_ids_of_warehouse(self) -> Loader[Any, list[int]]:
        return _loader(self._read, reads.zone_ids_of_warehouses)

    @functools.cached_property
    def variants_of_product(self) -> _Children:
        return _Children(self, "variants_of_product")

    @functools.cached_property
    def stocks_of_variant(self) -> _Children:
        return _Children(self, "stocks_of_variant")

    @functools.cached_property
    def availability(self) -> Loader[Any, int]:
        return _loader(self.read_rows, ROW_READS["availability"])

    @functools.cached_property
    def lines_of_order(self) -> Loader[Any, list[OrderLine]]:
        return _loader(self._read, reads.lines_of_orders)

    @functools.cached_property
    def allocations_of_line(self) -> Loader[Any, list[AllocationView]]:
        return _loader(self._read, reads.allocations_of_lines)

    @functools.cached_property
    def seller_of_variant(self) -> Loader[Any, int | None]:
        return _loader(self._read, reads.sellers_of_variants)

    @functools.cached_property
    def sellers_of_order(self) -> Loader[Any, frozenset[int]]:
        return _loader(self._read, reads.sellers_of_orders)

    @functools.cached_property
    def warehouses_of_channel(self) -> Loader[Any, list[Warehouse]]:
        return _loader(self._read, channel_reads.warehouses_of_channels)

    @functools.cached_property
    def pending_of_channel(self) -> Loader[Any, int]:
        return _loader(self._read, channel_reads.pending_counts)

    @functools.cached_property
    def channel(self) -> Loader[int, Any]:
        return _by_id(self._read, SalesChannel)

    @functools.cached_property
    def fulfillment(self) -> Loader[Any, FulfillmentView | None]:
        return _loader(self._read, reads.fulfillments)

    @functools.cached_property
    def supplier_feed(self) -> Loader[int, Any]:
        return _loader(self._read, feeds.by_id)

    @functools.cached_property
    def webhook_subscription(self) -> Loader[int, Any]:
        return _by_id(self._read, WebhookSubscription)

    @functools.cached_property
    def pending_of_subscription(self) -> Loader[Any, int]:
        return _loader(self._read, webhooks.pending_counts)

    @functools.cached_property
    def pick_batch(self) -> Loader[int, BatchView | None]:
        return _loader(self._read, batches.views_by_id)
