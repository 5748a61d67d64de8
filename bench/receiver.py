"""A loopback receiver of sales-channel pushes and stock webhook events (API.md "Sales
channels (inventory sync)", "Stock webhooks").

One `ThreadingHTTPServer` on 127.0.0.1 (port 0) in the bench process serves every channel
of the sync workload, one path each (`/channels/<n>`) with that channel's secret, and
every webhook subscription of the feeds-and-hooks workload (`/webhooks/<n>`). Each request
is checked with the `standardwebhooks` package (401 when it does not verify). A push's JSON
`{"type", "channelId", "updates": [{"externalId", "sku", "available", "version"}]}` is
read, and per externalId the bench keeps when each (available, version) first arrived, in
`time.monotonic()` (a system-wide clock on Linux, the one the load generator stamps its
answers with), plus the figure of the highest version seen. A webhook event `{"type",
"timestamp", "data": {"variantId", "warehouseId", "quantityAvailable", "version", ...}}`
is kept the same way as one update of the stock `<variantId>|<warehouseId>`, with
`quantityAvailable` as its figure. Answer: 204.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from standardwebhooks.webhooks import Webhook

from bench.server import HOST

Kind = Literal["channel", "webhook"]
EVENT_TYPES = frozenset({"stock.updated", "stock.out_of_stock", "stock.back_in_stock",
                         "stock.low"})
EVENT_DATA = ("variantId", "sku", "warehouseId", "quantity", "quantityAllocated",
              "quantityAvailable", "lowStockThreshold", "version")


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, slots=True)
class Arrival:
    """The first time a listing's (available, version) reached the receiver."""

    at: float  # time.monotonic()
    available: int
    version: int


def stock_key(variant_gid: str, warehouse_gid: str) -> str:
    """The key a webhook endpoint keeps a stock's events under."""
    return f"{variant_gid}|{warehouse_gid}"


def event_updates(body: Any) -> list[dict[str, Any]]:
    """A webhook event as the one update of its stock; ValueError/KeyError/TypeError when
    it is not shaped as API.md "Stock webhooks" says."""
    if body.get("type") not in EVENT_TYPES or not isinstance(body.get("timestamp"), str):
        raise ValueError(body.get("type"))
    data = body["data"]
    missing = [key for key in EVENT_DATA if key not in data]
    if missing:
        raise KeyError(missing)
    return [{"externalId": stock_key(data["variantId"], data["warehouseId"]),
             "available": int(data["quantityAvailable"]), "version": int(data["version"])}]


@dataclass(slots=True)
class Endpoint:
    """What one channel's (or webhook subscription's) path received."""

    secret: str
    webhook: Webhook
    kind: Kind = "channel"
    types: Counter[str] = field(default_factory=Counter)  # webhook events by type
    requests: int = 0  # pushes (events) that verified
    updates: int = 0  # updates they carried
    bad_signatures: int = 0
    bad_bodies: int = 0
    regressions: int = 0  # an update with a lower version than one seen before
    conflicts: int = 0  # the same version of a listing with another figure
    arrivals: dict[str, list[Arrival]] = field(default_factory=dict)  # first of each figure
    latest: dict[str, tuple[int, int]] = field(default_factory=dict)  # (version, available)

    def take(self, at: float, updates: list[dict[str, Any]]) -> None:
        """Record one verified push (the receiver's lock is held)."""
        self.requests += 1
        self.updates += len(updates)
        for u in updates:
            ext, available, version = str(u["externalId"]), int(u["available"]), \
                int(u["version"])
            seen = self.latest.get(ext)
            if seen is not None and version < seen[0]:
                self.regressions += 1
                continue
            if seen is not None and version == seen[0]:
                self.conflicts += available != seen[1]
                continue  # a retry of the same version: nothing new
            self.latest[ext] = (version, available)
            self.arrivals.setdefault(ext, []).append(Arrival(at, available, version))


class Receiver:
    """The push receiver; `endpoint(secret)` adds a channel path, `url` of it for the
    channel's `endpointUrl`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.endpoints: dict[str, Endpoint] = {}
        self.unknown_paths = 0
        self._server = ThreadingHTTPServer((HOST, 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="sync-receiver", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def endpoint(self, secret: str, kind: Kind = "channel") -> str:
        """A new channel (or webhook subscription) path checked with `secret`; its full
        URL."""
        with self.lock:
            path = f"/{kind}s/{len(self.endpoints) + 1}"
            self.endpoints[path] = Endpoint(secret, Webhook(secret), kind)
        return self.base_url + path

    def at(self, url: str) -> Endpoint:
        """The endpoint behind a URL `endpoint` returned."""
        return self.endpoints[url.removeprefix(self.base_url)]

    def latest(self, url: str) -> dict[str, int]:
        """externalId -> the figure of the highest version received so far."""
        with self.lock:
            return {ext: available for ext, (_, available) in self.at(url).latest.items()}

    def counts(self) -> tuple[int, int]:
        """(pushes, updates) received on every path so far."""
        with self.lock:
            return (sum(e.requests for e in self.endpoints.values()),
                    sum(e.updates for e in self.endpoints.values()))

    def receive(self, path: str, body: bytes, headers: dict[str, str], at: float) -> int:
        """Verify and record one push; the HTTP status to answer."""
        endpoint = self.endpoints.get(path)
        if endpoint is None:
            with self.lock:
                self.unknown_paths += 1
            return 404
        try:
            endpoint.webhook.verify(body, headers, json_parse=False)
        except Exception:  # WebhookVerificationError, malformed headers
            with self.lock:
                endpoint.bad_signatures += 1
            return 401
        try:
            push = json.loads(body)
            if endpoint.kind == "webhook":
                updates = event_updates(push)
            else:
                updates = list(push["updates"])
                if push.get("type") != "inventory.updated":
                    raise ValueError(push.get("type"))
        except (ValueError, KeyError, TypeError, AttributeError):
            with self.lock:
                endpoint.bad_bodies += 1
            return 400
        with self.lock:
            if endpoint.kind == "webhook":
                endpoint.types[push["type"]] += 1
            endpoint.take(at, updates)
        return 204


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            at = time.monotonic()
            status = receiver.receive(self.path, body, dict(self.headers.items()), at)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None  # quiet: thousands of pushes

    return Handler
