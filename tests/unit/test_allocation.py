"""The pure allocation rules (domain/allocation.py) on plain objects: no database."""

from __future__ import annotations

import pytest

from domain.allocation import Book, Demand, FulfilledPart, StockLevel
from domain.errors import DomainError, ErrorCode, InsufficientStock, NotAvailableInCountry

VARIANT = 1
OTHER_VARIANT = 2
LINE = 10
OTHER_LINE = 11


def level(
    stock_id: int,
    *,
    variant: int = VARIANT,
    warehouse: int | None = None,
    priority: int = 0,
    serves: bool = True,
    quantity: int = 0,
    allocated: int = 0,
) -> StockLevel:
    return StockLevel(stock_id, variant, warehouse or 100 + stock_id, priority, serves,
                      quantity, allocated)


def figures(book: Book) -> dict[int, tuple[int, int]]:
    """stock id -> (quantity, allocated)."""
    return {sid: (s.quantity, s.allocated) for sid, s in book.stocks.items()}


def errors_of(exc: pytest.ExceptionInfo[DomainError]) -> list[tuple[ErrorCode, int | None,
                                                                     int | None, int | None]]:
    return sorted((e.code, e.variant_id, e.requested, e.available) for e in exc.value.errors)


# -- allocate ------------------------------------------------------------------------------


def test_allocation_fills_the_first_priority_warehouse_then_splits_to_the_next() -> None:
    book = Book.of([level(1, priority=2, quantity=5), level(2, priority=1, quantity=3)])

    book.allocate([Demand(LINE, VARIANT, 4)])

    assert book.allocations == {(LINE, 2): 3, (LINE, 1): 1}
    assert figures(book) == {1: (5, 1), 2: (3, 3)}


def test_allocation_uses_only_what_is_left_after_other_allocations() -> None:
    book = Book.of([level(1, priority=0, quantity=5, allocated=4), level(2, priority=1,
                                                                         quantity=5)])

    book.allocate([Demand(LINE, VARIANT, 3)])

    assert book.allocations == {(LINE, 1): 1, (LINE, 2): 2}
    assert figures(book) == {1: (5, 5), 2: (5, 2)}


def test_a_short_order_allocates_nothing_and_reports_one_error_per_short_variant() -> None:
    book = Book.of([
        level(1, variant=VARIANT, quantity=2), level(2, variant=VARIANT, quantity=1),
        level(3, variant=OTHER_VARIANT, quantity=1),
    ])

    with pytest.raises(DomainError) as exc:
        book.allocate([
            Demand(0, VARIANT, 2), Demand(1, OTHER_VARIANT, 5), Demand(2, VARIANT, 2),
        ])

    assert errors_of(exc) == [
        (ErrorCode.INSUFFICIENT_STOCK, VARIANT, 4, 3),
        (ErrorCode.INSUFFICIENT_STOCK, OTHER_VARIANT, 5, 1),
    ]
    assert book.allocations == {}
    assert book.stock_deltas() == {}


def test_a_short_variant_fails_the_order_even_when_other_variants_fit() -> None:
    book = Book.of([level(1, variant=VARIANT, quantity=9),
                    level(2, variant=OTHER_VARIANT, quantity=1)])

    with pytest.raises(InsufficientStock) as exc:
        book.allocate([Demand(0, VARIANT, 3), Demand(1, OTHER_VARIANT, 2, "lines.1.quantity")])

    assert (exc.value.variant_id, exc.value.requested, exc.value.available) == (
        OTHER_VARIANT, 2, 1)
    assert exc.value.field == "lines.1.quantity"
    assert book.allocations == {}


def test_two_demands_of_one_variant_are_counted_together() -> None:
    book = Book.of([level(1, quantity=3)])

    with pytest.raises(InsufficientStock) as exc:
        book.allocate([Demand(0, VARIANT, 2), Demand(1, VARIANT, 2)])

    assert (exc.value.requested, exc.value.available) == (4, 3)


def test_two_demands_of_one_variant_that_fit_together_both_allocate() -> None:
    book = Book.of([level(1, quantity=4)])

    book.allocate([Demand(0, VARIANT, 2), Demand(1, VARIANT, 2)])

    assert book.allocations == {(0, 1): 2, (1, 1): 2}
    assert figures(book) == {1: (4, 4)}


def test_stocks_that_do_not_serve_the_country_are_neither_used_nor_counted() -> None:
    book = Book.of([level(1, serves=False, priority=0, quantity=9),
                    level(2, serves=True, priority=1, quantity=2)])

    with pytest.raises(InsufficientStock) as exc:
        book.allocate([Demand(LINE, VARIANT, 3)])
    book.allocate([Demand(LINE, VARIANT, 2)])

    assert exc.value.available == 2
    assert book.allocations == {(LINE, 2): 2}
    assert figures(book)[1] == (9, 0)


def test_an_edit_reports_the_orders_whole_need_and_what_it_holds_already() -> None:
    book = Book.of([level(1, quantity=3, allocated=2)], {(LINE, 1): 2})

    with pytest.raises(InsufficientStock) as exc:
        book.allocate([Demand(LINE, VARIANT, 2)], requested={VARIANT: 4}, held={VARIANT: 2})

    assert (exc.value.requested, exc.value.available) == (4, 3)


def test_available_never_goes_negative_when_allocated_exceeds_quantity() -> None:
    book = Book.of([level(1, quantity=1, allocated=3), level(2, quantity=2)])

    assert book.available(VARIANT) == 2


# -- require_serving -----------------------------------------------------------------------


def test_a_variant_without_a_serving_stock_record_is_not_available_in_the_country() -> None:
    book = Book.of([level(1, variant=VARIANT, serves=False, quantity=5),
                    level(2, variant=OTHER_VARIANT, serves=True, quantity=0)])

    with pytest.raises(NotAvailableInCountry) as exc:
        book.require_serving([Demand(0, VARIANT, 1, "lines.0.variantId"),
                              Demand(1, VARIANT, 1), Demand(2, OTHER_VARIANT, 1)])

    assert exc.value.variant_id == VARIANT
    assert exc.value.field == "lines.0.variantId"


def test_a_serving_stock_record_with_zero_units_still_makes_the_variant_available() -> None:
    book = Book.of([level(1, quantity=0)])

    book.require_serving([Demand(0, VARIANT, 5)])

    assert book.serving(VARIANT) == [book.stocks[1]]


def test_each_unavailable_variant_is_reported_once() -> None:
    book = Book.of([])

    with pytest.raises(DomainError) as exc:
        book.require_serving([Demand(0, VARIANT, 1), Demand(1, OTHER_VARIANT, 1),
                              Demand(2, VARIANT, 1)])

    assert errors_of(exc) == [
        (ErrorCode.NOT_AVAILABLE_IN_COUNTRY, VARIANT, None, None),
        (ErrorCode.NOT_AVAILABLE_IN_COUNTRY, OTHER_VARIANT, None, None),
    ]


# -- release -------------------------------------------------------------------------------


def test_release_gives_back_the_lowest_priority_allocation_first() -> None:
    book = Book.of([level(1, priority=0, quantity=5, allocated=3),
                    level(2, priority=1, quantity=5, allocated=2)],
                   {(LINE, 1): 3, (LINE, 2): 2})

    book.release(LINE, 3)

    assert book.allocations == {(LINE, 1): 2}
    assert figures(book) == {1: (5, 2), 2: (5, 0)}
    assert book.allocation_changes() == {(LINE, 1): 2, (LINE, 2): 0}


def test_release_without_a_quantity_frees_everything_the_line_holds_and_nothing_else() -> None:
    book = Book.of([level(1, quantity=5, allocated=4)], {(LINE, 1): 3, (OTHER_LINE, 1): 1})

    book.release(LINE)

    assert book.allocations == {(OTHER_LINE, 1): 1}
    assert figures(book) == {1: (5, 1)}


# -- fulfill -------------------------------------------------------------------------------


def test_fulfilment_consumes_the_lines_allocations_in_priority_order() -> None:
    book = Book.of([level(1, warehouse=7, priority=0, quantity=4, allocated=2),
                    level(2, warehouse=8, priority=1, quantity=4, allocated=2)],
                   {(LINE, 1): 2, (LINE, 2): 2})

    parts = book.fulfill(LINE, VARIANT, 3, tracked=True, warehouse_id=None)

    assert parts == [FulfilledPart(LINE, 1, 7, 2), FulfilledPart(LINE, 2, 8, 1)]
    assert figures(book) == {1: (2, 0), 2: (3, 1)}
    assert book.allocations == {(LINE, 2): 1}


def test_fulfilment_of_an_unallocated_line_ships_from_free_stock_in_priority_order() -> None:
    book = Book.of([level(1, priority=1, quantity=5), level(2, priority=0, quantity=2)])

    parts = book.fulfill(LINE, VARIANT, 3, tracked=True, warehouse_id=None)

    assert [(p.stock_id, p.quantity) for p in parts] == [(2, 2), (1, 1)]
    assert figures(book) == {1: (4, 0), 2: (0, 0)}


def test_fulfilment_beyond_the_allocation_takes_the_rest_from_free_stock() -> None:
    book = Book.of([level(1, priority=0, quantity=3, allocated=1),
                    level(2, priority=1, quantity=3)], {(LINE, 1): 1})

    book.fulfill(LINE, VARIANT, 4, tracked=True, warehouse_id=None)

    assert figures(book) == {1: (0, 0), 2: (2, 0)}
    assert book.allocations == {}


def test_fulfilment_never_takes_units_allocated_to_other_lines() -> None:
    book = Book.of([level(1, quantity=3, allocated=2)], {(OTHER_LINE, 1): 2})

    with pytest.raises(InsufficientStock) as exc:
        book.fulfill(LINE, VARIANT, 2, tracked=True, warehouse_id=None)

    assert (exc.value.requested, exc.value.available) == (2, 1)
    assert figures(book) == {1: (3, 2)}
    assert book.allocations == {(OTHER_LINE, 1): 2}


def test_fulfilment_from_an_explicit_warehouse_uses_the_allocation_held_there() -> None:
    book = Book.of([level(1, warehouse=7, priority=0, quantity=3, allocated=1),
                    level(2, warehouse=8, priority=1, quantity=3, allocated=1)],
                   {(LINE, 1): 1, (LINE, 2): 1})

    parts = book.fulfill(LINE, VARIANT, 2, tracked=True, warehouse_id=8)

    assert parts == [FulfilledPart(LINE, 2, 8, 2)]
    assert figures(book) == {1: (3, 1), 2: (1, 0)}
    assert book.allocations == {(LINE, 1): 1}


def test_fulfilment_from_an_explicit_warehouse_needs_free_stock_there() -> None:
    book = Book.of([level(1, warehouse=7, priority=0, quantity=9),
                    level(2, warehouse=8, priority=1, quantity=3, allocated=2)],
                   {(OTHER_LINE, 2): 2})

    with pytest.raises(InsufficientStock) as exc:
        book.fulfill(LINE, VARIANT, 2, tracked=True, warehouse_id=8)

    assert (exc.value.warehouse_id, exc.value.requested, exc.value.available) == (8, 2, 1)
    assert book.stock_deltas() == {}


def test_fulfilment_from_a_warehouse_without_a_stock_record_fails() -> None:
    book = Book.of([level(1, warehouse=7, quantity=9)])

    with pytest.raises(InsufficientStock) as exc:
        book.fulfill(LINE, VARIANT, 1, tracked=True, warehouse_id=8)

    assert (exc.value.warehouse_id, exc.value.available) == (8, 0)


def test_fulfilment_without_any_serving_stock_is_not_available_in_the_country() -> None:
    book = Book.of([level(1, serves=False, quantity=9)])

    with pytest.raises(NotAvailableInCountry):
        book.fulfill(LINE, VARIANT, 1, tracked=True, warehouse_id=None)


def test_fulfilment_of_an_untracked_variant_keeps_the_stock_figures() -> None:
    book = Book.of([level(1, warehouse=7, quantity=0)])

    parts = book.fulfill(LINE, VARIANT, 5, tracked=False, warehouse_id=None)

    assert parts == [FulfilledPart(LINE, 1, 7, 5)]
    assert figures(book) == {1: (0, 0)}
    assert book.stock_deltas() == {}


def test_pg_array_literals_quote_and_escape_text() -> None:
    from domain.db import pg_array

    assert pg_array([3, 1, 2]) == "{3,1,2}"
    assert pg_array(['a"b', "c\\d", "x,y"]) == '{"a\\"b","c\\\\d","x,y"}'
