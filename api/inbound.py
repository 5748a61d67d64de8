"""What sales channels send in (API.md "Inbound orders"): `POST /channels/{channelId}/orders`
and `POST /channels/{channelId}/orders/{externalId}/cancel`, signed with the channel's
secret as Standard Webhooks says.

The checks run in this order, each answering before anything is written: the channel
(404), the signature and its timestamp (401), the body (422), then the order service,
whose refusals map to 409 (stock short, a state that forbids it) or 422 (a line names
nothing the seller sells). Path segments are read percent-decoded one by one from the raw
path, since a global ID may hold `/` (`%2F`).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import ids
from api.context import Services
from api.errors import StockyardError, errors_from
from domain import signing
from domain.errors import DomainError, ErrorCode, InvalidInput, NotFound, PermissionDenied, clip
from domain.services import channel_reads, feeds, orders
from domain.services.orders import InboundLine, OrderView

log = logging.getLogger("stockyard.inbound")

# a refusal's status by the codes of its errors, the first that matches
_NOT_PLACEABLE = {ErrorCode.INSUFFICIENT_STOCK, ErrorCode.NOT_AVAILABLE_IN_COUNTRY,
                  ErrorCode.INVALID_STATE, ErrorCode.CONFLICT}


def inbound_route(services: Services) -> Any:
    """The endpoint for every `/channels/...` POST."""

    async def endpoint(request: Request) -> Response:
        path = request.scope.get("raw_path") or request.url.path.encode()
        segments = [unquote(p) for p in path.split(b"?", 1)[0].decode("latin-1").split("/")]
        match segments:
            case ["", "channels", channel, "orders"]:
                return await _received(services, request, channel)
            case ["", "channels", channel, "orders", external_id, "cancel"]:
                return await _cancel(services, request, channel, external_id)
        return _refused(404, NotFound("no such endpoint"))

    return endpoint


def feed_route(services: Services) -> Any:
    """`POST /feeds/{feedId}`: an external supplier's figures (API.md "Supplier feeds"),
    signed with the feed's secret; 404, 401, 422 or 409 (paused) change nothing."""

    async def endpoint(request: Request) -> Response:
        path = request.scope.get("raw_path") or request.url.path.encode()
        segments = [unquote(p) for p in path.split(b"?", 1)[0].decode("latin-1").split("/")]
        if len(segments) != 3:
            return _refused(404, NotFound("no such endpoint"))
        feed = segments[2]
        try:
            type_name, feed_id = ids.parse(feed)
        except ids.InvalidId:
            type_name, feed_id = "", 0
        secret = await services.threads.run(functools.partial(
            services.read, feeds.feed_secret, feed_id)) if type_name == "SupplierFeed" else None
        if secret is None:
            return _refused(404, NotFound(f"no external supplier feed with ID {clip(feed)!r}",
                                          field="feedId"))
        body = await request.body()
        try:
            signing.verify(secret, body, request.headers)
        except signing.BadSignature as exc:
            return _refused(401, PermissionDenied(
                f"the request is not signed with the feed's secret ({clip(str(exc), 80)})"))
        try:
            unmatched = await services.threads.run(functools.partial(
                feeds.receive, services.uow(), feed_id, _feed_body(body)))
        except DomainError as exc:
            status = 404 if exc.code is ErrorCode.NOT_FOUND else \
                409 if exc.code is ErrorCode.INVALID_STATE else 422
            return _refused(status, exc)
        return JSONResponse({"unmatched": unmatched})

    return endpoint


def _feed_body(body: bytes) -> dict[str, int]:
    """`{"items": [{"sku": "...", "quantity": 7}]}` -> figures by SKU (a SKU given twice:
    the last wins); INVALID naming the first thing that is not so."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not JSON") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise InvalidInput("the body must be an object with a list `items`", field="items")
    if len(items) > feeds.MAX_POSTED:
        raise InvalidInput(f"at most {feeds.MAX_POSTED:,} items per request", field="items")
    figures: dict[str, int] = {}
    for i, item in enumerate(items):
        sku = item.get("sku") if isinstance(item, dict) else None
        quantity = item.get("quantity") if isinstance(item, dict) else None
        if not isinstance(sku, str) or not sku.strip() or len(sku) > feeds.MAX_TEXT:
            raise InvalidInput("sku must be a non-empty string", field=f"items.{i}.sku")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or \
                not 0 <= quantity <= 2**31 - 1:
            raise InvalidInput("quantity must be an integer, 0 or more",
                               field=f"items.{i}.quantity")
        figures[sku] = quantity
    return figures


async def _signed(services: Services, request: Request, channel: str
                  ) -> tuple[int, bytes] | Response:
    """The channel's pk and the body, once its signature holds; else the refusal."""
    try:
        type_name, channel_id = ids.parse(channel)
    except ids.InvalidId:
        type_name, channel_id = "", 0
    secret = await services.threads.run(functools.partial(
        services.read, channel_reads.channel_secret, channel_id)) \
        if type_name == "SalesChannel" else None
    if secret is None:
        return _refused(404, NotFound(f"no sales channel with ID {clip(channel)!r}",
                                      field="channelId"))
    body = await request.body()
    try:
        signing.verify(secret, body, request.headers)
    except signing.BadSignature as exc:
        return _refused(401, PermissionDenied(
            f"the request is not signed with the channel's secret ({clip(str(exc), 80)})"))
    return channel_id, body


async def _received(services: Services, request: Request, channel: str) -> Response:
    signed = await _signed(services, request, channel)
    if isinstance(signed, Response):
        return signed
    channel_id, body = signed
    try:
        external_id, country, lines = _order_body(body)
        view, new = await services.threads.run(functools.partial(
            orders.receive_from_channel, services.uow(), channel_id, external_id=external_id,
            shipping_country=country, lines=lines))
    except DomainError as exc:
        return _refused(_status(exc), exc)
    return _order(view, 201 if new else 200)


async def _cancel(services: Services, request: Request, channel: str, external_id: str
                  ) -> Response:
    signed = await _signed(services, request, channel)
    if isinstance(signed, Response):
        return signed
    channel_id, _ = signed
    try:
        view = await services.threads.run(functools.partial(
            orders.cancel_from_channel, services.uow(), channel_id, external_id))
    except DomainError as exc:
        return _refused(404 if exc.code is ErrorCode.NOT_FOUND else _status(exc), exc)
    return _order(view, 200)


def _order_body(body: bytes) -> tuple[str, str, list[InboundLine]]:
    """`{"externalId", "shippingCountry", "lines": [{"sku" | "externalId", "quantity"}]}`;
    INVALID naming the first thing that is not so."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    external_id = data.get("externalId")
    country = data.get("shippingCountry")
    lines = data.get("lines")
    if not isinstance(external_id, str):
        raise InvalidInput("externalId must be a string", field="externalId")
    if not isinstance(country, str):
        raise InvalidInput("shippingCountry must be a string", field="shippingCountry")
    if not isinstance(lines, list):
        raise InvalidInput("lines must be a list", field="lines")
    if len(lines) > orders.MAX_LINES:
        raise InvalidInput(f"at most {orders.MAX_LINES} lines per request", field="lines")
    parsed: list[InboundLine] = []
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            raise InvalidInput("a line must be an object", field=f"lines.{i}")
        sku, listing, quantity = line.get("sku"), line.get("externalId"), line.get("quantity")
        for name, value in (("sku", sku), ("externalId", listing)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"{name} must be a string", field=f"lines.{i}.{name}")
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise InvalidInput("quantity must be an integer", field=f"lines.{i}.quantity")
        parsed.append(InboundLine(sku, listing, quantity))
    return external_id, country, parsed


def _status(exc: DomainError) -> int:
    """409 when the order cannot be placed or changed as things stand, 422 for bad input
    (404 when the channel went away meanwhile)."""
    if any(e.field == "channelId" for e in exc.errors):
        return 404
    return 409 if all(e.code in _NOT_PLACEABLE for e in exc.errors) else 422


def _order(view: OrderView, status: int) -> Response:
    return JSONResponse({"orderId": ids.encode("Order", view.id), "status": view.status.value},
                        status_code=status)


def _refused(status: int, exc: DomainError) -> Response:
    log.info("inbound request refused (%s): %s", status, exc.errors[0].message)
    return JSONResponse({"errors": [_json(e) for e in errors_from(exc)]}, status_code=status)


def _json(error: StockyardError) -> dict[str, Any]:
    """A StockyardError as the GraphQL API spells it."""
    return {"code": str(error.code), "field": error.field, "message": error.message,
            "variantId": error.variant_id, "warehouseId": error.warehouse_id,
            "requested": error.requested, "available": error.available}
