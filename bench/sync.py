"""The sync workload (`python -m bench.run --sync`): how long a committed order takes to
reach a sales channel's endpoint, and what 10 channels cost `orderCreate`.

Per broker mode (embedded: the serve processes push; redis: `STOCKYARD_BROKER_URL` and one
`stockyard worker` push), a fresh `stockyard serve` on the seeded database and:

1. one channel (`salesChannelCreate` through GraphQL, `maxRequestsPerSecond: 100`) listing
   a pool of `--sync-pool` SKUs, its endpoint a path of the bench's loopback receiver
   (bench/receiver.py); the bench waits until the receiver shows every listing's figure;
2. `rate`: orders at `--sync-rate` orders/s over that pool, then `full`: as many as
   `--clients` clients manage; after each, the bench waits until the receiver shows every
   listing's final figure (the drain) and works out each order's sync latency (below);
3. `cost-0`: the full-rate workload over a second pool no channel lists, then `cost-N`:
   the same after `--sync-channels` channels each list every SKU of that pool.

Each mode uses its own two pools, so the channels of one mode never see the orders of
another. Sync latency of an order o of variant v, answered at t_o (monotonic clock, shared
by the load generator's process and the receiver's): with r_o its rank among the phase's
successful orders of v by answer time (1 = first) and base_v the figure every listing of v
showed before the phase, latency = T - t_o, T the first arrival at the channel of a figure
<= base_v - r_o (negative: 0). Each order takes exactly one unit, and the r_o orders of v
answered by t_o have all committed by then, so every figure worked out after t_o is at most
base_v - r_o; only orders of one variant in flight at once and committed in another order
than answered make it early or late, by their own gap. With several channels, an order's
latency is the time until the last of them had it.
"""

from __future__ import annotations

import bisect
import json
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import cpu
from bench.bulk import Client
from bench.child import run_in_child
from bench.database import VAR, BenchDatabase
from bench.load import Target
from bench.progress import say, settle
from bench.receiver import Arrival, Receiver, new_secret
from bench.seed import Seeded
from bench.server import HOST, Server, Worker
from bench.stats import WorkloadResult, percentile
from bench.sync_load import Answered, SyncLoad, SyncPlan, run_sync_load
from bench.workload import Timing

MODES = ("embedded", "redis")
LISTINGS_PER_CALL = 1_000
MAX_REQUESTS_PER_SECOND = 100
WAIT_SECONDS = 30.0  # for the initial figures, and for the final ones after a phase
POLL = 0.02

CREATE = ("mutation BenchChannel($input: SalesChannelCreateInput!) { salesChannelCreate("
          "input: $input) { salesChannel { id } secret errors { code field message } } }")
UPSERT = ("mutation BenchListings($channelId: ID!, $listings: [ListingInput!]!) { "
          "listingsUpsert(channelId: $channelId, listings: $listings) { "
          "salesChannel { id } errors { code field message } } }")
STATE = ("query BenchChannelState($id: ID!) { node(id: $id) { ... on SalesChannel { "
         "status lastError lastErrorAt lastSyncedAt pendingUpdates } } }")
FIGURES = """
SELECT variant_id, SUM(CASE WHEN quantity > quantity_allocated
                            THEN quantity - quantity_allocated ELSE 0 END)
FROM stock WHERE variant_id IN ({marks}) GROUP BY variant_id
"""


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """The sync workload's settings (from the command line)."""

    modes: tuple[str, ...]
    redis_url: str
    rate: float
    pool: int
    channels: int
    timing: Timing
    workers: int
    http_client: str


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel the bench made: its global ID, its endpoint at the receiver, and its
    listings (externalId -> variant pk)."""

    gid: str
    url: str
    listings: dict[str, int]


@dataclass(slots=True)
class SyncPhase:
    """One order workload of the sync part: orderCreate's figures and the sync latency."""

    mode: str
    name: str
    channels: int
    listings: int
    load: WorkloadResult
    latencies_ms: list[float] = field(default_factory=list)  # orders begun in the window
    unsynced: int = 0  # orders begun in the window whose figure never arrived
    early: int = 0  # of the latencies, figures that arrived before the order's answer (0)
    synced_before: bool = True  # every listing showed its figure before the phase
    drained: bool = True  # ... and its final figure within WAIT_SECONDS after the load
    drain_s: float | None = None  # last answer -> every listing at its final figure
    pushes: int = 0
    updates: int = 0
    server_cpu: float | None = None  # cores, load and drain
    worker_cpu: float | None = None
    machine_busy: float | None = None  # share of all CPUs, load and drain
    bench_cpu: float | None = None  # the bench process (the receiver), load and drain
    problems: list[str] = field(default_factory=list)

    def sync_ms(self, pct: float) -> float | None:
        return percentile(sorted(self.latencies_ms), pct)

    @property
    def sync_max_ms(self) -> float | None:
        return max(self.latencies_ms) if self.latencies_ms else None

    def to_json(self) -> dict[str, Any]:
        load = self.load
        return {
            "mode": self.mode, "phase": self.name, "channels": self.channels,
            "listings": self.listings, "orders_per_s": round(load.orders_per_s, 1),
            "order_p50_ms": load.p50_ms, "order_p99_ms": load.p99_ms,
            "order_max_ms": load.max_ms, "ok": load.ok, "ok_completed": load.ok_completed,
            "seconds": load.seconds, "failures": load.failures,
            "sync_orders": len(self.latencies_ms), "sync_unsynced": self.unsynced,
            "sync_before_answer": self.early,
            "sync_p50_ms": self.sync_ms(50), "sync_p99_ms": self.sync_ms(99),
            "sync_max_ms": self.sync_max_ms,
            "sync_mean_ms": statistics.fmean(self.latencies_ms) if self.latencies_ms else None,
            "synced_before": self.synced_before, "drained": self.drained,
            "drain_s": self.drain_s,
            "pushes": self.pushes, "updates": self.updates, "server_cpu": self.server_cpu,
            "worker_cpu": self.worker_cpu, "client_cpu": load.client_cpu,
            "machine_busy": self.machine_busy, "bench_cpu": self.bench_cpu,
            "problems": self.problems}


@dataclass(slots=True)
class SyncRun:
    """Every phase of every mode, and what the receiver saw overall."""

    phases: list[SyncPhase] = field(default_factory=list)
    receiver: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"phases": [p.to_json() for p in self.phases], "receiver": self.receiver,
                "problems": self.problems}


# -- GraphQL setup -------------------------------------------------------------------------


def graphql(client: Client, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """`data` of one request; RuntimeError on HTTP, GraphQL or payload errors. Each call
    on a fresh connection: between phases the server closes an idle keep-alive one, and a
    mutation is not retried blindly."""
    client.close()  # http.client connects again on the request
    status, body = client.post(json.dumps({"query": query, "variables": variables}).encode())
    data = json.loads(body) if status == 200 else None
    if not isinstance(data, dict) or data.get("errors") or not data.get("data"):
        raise RuntimeError(f"GraphQL request failed (HTTP {status}): {body[:500]!r}")
    for payload in data["data"].values():
        if isinstance(payload, dict) and payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return dict(data["data"])


def bench_sku(variant: int) -> str:
    """The SKU bench/seed.py gives a seeded variant."""
    return f"BENCH-{variant:06d}"


def create_channel(client: Client, receiver: Receiver, name: str, variants: Sequence[int],
                   seller: int = 1, sku: Callable[[int], str] = bench_sku) -> Channel:
    """A channel of `seller` (the bench seller) pushing to a new receiver path, listing
    `variants` (externalId `ext-<pk>`, SKU `sku(pk)`: the seeded variant's), at most 1,000
    listings a call. The listings map to the pks given, whatever variant the SKU names."""
    from api import ids

    secret = new_secret()
    url = receiver.endpoint(secret)
    created = graphql(client, CREATE, {"input": {
        "sellerId": ids.encode("Seller", seller), "name": name, "endpointUrl": url,
        "secret": secret, "maxRequestsPerSecond": MAX_REQUESTS_PER_SECOND}})
    gid = created["salesChannelCreate"]["salesChannel"]["id"]
    listings = {f"ext-{v}": v for v in variants}
    rows = [{"externalId": ext, "sku": sku(v)} for ext, v in listings.items()]
    for start in range(0, len(rows), LISTINGS_PER_CALL):
        graphql(client, UPSERT, {"channelId": gid,
                                 "listings": rows[start:start + LISTINGS_PER_CALL]})
    return Channel(gid, url, listings)


def channel_state(client: Client, channel: Channel) -> str:
    """status, lastError, pendingUpdates... of a channel, for a progress line."""
    try:
        node = graphql(client, STATE, {"id": channel.gid})["node"]
    except (RuntimeError, OSError) as exc:
        return f"(state unreadable: {exc})"
    return " ".join(f"{k}={v}" for k, v in (node or {}).items())


# -- figures -------------------------------------------------------------------------------


def db_figures(db: BenchDatabase, variants: Sequence[int]) -> dict[int, int]:
    """variant pk -> its figure on a channel fed by every warehouse (sum of available)."""
    sql = db.q(FIGURES.format(marks=", ".join("?" for _ in variants)))
    with db.connection() as conn:
        return {int(v): int(n) for v, n in conn.execute(sql, tuple(variants)).fetchall()}


def off_figures(receiver: Receiver, channels: Sequence[Channel],
                wanted: dict[int, int]) -> int:
    """Listings (over the channels) whose latest figure at the receiver is not `wanted`."""
    off = 0
    for channel in channels:
        shown = receiver.latest(channel.url)
        off += sum(shown.get(ext) != wanted[v] for ext, v in channel.listings.items())
    return off


def wait_figures(receiver: Receiver, channels: Sequence[Channel], wanted: dict[int, int],
                 timeout: float = WAIT_SECONDS) -> float | None:
    """Seconds until every listing shows `wanted` at the receiver; None after `timeout`."""
    return wait_shown(ChannelWatch(receiver, channels), wanted, timeout)


def wait_shown(watch: Watch, wanted: dict[int, int],
               timeout: float = WAIT_SECONDS) -> float | None:
    """Seconds until `watch` shows `wanted` everywhere; None after `timeout`."""
    started = time.monotonic()
    while watch.off(wanted):
        if time.monotonic() - started > timeout:
            return None
        time.sleep(POLL)
    return time.monotonic() - started


# -- latency -------------------------------------------------------------------------------


class Lowest:
    """A listing's arrivals as (time, lowest figure shown by then): the first time it
    showed a figure at most some level."""

    def __init__(self, arrivals: Iterable[Arrival]) -> None:
        self.times: list[float] = []
        self._negated: list[int] = []  # -lowest, non-decreasing (for bisect)
        low: int | None = None
        for a in sorted(arrivals, key=lambda a: a.at):
            low = a.available if low is None else min(low, a.available)
            self.times.append(a.at)
            self._negated.append(-low)

    def first_at_most(self, level: int) -> float | None:
        """When the listing first showed a figure <= level (None: never)."""
        i = bisect.bisect_left(self._negated, -level)
        return self.times[i] if i < len(self.times) else None


def sync_latencies(answered: Sequence[Answered], window: tuple[float, float],
                   base: dict[int, int], listings: Sequence[dict[int, Lowest]]
                   ) -> tuple[list[float], int, int]:
    """(latencies in ms of the orders sent inside `window`, how many of them never
    synced, how many of the latencies were negative, made 0); `listings`: per channel,
    variant -> its listing's arrivals (the module docstring has the definition)."""
    by_variant: dict[int, list[Answered]] = defaultdict(list)
    for a in answered:
        by_variant[a[0]].append(a)
    out: list[float] = []
    unsynced = early = 0
    for variant, orders in by_variant.items():
        orders.sort(key=lambda a: a[2])
        for rank, (_, sent, done) in enumerate(orders, start=1):
            if not window[0] <= sent < window[1]:
                continue
            seen = [per_channel[variant].first_at_most(base[variant] - rank)
                    if variant in per_channel else None for per_channel in listings]
            if any(t is None for t in seen):
                unsynced += 1
                continue
            latency = max(t for t in seen if t is not None) - done
            early += latency < 0
            out.append(max(0.0, latency) * 1000.0)
    return out, unsynced, early


def drain_seconds(answered: Sequence[Answered], final: dict[int, int],
                  listings: Sequence[dict[int, Lowest]]) -> float | None:
    """From the last order's answer until every listing had shown its final figure."""
    if not answered:
        return None
    shown = [lowest.first_at_most(final[v]) for per_channel in listings
             for v, lowest in per_channel.items()]
    if any(t is None for t in shown):
        return None
    return max(0.0, max(t for t in shown if t is not None) - max(a[2] for a in answered))


def arrivals_by_variant(receiver: Receiver, channel: Channel) -> dict[int, Lowest]:
    """variant -> Lowest of its listing on `channel`, from what the receiver holds now."""
    with receiver.lock:
        arrivals = {ext: list(a) for ext, a in receiver.at(channel.url).arrivals.items()}
    return {v: Lowest(arrivals.get(ext, [])) for ext, v in channel.listings.items()}


class Watch(Protocol):
    """Where a phase's figures (one per variant of its pool) show at the receiver."""

    def off(self, wanted: dict[int, int]) -> int:
        """How many places do not show their variant's `wanted` figure now."""
        ...

    def lowest(self) -> list[dict[int, Lowest]]:
        """Per target (a channel...): variant -> Lowest of what arrived so far."""
        ...


@dataclass(frozen=True, slots=True)
class ChannelWatch:
    """The listings of some channels."""

    receiver: Receiver
    channels: Sequence[Channel]

    def off(self, wanted: dict[int, int]) -> int:
        return off_figures(self.receiver, self.channels, wanted)

    def lowest(self) -> list[dict[int, Lowest]]:
        return [arrivals_by_variant(self.receiver, c) for c in self.channels]


# -- phases --------------------------------------------------------------------------------


@dataclass(slots=True)
class Stage:
    """What a mode's phases share: the database, the processes and the receiver."""

    db: BenchDatabase
    config: SyncConfig
    receiver: Receiver
    client: Client
    target: Target
    server_pid: int | None
    worker_pid: int | None
    mode: str


def _tree_cpu(pid: int | None) -> float:
    return cpu.tree_cpu_seconds(pid) if pid else 0.0


def _own_cpu() -> float:
    """CPU seconds of the bench process (every thread: the receiver's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_phase(stage: Stage, name: str, pool: tuple[int, ...], channels: Sequence[Channel],
              rate: float | None) -> SyncPhase:
    """One order workload over `pool`, then the drain, then each order's sync latency."""
    phase = measure_phase(stage, name, pool, ChannelWatch(stage.receiver, channels)
                          if channels else None, rate, len(channels),
                          sum(len(c.listings) for c in channels))
    _report_phase(stage, phase, channels)
    return phase


def measure_phase(stage: Stage, name: str, pool: tuple[int, ...], watch: Watch | None,
                  rate: float | None, channels: int, listings: int) -> SyncPhase:
    """`run_phase` for any `watch` of the pool's figures (`db_figures`; None: nothing to
    wait for, no latency), without the progress line."""
    settle(stage.server_pid, stage.worker_pid)
    base = db_figures(stage.db, pool)
    problems = []
    if watch is not None and wait_shown(watch, base) is None:
        problems.append(f"{watch.off(base)} listings not at their figure before the phase")
    pushes, updates = stage.receiver.counts()
    cpu_before = (_tree_cpu(stage.server_pid), _tree_cpu(stage.worker_pid), _own_cpu())
    ticks = cpu.machine_ticks()
    started = time.monotonic()
    load: SyncLoad = run_in_child(run_sync_load, stage.target,
                                  SyncPlan(name, pool, stage.config.timing, rate))
    phase = SyncPhase(stage.mode, name, channels, listings, load.result,
                      synced_before=not problems, problems=problems)
    if watch is not None:
        final = db_figures(stage.db, pool)
        drained = wait_shown(watch, final) is not None
        if not drained:
            problems.append(f"{watch.off(final)} listings not at their final figure "
                            f"{WAIT_SECONDS:g} s after the load")
        lowest = watch.lowest()
        phase.latencies_ms, phase.unsynced, phase.early = sync_latencies(
            load.answered, load.window, base, lowest)
        phase.drained = drained
        phase.drain_s = drain_seconds(load.answered, final, lowest) if drained else None
    elapsed = time.monotonic() - started
    phase.machine_busy = cpu.busy_share(ticks, cpu.machine_ticks())
    phase.bench_cpu = (_own_cpu() - cpu_before[2]) / elapsed
    if stage.server_pid:
        phase.server_cpu = (_tree_cpu(stage.server_pid) - cpu_before[0]) / elapsed
    if stage.worker_pid:
        phase.worker_cpu = (_tree_cpu(stage.worker_pid) - cpu_before[1]) / elapsed
    after = stage.receiver.counts()
    phase.pushes, phase.updates = after[0] - pushes, after[1] - updates
    return phase


def _report_phase(stage: Stage, phase: SyncPhase, channels: Sequence[Channel]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    say(f"sync {phase.mode} {phase.name}: {phase.load.orders_per_s:.1f} orders/s, order p99 "
        f"{ms(phase.load.p99_ms)} ms, failed {phase.load.failed}"
        + (f"; sync p50 {ms(phase.sync_ms(50))} p99 {ms(phase.sync_ms(99))} max "
           f"{ms(phase.sync_max_ms)} ms over {len(phase.latencies_ms)} orders, unsynced "
           f"{phase.unsynced}, {phase.pushes} pushes" if channels else ""))
    for problem in phase.problems:
        say(f"  problem: {problem}")
        for channel in channels[:3]:
            say(f"  channel {channel.gid}: {channel_state(stage.client, channel)}")
    if phase.load.failures:
        say(f"  failures: {phase.load.failures}")


def pools(variants: Sequence[int], size: int, mode_no: int) -> tuple[tuple[int, ...],
                                                                     tuple[int, ...]]:
    """The mode's (sync pool, cost pool): disjoint slices of the seeded variants."""
    start = mode_no * 2 * size
    return (tuple(variants[start:start + size]),
            tuple(variants[start + size:start + 2 * size]))


def run_mode(stage: Stage, seeded: Seeded, mode_no: int) -> list[SyncPhase]:
    """`rate` and `full` over one channel, then `cost-0` and `cost-N`."""
    config = stage.config
    sync_pool, cost_pool = pools(seeded.spread_variants, config.pool, mode_no)
    one = create_channel(stage.client, stage.receiver, f"Bench {stage.mode} sync", sync_pool)
    waited = wait_figures(stage.receiver, [one], db_figures(stage.db, sync_pool))
    say(f"sync {stage.mode}: channel {one.gid} with {len(sync_pool)} listings; initial "
        f"figures " + ("never all arrived" if waited is None else f"in {waited:.2f} s"))
    phases = [run_phase(stage, f"{config.rate:g}/s", sync_pool, [one], config.rate),
              run_phase(stage, "full", sync_pool, [one], None),
              run_phase(stage, "cost-0", cost_pool, [], None)]
    many = [create_channel(stage.client, stage.receiver, f"Bench {stage.mode} cost {n}",
                           cost_pool) for n in range(1, config.channels + 1)]
    waited = wait_figures(stage.receiver, many, db_figures(stage.db, cost_pool))
    say(f"sync {stage.mode}: {len(many)} channels x {len(cost_pool)} listings; initial "
        f"figures " + ("never all arrived" if waited is None else f"in {waited:.2f} s"))
    phases.append(run_phase(stage, f"cost-{len(many)}", cost_pool, many, None))
    return phases


def flush_redis(url: str) -> None:
    """Empty the bench's Redis database (never db 0: run.py refuses it)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def processes(db: BenchDatabase, config: SyncConfig, mode: str
              ) -> Iterator[tuple[Server, Worker | None]]:
    """`stockyard serve` (and, with Redis, one `stockyard worker`) for a mode."""
    env = {"STOCKYARD_BROKER_URL": config.redis_url if mode == "redis" else ""}
    with ExitStack() as stack:
        worker = None
        if mode == "redis":
            flush_redis(config.redis_url)
            worker = stack.enter_context(Worker(db.url, _log("worker", db, mode), env))
        server = stack.enter_context(Server(db.url, config.workers, _log("server", db, mode),
                                            env))
        say(f"sync {mode}: server up on {server.url} (stderr: {server.log_path})"
            + (f", worker pid {worker.pid} (log: {worker.log_path})" if worker else ""))
        yield server, worker


def _log(kind: str, db: BenchDatabase, mode: str) -> Path:
    return VAR / f"{kind}-{db.kind}-sync-{mode}.log"


def run_sync(db: BenchDatabase, seeded: Seeded, config: SyncConfig) -> SyncRun:
    """Every mode of `config.modes`, one receiver for all."""
    run = SyncRun()
    with Receiver() as receiver:
        say(f"sync: receiver on {receiver.base_url}")
        for mode_no, mode in enumerate(config.modes):
            with processes(db, config, mode) as (server, worker):
                client = Client(HOST, server.port, seeded.token)
                try:
                    stage = Stage(db, config, receiver, client,
                                  Target(HOST, server.port, seeded.token, config.http_client),
                                  server.pid, worker.pid if worker else None, mode)
                    run.phases += run_mode(stage, seeded, mode_no)
                finally:
                    client.close()
        run.receiver = receiver_totals(receiver)
    return run


def receiver_totals(receiver: Receiver) -> dict[str, int]:
    """What the receiver got on every path: totals and the correctness counters."""
    with receiver.lock:
        ends = receiver.endpoints.values()
        return {"pushes": sum(e.requests for e in ends),
                "updates": sum(e.updates for e in ends),
                "bad_signatures": sum(e.bad_signatures for e in ends),
                "bad_bodies": sum(e.bad_bodies for e in ends),
                "version_regressions": sum(e.regressions for e in ends),
                "version_conflicts": sum(e.conflicts for e in ends),
                "unknown_paths": receiver.unknown_paths}
