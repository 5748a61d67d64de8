"""A real HTTP receiver on loopback for pushes: it verifies each request's Standard Webhooks
signature, applies updates as a store would (a lower version than one applied is dropped
and counted), and answers what the test scripts (a status, a delay, Retry-After)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    signed: bool
    status: int = 200  # what the receiver answered


@dataclass
class Receiver:
    url: str
    secret: str
    requests: list[Received] = field(default_factory=list)
    shown: dict[str, tuple[int, int]] = field(default_factory=dict)  # externalId -> (q, v)
    went_back: list[tuple[str, int, int]] = field(default_factory=list)
    # what to answer next: each request pops one (status, delay, headers); empty: 200
    script: list[tuple[int, float, dict[str, str]]] = field(default_factory=list)
    default: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int, times: int = 1, delay: float = 0.0,
               headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.script += [(status, delay, headers or {})] * times

    def wait_for(self, expected: dict[str, int], timeout: float = 10.0) -> None:
        """Until the store shows these figures (externalId -> available)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                now = {k: v[0] for k, v in self.shown.items() if k in expected}
            if now == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver shows {now}, not {expected}")
            time.sleep(0.02)

    def updates(self) -> list[dict[str, Any]]:
        with self.lock:
            return [u for r in self.requests for u in r.body.get("updates", [])]


@contextmanager
def receiving(secret: str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", port: int = 0
              ) -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def do_POST(self) -> None:
            receiver = box[0]
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                Webhook(receiver.secret).verify(raw.decode(), headers, json_parse=False)
                signed = True
            except Exception:
                signed = False
            with receiver.lock:
                status, delay, extra = receiver.script.pop(0) if receiver.script \
                    else (receiver.default, 0.0, {})
            if delay:
                time.sleep(delay)
            body = json.loads(raw) if raw else {}
            with receiver.lock:
                receiver.requests.append(Received(headers, body, time.monotonic(), signed,
                                                  status))
                if 200 <= status < 300 and signed:
                    for u in body.get("updates", []):
                        before = receiver.shown.get(u["externalId"])
                        if before is not None and u["version"] < before[1]:
                            receiver.went_back.append((u["externalId"], before[1],
                                                       u["version"]))
                            continue
                        receiver.shown[u["externalId"]] = (u["available"], u["version"])
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    box.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}/push", secret))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
