"""The order mutations and reads as the order, fulfilment and line-edit tests call them."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api
from tests.factories import gid, id_mutation, input_mutation

ERRORS = "errors { code field message variantId warehouseId requested available }"
ORDER = """id type status shippingCountry
           lines { id quantity quantityFulfilled variant { id sku }
                   allocations { warehouse { id } quantity } }"""
ORDER_PAYLOAD = f"order {{ {ORDER} }} {ERRORS}"  # what every order mutation answers with
ORDER_CREATE = input_mutation("orderCreate", ORDER_PAYLOAD)
ORDER_CONFIRM = id_mutation("orderConfirm", ORDER_PAYLOAD)
ORDER_CANCEL = id_mutation("orderCancel", ORDER_PAYLOAD)
CONFIG_UPDATE = input_mutation(
    "marketplaceConfigurationUpdate",
    f"marketplaceConfiguration {{ allocation {{ orderType enabled }} }} {ERRORS}")
GET_ORDER = f"query($id: ID!) {{ node(id: $id) {{ ... on Order {{ {ORDER} }} }} }}"
VARIANT_STOCKS = """
query($id: ID!) {
  node(id: $id) { ... on ProductVariant {
    stocks { warehouse { id } quantity quantityAllocated quantityAvailable } } }
}"""


def order_input(order_type: str, lines: list[tuple[int, int]], country: str = "DE",
                key: str | None = None) -> dict[str, Any]:
    return {"input": {"type": order_type, "shippingCountry": country, "idempotencyKey": key,
                      "lines": [{"variantId": gid("ProductVariant", v), "quantity": q}
                                for v, q in lines]}}


async def create_order(api: Api, order_type: str, lines: list[tuple[int, int]],
                       country: str = "DE", token: str | None = "admin") -> dict[str, Any]:
    data = await api.gql(ORDER_CREATE, order_input(order_type, lines, country), token=token)
    return data["orderCreate"]  # type: ignore[no-any-return]


async def placed(api: Api, order_type: str, lines: list[tuple[int, int]],
                 country: str = "DE", token: str | None = "admin") -> dict[str, Any]:
    payload = await create_order(api, order_type, lines, country, token)
    assert payload["errors"] == []
    return payload["order"]  # type: ignore[no-any-return]


async def set_allocation(api: Api, order_type: str, enabled: bool) -> None:
    data = await api.gql(CONFIG_UPDATE, {"input": {"allocation": [
        {"orderType": order_type, "enabled": enabled}]}})
    assert data["marketplaceConfigurationUpdate"]["errors"] == []


async def reread(api: Api, order_id: str) -> dict[str, Any]:
    return (await api.gql(GET_ORDER, {"id": order_id}))["node"]  # type: ignore[no-any-return]


async def confirm(api: Api, order_id: str) -> dict[str, Any]:
    """The orderConfirm payload."""
    return (await api.gql(ORDER_CONFIRM, {"id": order_id}))["orderConfirm"]  # type: ignore[no-any-return]


async def cancel(api: Api, order: dict[str, Any]) -> dict[str, Any]:
    """The orderCancel payload of `order` (a payload's order: only its id is read)."""
    return (await api.gql(ORDER_CANCEL, {"id": order["id"]}))["orderCancel"]  # type: ignore[no-any-return]
