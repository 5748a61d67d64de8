"""What the event tests share: a record of the messages an actor processed, an order
placed through the app, and a private Redis server."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import httpx
import redis

from tests.factories import gid

ORDER_CREATE = """mutation($input: OrderCreateInput!) {
  orderCreate(input: $input) { order { id } errors { code message } } }"""


def order_input(variant: int, quantity: int = 1) -> dict[str, Any]:
    return {"input": {"type": "REGULAR", "shippingCountry": "DE",
                      "lines": [{"variantId": gid("ProductVariant", variant),
                                 "quantity": quantity}]}}


def place_order(client: httpx.Client, token: str, variant: int) -> None:
    """orderCreate over HTTP; asserts it succeeded."""
    body = client.post("/graphql", json={"query": ORDER_CREATE,
                                         "variables": order_input(variant)},
                       headers={"Authorization": f"Bearer {token}"}).json()
    assert body["data"]["orderCreate"]["errors"] == [], body


class Processed(dramatiq.Middleware):
    """The first argument of every message an actor finished, and of every one it failed."""

    def __init__(self) -> None:
        self.done: list[Any] = []
        self.failed: list[Any] = []
        self._changed = threading.Condition()

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message,
                              *, result: Any = None, exception: Any = None) -> None:
        with self._changed:
            (self.failed if exception is not None else self.done).append(message.args[0])
            self._changed.notify_all()

    def variants(self) -> set[int]:
        return {v for batch in self.done for v in batch}

    def wait_for(self, variants: set[int], timeout: float = 20) -> None:
        """Until the actor finished messages naming all of `variants`."""
        with self._changed:
            assert self._changed.wait_for(lambda: variants <= self.variants(), timeout), \
                f"delivered {self.done}, failed {self.failed}; expected {variants}"


class PrivateRedis:
    """A redis-server of the test's own on a free port, never the shared one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def queued_variants(self, queue: str = "stock-events") -> set[int]:
        """The variants named by the messages waiting in `queue` (dramatiq's Redis layout)."""
        client = redis.Redis(port=self.port)
        return {v for raw in client.hvals(f"dramatiq:{queue}.msgs")
                for v in dramatiq.Message.decode(raw).args[0]}


def redis_server_missing() -> str | None:
    try:
        subprocess.run(["redis-server", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"no redis-server executable: {exc!r}"
    return None


def private_redis(port: int) -> Iterator[PrivateRedis]:
    server = PrivateRedis(port)
    try:
        yield server
    finally:
        server.stop()
