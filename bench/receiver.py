"""A loopback receiver of sales-channel pushes (API.md "Sales channels (inventory sync)").

One `ThreadingHTTPServer` on 127.0.0.1 (port 0) in the bench process serves every channel
of the sync workload, one path each (`/channels/<n>`) with that channel's secret. Each push
is checked with the `standardwebhooks` package (401 when it does not verify), its JSON
`{"type", "channelId", "updates": [{"externalId", "sku", "available", "version"}]}` is
read, and per externalId the bench keeps when each (available, version) first arrived, in
`time.monotonic()` (a system-wide clock on Linux, the one the load generator stamps its
answers with), plus the figure of the highest version seen. Answer: 204.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook

from bench.server import HOST


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, slots=True)
class Arrival:
    """The first time a listing's (available, version) reached the receiver."""

    at: float  # time.monotonic()
    available: int
    version: int


@dataclass(slots=True)
class Endpoint:
    """What one channel's path received."""

    secret: str
    webhook: Webhook
    requests: int = 0  # pushes that verified
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

    def endpoint(self, secret: str) -> str:
        """A new channel path checked with `secret`; its full URL."""
        with self.lock:
            path = f"/channels/{len(self.endpoints) + 1}"
            self.endpoints[path] = Endpoint(secret, Webhook(secret))
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
            updates = list(push["updates"])
            if push.get("type") != "inventory.updated":
                raise ValueError(push.get("type"))
        except (ValueError, KeyError, TypeError):
            with self.lock:
                endpoint.bad_bodies += 1
            return 400
        with self.lock:
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
