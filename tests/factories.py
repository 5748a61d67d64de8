"""Small typed helpers that build a world through the real services."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api import ids
from domain.models import Role
from domain.permissions import Principal
from domain.services import catalog
from tests.conftest import Api, Database

ADMIN = Principal(token_id=0, role=Role.ADMIN)
_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


@dataclass
class World:
    db: Database

    def seller(self, name: str | None = None) -> int:
        return catalog.create_seller(self.db.uow(), ADMIN, name=name or unique("seller")).id

    def zone(self, countries: Sequence[str], name: str | None = None) -> int:
        zone, _ = catalog.create_shipping_zone(self.db.uow(), ADMIN, name=name or unique("zone"),
                                               countries=countries)
        return zone.id

    def warehouse(self, seller_id: int, zone_ids: Sequence[int], priority: int = 0) -> int:
        return catalog.create_warehouse(self.db.uow(), ADMIN, seller_id=seller_id,
                                        name=unique("wh"), zone_ids=zone_ids,
                                        priority=priority).id

    def product(self, seller_id: int) -> int:
        return catalog.create_product(self.db.uow(), ADMIN, seller_id=seller_id,
                                      name=unique("product")).id

    def variant(self, product_id: int, *, sku: str | None = None, track: bool = True,
                stocks: Mapping[int, int] | None = None) -> int:
        variant_id = catalog.create_variant(self.db.uow(), ADMIN, product_id=product_id,
                                            sku=sku or unique("SKU"), track_inventory=track).id
        if stocks:
            self.set_stock(variant_id, stocks)
        return variant_id

    def set_stock(self, variant_id: int, stocks: Mapping[int, int]) -> None:
        catalog.set_stock_quantities(self.db.uow(), ADMIN, variant_id, [
            catalog.StockQuantity(w, q) for w, q in stocks.items()])

    def stock(self, variant_id: int, warehouse_id: int) -> tuple[int, int]:
        """(quantity, allocated) of one stock."""
        row = self.db.rows("SELECT quantity, quantity_allocated FROM stock "
                           "WHERE variant_id = :v AND warehouse_id = :w",
                           v=variant_id, w=warehouse_id)[0]
        return int(row[0]), int(row[1])


@dataclass
class Shop:
    """One seller with two warehouses serving DE (w1 first), one variant stocked in both."""

    world: World
    seller: int
    zone: int
    w1: int
    w2: int
    product: int
    variant: int


def shop(db: Database, stock1: int = 10, stock2: int = 0, track: bool = True) -> Shop:
    world = World(db)
    seller = world.seller()
    zone = world.zone(["DE", "FR"])
    w1 = world.warehouse(seller, [zone], priority=0)
    w2 = world.warehouse(seller, [zone], priority=1)
    product = world.product(seller)
    variant = world.variant(product, track=track, stocks={w1: stock1, w2: stock2})
    return Shop(world, seller, zone, w1, w2, product, variant)


def stocks(s: Shop, variant: int | None = None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(quantity, allocated) in w1 and in w2."""
    v = s.variant if variant is None else variant
    return s.world.stock(v, s.w1), s.world.stock(v, s.w2)


def allocations(order: dict[str, Any]) -> list[list[tuple[str, int]]]:
    """Per line of an Order payload, (warehouse ID, quantity) sorted (API.md leaves the
    order of allocations open)."""
    return [sorted((a["warehouse"]["id"], a["quantity"]) for a in line["allocations"])
            for line in order["lines"]]


def gid(type_name: str, pk: int) -> str:
    return ids.encode(type_name, pk)


def split(s: Shop, first: int, second: int) -> list[tuple[str, int]]:
    """One line's `allocations`: `first` units in the shop's first warehouse, `second` in its
    second."""
    return sorted([(gid("Warehouse", s.w1), first), (gid("Warehouse", s.w2), second)])


def input_mutation(field: str, selection: str) -> str:
    """The mutation `field(input: $input) { selection }`, its input typed after the field."""
    return (f"mutation($input: {field[0].upper()}{field[1:]}Input!) "
            f"{{ {field}(input: $input) {{ {selection} }} }}")


def id_mutation(field: str, selection: str) -> str:
    """The mutation `field(id: $id) { selection }`."""
    return f"mutation($id: ID!) {{ {field}(id: $id) {{ {selection} }} }}"


OUTSIDERS = ["anonymous", "storefront", "other seller"]
# what each outsider gets: another seller must not tell `s`'s objects from unknown ones
REFUSAL = {"anonymous": "PERMISSION_DENIED", "storefront": "PERMISSION_DENIED",
           "other seller": "NOT_FOUND"}


def outsider_token(api: Api, s: Shop, who: str) -> str | None:
    """A token of one of the OUTSIDERS, who may not manage `s`'s stock (None: anonymous)."""
    if who == "anonymous":
        return None
    if who == "storefront":
        return api.token(Role.STOREFRONT)
    return api.token(Role.SELLER, s.world.seller())
