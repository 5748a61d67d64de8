"""Prometheus metrics (API.md "Access and operations", Operations): GET /metrics, requests
by operation and outcome, latency, orders by outcome and error code, and per channel,
feed and webhook subscription their state, read from the database."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from domain.models import WebhookEvent
from domain.services import channels, feeds
from domain.services import webhooks as subscriptions
from tests.commands import STOCKYARD, cli_env, free_port, wait_until_healthy
from tests.conftest import Api
from tests.factories import ADMIN, gid, shop

pytestmark = pytest.mark.anyio

PLACE = """mutation($input: OrderCreateInput!) {
  orderCreate(input: $input) { order { id } errors { code } } }"""


def samples(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value of a Prometheus text page."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def value(page: str, metric: str, /, **labels: str) -> float:
    return samples(page).get((metric, frozenset(labels.items())), 0.0)


async def _scrape(api: Api) -> str:
    response = await api.client.get("/metrics")  # anonymous, as API.md allows
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_requests_orders_and_their_outcomes_are_counted(api: Api) -> None:
    s = shop(api.db, stock1=2)
    before = await _scrape(api)
    order = {"input": {"type": "REGULAR", "shippingCountry": "DE", "lines": [
        {"variantId": gid("ProductVariant", s.variant), "quantity": 2}]}}
    await api.gql(PLACE, order)
    await api.gql(PLACE, order)  # nothing left: INSUFFICIENT_STOCK
    await api.client.post("/graphql", json={"query": "{ nope }"})
    await api.client.get("/healthz")
    after = await _scrape(api)

    def grew(metric: str, /, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    placing = "mutation orderCreate"
    assert grew("stockyard_requests_total", operation=placing, outcome="ok") == 1
    assert grew("stockyard_requests_total", operation=placing, outcome="refused") == 1
    assert grew("stockyard_requests_total", operation="http /graphql", outcome="error") == 1
    assert grew("stockyard_requests_total", operation="http /healthz", outcome="ok") == 1
    assert grew("stockyard_request_duration_seconds_count", operation=placing) == 2
    assert grew("stockyard_orders_total", outcome="created", code="") == 1
    assert grew("stockyard_orders_total", outcome="refused", code="INSUFFICIENT_STOCK") == 1


async def test_channels_feeds_and_subscriptions_show_their_state(api: Api) -> None:
    s = shop(api.db, stock1=5)
    sku = str(api.db.scalar("SELECT sku FROM product_variant WHERE id = :v", v=s.variant))
    channel, _ = channels.create_channel(api.db.uow(), ADMIN, seller_id=s.seller,
                                         data=channels.ChannelInput(
                                             name="Etsy", endpoint_url="http://127.0.0.1:9/x"))
    channels.upsert_listings(api.db.uow(), ADMIN, channel.id,
                             [channels.ListingInput("L1", sku), channels.ListingInput("L2", sku)])
    subscriptions.create(api.db.uow(), ADMIN, seller_id=None, data=subscriptions.SubscriptionInput(
        url="http://127.0.0.1:9/hooks", events=[WebhookEvent.OUT_OF_STOCK]))
    feed, _ = feeds.create(api.db.uow(), ADMIN, warehouse_id=s.w2, name="Acme")
    feeds.upsert_items(api.db.uow(), ADMIN, feed.id, [feeds.ItemInput(s.variant, "ACME-1")])
    channels.update_channel(api.db.uow(), ADMIN, channel.id, channels.ChannelInput(paused=True))

    page = await _scrape(api)
    c = {"channel": gid("SalesChannel", channel.id), "name": "Etsy"}
    assert value(page, "stockyard_channel_pending_updates", **c) == 2  # never pushed
    assert value(page, "stockyard_channel_paused", **c) == 1
    assert value(page, "stockyard_channel_failing", **c) == 0
    f = {"feed": gid("SupplierFeed", feed.id), "name": "Acme"}
    assert value(page, "stockyard_feed_items", **f) == 1
    assert value(page, "stockyard_feed_paused", **f) == 0
    subscription = int(api.db.scalar("SELECT id FROM webhook_subscription"))
    hook = {"subscription": gid("WebhookSubscription", subscription),
            "url": "http://127.0.0.1:9/hooks"}
    assert value(page, "stockyard_webhook_pending_deliveries", **hook) == 0
    assert value(page, "stockyard_webhook_failing", **hook) == 0


def test_two_server_processes_count_together(tmp_path: Path) -> None:
    """`serve --workers 2`: 100 requests on fresh connections spread over both processes
    (their pids in the JSON access lines), and every scrape, whichever process answers it,
    counts all 100."""
    env = cli_env(tmp_path) | {"STOCKYARD_LOG_FORMAT": "json"}
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port), "--workers", "2"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            wait_until_healthy(port, time.monotonic() + 30)
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                with httpx.Client() as fresh:  # a new connection each time
                    assert fresh.post(f"{url}/graphql",
                                      json={"query": "{ __typename }"}).status_code == 200
            counted = set()
            for _ in range(10):
                with httpx.Client() as fresh:
                    counted.add(value(fresh.get(f"{url}/metrics").text,
                                      "stockyard_requests_total",
                                      operation="query __typename", outcome="ok"))
        finally:
            server.terminate()
            server.wait(20)
    assert counted == {100}
    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{")]
    pids = {x["pid"] for x in lines if x.get("operation_label") == "query __typename"}
    assert len(pids) == 2


def test_metrics_can_be_off_or_on_a_port_of_their_own(tmp_path: Path) -> None:
    base = cli_env(tmp_path)
    port, metrics_port = free_port(), free_port()
    for extra, on_api, on_own in (({"STOCKYARD_METRICS": "off"}, 404, None),
                                  ({"STOCKYARD_METRICS_PORT": str(metrics_port)}, 404, 200)):
        server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port)],
                                  env=base | extra, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            wait_until_healthy(port, time.monotonic() + 30)
            assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == on_api
            if on_own is not None:
                own = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
                assert own.status_code == on_own
                assert "stockyard_requests_total" in own.text
        finally:
            server.terminate()
            server.wait(20)
