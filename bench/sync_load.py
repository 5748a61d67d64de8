"""`orderCreate` load of the sync workload; `run_sync_load` runs in its own process.

Every order is REGULAR, shippingCountry DE, 1 line of quantity 1 of a random variant of the
pool. Either open loop at a fixed rate (`rate`: request i is sent at t_start + i / rate on
the first free one of `RATE_CONNECTIONS` keep-alive connections) or closed loop with
`timing.clients` clients (as fast as they get answers, like `spread`). Besides the usual
tally, each successful order gives (variant, sent, answered) in `time.monotonic()`, the
clock the bench process's receiver stamps pushes with.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from dataclasses import dataclass, field

from bench.http_client import RawPoster
from bench.load import (
    REQUEST_TIMEOUT,
    Target,
    classify,
    order_body,
    order_pk,
    run_loop,
    variant_gid,
)
from bench.stats import Tally, WorkloadResult
from bench.workload import Timing

RATE_CONNECTIONS = 16  # connections the fixed-rate stream spreads its requests over

Answered = tuple[int, float, float]  # (variant pk, sent, answered), time.monotonic()


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What to send: `rate` orders/s (None: as fast as `timing.clients` clients manage)."""

    name: str
    pool: tuple[int, ...]
    timing: Timing
    rate: float | None = None


@dataclass(slots=True)
class SyncLoad:
    """The tally of the run and every successful order's (variant, sent, answered)."""

    result: WorkloadResult
    answered: list[Answered] = field(default_factory=list)
    started: float = 0.0  # time.monotonic() when the first request could go
    window: tuple[float, float] = (0.0, 0.0)  # the measured window, time.monotonic()


async def _order(poster: RawPoster, variant: int, gid: str, tally: Tally,
                 answered: list[Answered]) -> None:
    """One orderCreate; the tally gets it, `answered` too when it created an order."""
    start = time.monotonic()
    try:
        status, payload = await asyncio.wait_for(poster.post(order_body([gid])),
                                                 REQUEST_TIMEOUT)
        code, deadlock, order_gid = classify(status, payload)
    except Exception as exc:  # transport errors, timeouts
        code, deadlock, order_gid = f"CLIENT_{type(exc).__name__}", False, None
    finished = time.monotonic()
    placed = None
    if order_gid is not None:
        pk = order_pk(order_gid)
        if pk is None:
            code = "BAD_ORDER_ID"
        else:
            placed = (pk, (variant,))
            answered.append((variant, start, finished))
    tally.record(start, finished, code, deadlock, placed)


async def _closed(poster: RawPoster, plan: SyncPlan, gids: dict[int, str], tally: Tally,
                  answered: list[Answered], seed: int) -> None:
    """One client of the closed loop: the next order as soon as the last is answered."""
    rng = random.Random(seed)
    try:
        while time.monotonic() < tally.window[1] and not tally.given_up:
            variant = rng.choice(plan.pool)
            await _order(poster, variant, gids[variant], tally, answered)
    finally:
        await poster.close()


async def _open(posters: list[RawPoster], plan: SyncPlan, gids: dict[int, str],
                tally: Tally, answered: list[Answered], t_start: float) -> None:
    """The fixed-rate stream: request i at t_start + i / rate, whatever is still in flight
    (it waits for a free connection when all are busy)."""
    assert plan.rate is not None
    rng = random.Random(0)
    idle: asyncio.Queue[RawPoster] = asyncio.Queue()
    for poster in posters:
        idle.put_nowait(poster)

    async def send(variant: int) -> None:
        poster = await idle.get()
        try:
            await _order(poster, variant, gids[variant], tally, answered)
        finally:
            idle.put_nowait(poster)

    tasks: list[asyncio.Task[None]] = []
    i = 0
    while (due := t_start + i / plan.rate) < tally.window[1] and not tally.given_up:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        variant = rng.choice(plan.pool)
        tasks.append(asyncio.create_task(send(variant)))
        i += 1
    await asyncio.gather(*tasks)
    for poster in posters:
        await poster.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(target: Target, plan: SyncPlan) -> SyncLoad:
    gids = {pk: variant_gid(pk) for pk in plan.pool}
    timing = plan.timing
    t_start = time.monotonic()
    t0 = t_start + timing.warmup
    t1 = t0 + timing.seconds
    answered: list[Answered] = []
    cpu_start = _cpu_seconds()
    if plan.rate is not None:
        tallies = [Tally((t0, t1))]
        posters = [RawPoster(target.host, target.port, target.token)
                   for _ in range(RATE_CONNECTIONS)]
        await _open(posters, plan, gids, tallies[0], answered, t_start)
    else:
        tallies = [Tally((t0, t1)) for _ in range(timing.clients)]
        await asyncio.gather(*(
            _closed(RawPoster(target.host, target.port, target.token), plan, gids, t,
                    answered, seed=i) for i, t in enumerate(tallies)))
    elapsed = time.monotonic() - t_start
    window = min(time.monotonic(), t1) - t0
    result = WorkloadResult.merge(plan.name, "graphql", window, tallies,
                                  client_cpu=(_cpu_seconds() - cpu_start) / elapsed)
    result.extra["client"] = target.client
    return SyncLoad(result, answered, t_start, (t0, t1))


def run_sync_load(target: Target, plan: SyncPlan) -> SyncLoad:
    """Send the plan's orders; meant for `bench.child.run_in_child`."""
    return run_loop(_run(target, plan))
