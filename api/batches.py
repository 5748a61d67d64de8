"""Pick batches in the schema (API.md "Pick batches (order reserve and batch reserve)")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from api import ids
from api.errors import StockyardError, errors_from
from api.queries import (
    Connection,
    Edge,
    PageInfo,
    _after,
    _allowed,
    _filter_id,
    _first,
    _utc,
)
from api.types import Fulfillment, Info, Node, Order, OrderLine, Warehouse, _warehouse
from domain import models, permissions
from domain.errors import DomainError
from domain.services import batches
from domain.services.batches import BatchView

PickBatchStatusEnum = strawberry.enum(models.PickBatchStatus, name="PickBatchStatus")


@strawberry.type(description="Units of one order line that the batch holds (OPEN), picked "
                             "(COMPLETED) or held until it was canceled (CANCELED).")
class PickBatchLine:
    quantity: int
    line_pk: strawberry.Private[int]

    @strawberry.field
    async def order_line(self, info: Info) -> OrderLine:
        return OrderLine.from_model(await info.context.loaders.order_line.load(self.line_pk))


@strawberry.type(description="Orders a warehouse picks together. While OPEN its units are "
                             "held by the batch (Stock.quantityReservedForBatches).")
class PickBatch(Node):
    status: PickBatchStatusEnum  # type: ignore[valid-type]
    created_at: datetime
    completed_at: datetime | None
    canceled_at: datetime | None
    pk: strawberry.Private[int]
    warehouse_pk: strawberry.Private[int]
    view: strawberry.Private[BatchView]

    @classmethod
    def from_view(cls, v: BatchView) -> PickBatch:
        return cls(id=strawberry.ID(ids.encode("PickBatch", v.id)), pk=v.id,
                   warehouse_pk=v.warehouse_id, status=v.status,
                   created_at=_utc(v.created_at) or v.created_at,
                   completed_at=_utc(v.completed_at), canceled_at=_utc(v.canceled_at), view=v)

    @strawberry.field
    async def warehouse(self, info: Info) -> Warehouse:
        return await _warehouse(info, self.warehouse_pk)

    @strawberry.field(description="In the order they joined; an order canceled while the "
                                  "batch was open has left it.")
    async def orders(self, info: Info) -> list[Order]:
        rows = await info.context.loaders.order.load_many(list(self.view.order_ids))
        return [Order.from_model(r) for r in rows if r is not None]

    @strawberry.field
    def lines(self) -> list[PickBatchLine]:
        return [PickBatchLine(quantity=line.quantity, line_pk=line.order_line_id)
                for line in self.view.lines]


@strawberry.input
class PickBatchCreateInput:
    warehouse_id: strawberry.ID
    order_ids: list[strawberry.ID] = strawberry.field(description=(
        "REGULAR orders with units allocated in the warehouse and left to ship "
        "(at most 1,000)."))


@strawberry.type
class PickBatchCreatePayload:
    pick_batch: PickBatch | None
    errors: list[StockyardError]


@strawberry.type
class PickBatchCompletePayload:
    pick_batch: PickBatch | None
    fulfillments: list[Fulfillment] | None = strawberry.field(description=(
        "One per order of the batch; null when the call failed."))
    errors: list[StockyardError]


@strawberry.type
class PickBatchCancelPayload:
    pick_batch: PickBatch | None
    errors: list[StockyardError]


async def _run(info: Info, call: Any, *args: Any, **kwargs: Any) -> Any:
    return await info.context.run(call, *args, **kwargs)


@strawberry.type
class BatchMutations:
    @strawberry.mutation(description="Moves the orders' units in the warehouse from order "
                                     "reserve to batch reserve; available does not change.")
    async def pick_batch_create(self, info: Info, input: PickBatchCreateInput
                                ) -> PickBatchCreatePayload:
        try:
            warehouse = ids.decode(input.warehouse_id, "Warehouse", "input.warehouseId")
            order_ids = [ids.decode(v, "Order", f"input.orderIds.{i}")
                         for i, v in enumerate(input.order_ids)]
            view = await _run(info, batches.create, warehouse_id=warehouse,
                              order_ids=order_ids)
        except DomainError as exc:
            return PickBatchCreatePayload(pick_batch=None, errors=errors_from(exc))
        return PickBatchCreatePayload(pick_batch=PickBatch.from_view(view), errors=[])

    @strawberry.mutation(description="Ships every unit of the batch from its warehouse: one "
                                     "BATCH_PICK movement per stock, one fulfilment per "
                                     "order.")
    async def pick_batch_complete(self, info: Info, id: strawberry.ID
                                  ) -> PickBatchCompletePayload:
        try:
            view, made = await _run(info, batches.complete, ids.decode(id, "PickBatch", "id"))
        except DomainError as exc:
            return PickBatchCompletePayload(pick_batch=None, fulfillments=None,
                                            errors=errors_from(exc))
        return PickBatchCompletePayload(pick_batch=PickBatch.from_view(view), errors=[],
                                        fulfillments=[Fulfillment.from_row(f) for f in made])

    @strawberry.mutation(description="The batch's units go back to order reserve.")
    async def pick_batch_cancel(self, info: Info, id: strawberry.ID) -> PickBatchCancelPayload:
        try:
            view = await _run(info, batches.cancel, ids.decode(id, "PickBatch", "id"))
        except DomainError as exc:
            return PickBatchCancelPayload(pick_batch=None, errors=errors_from(exc))
        return PickBatchCancelPayload(pick_batch=PickBatch.from_view(view), errors=[])


@strawberry.type
class BatchQueries:
    @strawberry.field(description="Newest first: an admin's every batch, a seller token's "
                                  "own warehouses' batches.")
    async def pick_batches(
        self, info: Info, warehouse_id: strawberry.ID | None = None,
        status: PickBatchStatusEnum | None = None,  # type: ignore[valid-type]
        first: int | None = None, after: str | None = None,
    ) -> Connection[PickBatch]:
        principal = _allowed(permissions.require_picker, info.context.principal)
        size = _first(first)
        rows = await info.context.read(
            batches.page, size, _after(after),
            _filter_id(warehouse_id, "Warehouse", "warehouseId"),
            models.PickBatchStatus(status) if status is not None else None,
            permissions.seller_scope(principal))
        edges = [Edge(node=PickBatch.from_view(r), pk=r.id) for r in rows[:size]]
        return Connection(edges=edges, page_info=PageInfo.of(
            edges, after, has_next_page=len(rows) > size))
