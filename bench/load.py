"""GraphQL load generator; `run_http_workload` is meant to run in its own process."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.cpu import own_cpu_seconds
from bench.http_client import HttpxPoster, Poster, RawPoster, httpx_client
from bench.stats import Tally, WorkloadResult
from bench.workload import Timing, Workload

R = TypeVar("R")

QUERY = ("mutation BenchOrder($input: OrderCreateInput!) "
         "{ orderCreate(input: $input) { order { id } errors { code } } }")
BOUNDED_MAX_SECONDS = 120.0
REQUEST_TIMEOUT = 60.0  # a request still unanswered then counts as CLIENT_TimeoutError


@dataclass(frozen=True, slots=True)
class Target:
    """The server and how to talk to it."""

    host: str
    port: int
    token: str
    client: str  # "raw" or "httpx"


def variant_gid(pk: int) -> str:
    """Relay global ID of a ProductVariant (api/ids.py)."""
    from api import ids

    return ids.encode("ProductVariant", pk)


def order_body(variant_ids: list[str]) -> bytes:
    """orderCreate request: constant query text, the order in variables."""
    lines = [{"variantId": v, "quantity": 1} for v in variant_ids]
    variables = {"input": {"type": "REGULAR", "shippingCountry": "DE", "lines": lines}}
    return json.dumps({"query": QUERY, "variables": variables,
                       "operationName": "BenchOrder"}).encode()


def classify(status: int, body: bytes) -> tuple[str | None, bool, str | None]:
    """(None if the order was created else a failure code, 'deadlock' in the response,
    the order's global ID)."""
    deadlock = b"deadlock" in body.lower()
    if status != 200:
        return f"HTTP_{status}", deadlock, None
    try:
        data = json.loads(body)
    except ValueError:
        return "BAD_JSON", deadlock, None
    if not isinstance(data, dict):
        return "BAD_JSON", deadlock, None
    if data.get("errors"):
        return "GRAPHQL_ERROR", deadlock, None
    payload = (data.get("data") or {}).get("orderCreate") or {}
    errors = payload.get("errors")
    order = payload.get("order") or {}
    if errors == [] and isinstance(order.get("id"), str):
        return None, deadlock, order["id"]
    if not errors:
        return "NO_ORDER", deadlock, None
    return "+".join(sorted({str(e.get("code")) for e in errors})), deadlock, None


def order_pk(global_id: str) -> int | None:
    """The pk of an Order global ID, None when it is not one."""
    from api import ids

    try:
        type_name, pk = ids.parse(global_id)
    except ids.InvalidId:
        return None
    return pk if type_name == "Order" else None


async def _client(poster: Poster, workload: Workload, gids: dict[int, str], tally: Tally,
                  seed: int) -> None:
    rng = random.Random(seed)
    stop_issuing = tally.window[1]
    try:
        while time.perf_counter() < stop_issuing:
            variants = workload.pick(rng)
            body = order_body([gids[v] for v in variants])
            start = time.perf_counter()
            placed = None
            try:
                status, payload = await asyncio.wait_for(poster.post(body), REQUEST_TIMEOUT)
                code, deadlock, gid = classify(status, payload)
            except Exception as exc:  # transport errors of either client, timeouts
                code, deadlock, gid = f"CLIENT_{type(exc).__name__}", False, None
            finished = time.perf_counter()
            if gid is not None:
                pk = order_pk(gid)
                if pk is None:
                    code = "BAD_ORDER_ID"
                else:
                    placed = (pk, tuple(variants))
            tally.record(start, finished, code, deadlock, placed)
            stop = workload.stop_after_insufficient
            if (stop and tally.insufficient >= stop) or tally.given_up:
                return
    finally:
        await poster.close()


async def _run(target: Target, workload: Workload, timing: Timing) -> WorkloadResult:
    gids = {pk: variant_gid(pk) for pk in workload.pool}
    bounded = workload.stop_after_insufficient > 0
    t_start = time.perf_counter()
    t0 = t_start if bounded else t_start + timing.warmup
    t1 = t_start + BOUNDED_MAX_SECONDS if bounded else t0 + timing.seconds
    shared = httpx_client(target.host, target.port, target.token, timing.clients) \
        if target.client == "httpx" else None
    posters: list[Poster] = [
        HttpxPoster(shared) if shared is not None
        else RawPoster(target.host, target.port, target.token) for _ in range(timing.clients)]
    tallies = [Tally((t0, t1), workload.expected_refusals) for _ in posters]
    tasks = [asyncio.create_task(_client(p, workload, gids, t, seed=i))
             for i, (p, t) in enumerate(zip(posters, tallies, strict=True))]
    cpu_start = await _cpu_at(t0)
    if bounded:
        await asyncio.gather(*tasks)
        cpu_end = own_cpu_seconds()
    else:
        cpu_end = await _cpu_at(t1)
        await asyncio.gather(*tasks)
    finished = min(time.perf_counter(), t1)
    cpu_used = cpu_end - cpu_start
    if shared is not None:
        await shared.aclose()
    window = finished - t0
    result = WorkloadResult.merge(workload.name, "graphql", window, tallies,
                                  client_cpu=cpu_used / window if window > 0 else 0.0)
    result.extra["client"] = target.client
    return result


async def _cpu_at(moment: float) -> float:
    await asyncio.sleep(max(0.0, moment - time.perf_counter()))
    return own_cpu_seconds()


def run_loop(main: Coroutine[Any, Any, R]) -> R:
    """`main` run to its end on a new event loop: uvloop's when installed (the load
    generators'), else asyncio's."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(main)


def run_http_workload(target: Target, workload: Workload, timing: Timing) -> WorkloadResult:
    """Drive `timing.clients` concurrent keep-alive clients against the server."""
    return run_loop(_run(target, workload, timing))
