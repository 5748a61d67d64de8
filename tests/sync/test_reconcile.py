"""The periodic reconciliation (API.md "Sales channels": a full reconciliation every
STOCKYARD_RECONCILE_SECONDS, at most one reconciler at a time): what it repairs, the lease
and its fencing number, and two `stockyard serve` processes sharing one schedule."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator

import pytest
from sqlalchemy import text

from domain import sync
from domain.services import channels
from domain.uow import UnitOfWork
from tests.commands import STOCKYARD, free_port, wait_until_healthy
from tests.conftest import Database
from tests.factories import ADMIN, Shop, shop
from tests.receiver import Receiver, receiving
from workers.delivery import HttpPost


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def _channel(db: Database, s: Shop, receiver: Receiver) -> int:
    uow = UnitOfWork(db.writer, lambda _event: None)
    channel, _ = channels.create_channel(uow, ADMIN, seller_id=s.seller, data=channels.ChannelInput(
        name="Shop", endpoint_url=receiver.url, secret=receiver.secret))
    sku = db.scalar("SELECT sku FROM product_variant WHERE id = :v", v=s.variant)
    channels.upsert_listings(UnitOfWork(db.writer, lambda _event: None), ADMIN, channel.id,
                             [channels.ListingInput("L1", sku), channels.ListingInput("L2", sku)])
    return channel.id


def _push_all(db: Database, channel: int) -> None:
    post = HttpPost()
    try:
        sync.Pusher(db.engine, post).push(channel)
    finally:
        post.close()


def test_a_run_pushes_what_the_store_should_show_and_nothing_else(
        db: Database, receiver: Receiver) -> None:
    s = shop(db, stock1=10)
    channel = _channel(db, s, receiver)
    _push_all(db, channel)
    receiver.wait_for({"L1": 10, "L2": 10})
    sent = len(receiver.requests)

    # nothing is off: a run pushes nothing
    kicked: list[int] = []
    reconciler = sync.Reconciler(db.engine, 600, kicked.extend)
    assert reconciler.take() is None  # the schedule starts: the first run is due in 600 s
    fence = reconciler.take(now=time.time() + 601)
    assert fence is not None
    assert reconciler.run(fence) == 0
    _push_all(db, channel)
    assert len(receiver.requests) == sent

    # a change no relay saw (written behind Stockyard's back), and a listing whose
    # acknowledged figure is not its figure: the next run finds both
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE stock SET quantity = 7 WHERE variant_id = :v AND "
                          "warehouse_id = :w"), {"v": s.variant, "w": s.w1})
        conn.execute(text("UPDATE listing SET pushed_quantity = 3 WHERE external_id = 'L2'"))
    fence = reconciler.take(now=time.time() + 10_000)
    assert fence is not None
    reconciler.run(fence)
    assert kicked == [channel, channel]
    _push_all(db, channel)
    receiver.wait_for({"L1": 7, "L2": 7})
    assert receiver.went_back == []


def test_one_lease_holder_at_a_time_and_a_taken_over_one_writes_nothing(
        db: Database, receiver: Receiver) -> None:
    s = shop(db, stock1=10)
    channel = _channel(db, s, receiver)
    first = sync.Reconciler(db.engine, 60, lambda _c: None, holder="first")
    second = sync.Reconciler(db.engine, 60, lambda _c: None, holder="second")
    assert first.take() is None  # a fresh schedule: the first run is one period away
    later = time.time() + 61
    fence = first.take(now=later)
    assert fence is not None
    assert second.take(now=later) is None  # held
    assert second.take(now=later + sync.Reconciler.LEASE + 1) == fence + 1  # expired: taken
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE stock SET quantity = 4 WHERE variant_id = :v AND "
                          "warehouse_id = :w"), {"v": s.variant, "w": s.w1})
    with pytest.raises(sync.Fenced):
        first.run(fence)
    assert db.scalar("SELECT count(*) FROM listing WHERE figure = 4") == 0  # wrote nothing
    assert second.run(fence + 1) == 0
    assert db.scalar("SELECT count(*) FROM listing WHERE figure = 4") == 2
    # the run done, the next is a period away for everyone
    assert first.take(now=time.time() + 1) is None
    assert first.take(now=time.time() + 61) == fence + 2
    assert channel


def test_many_reconcilers_never_run_at_once(db: Database, receiver: Receiver) -> None:
    s = shop(db, stock1=10)
    _channel(db, s, receiver)
    active: list[str] = []
    overlaps: list[list[str]] = []
    runs: list[str] = []
    lock = threading.Lock()

    def slow_kick(name: str) -> sync.Kick:
        def kick(_channels: Iterable[int]) -> None:
            with lock:
                active.append(name)
                if len(active) > 1:
                    overlaps.append(list(active))
                runs.append(name)
            time.sleep(0.05)
            with lock:
                active.remove(name)
        return kick  # type: ignore[return-value]

    reconcilers = [sync.Reconciler(db.engine, 0.01, slow_kick(f"r{i}"), holder=f"r{i}")
                   for i in range(4)]
    stop = time.monotonic() + 2.0

    def loop(r: sync.Reconciler) -> None:
        while time.monotonic() < stop:
            r.tick()

    threads = [threading.Thread(target=loop, args=(r,)) for r in reconcilers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert len(runs) >= 5
    assert db.scalar("SELECT fence FROM lease") == len(runs)


def test_two_servers_share_one_schedule(db: Database, receiver: Receiver) -> None:
    """Two `stockyard serve` processes, a one-second period: one run a period between them
    (each takes its turn as the lease allows), and a change written behind Stockyard's back
    reaches the store through the reconciliation."""
    s = shop(db, stock1=10)
    channel = _channel(db, s, receiver)
    env = dict(os.environ, STOCKYARD_DATABASE_URL=db.url, STOCKYARD_RECONCILE_SECONDS="1")
    env.pop("STOCKYARD_BROKER_URL", None)
    servers = []
    try:
        for _ in range(2):
            port = free_port()
            servers.append(subprocess.Popen([*STOCKYARD, "serve", "--port", str(port)],
                                            env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
            wait_until_healthy(port, time.monotonic() + 30)
        receiver.wait_for({"L1": 10, "L2": 10}, timeout=20)
        start_fence = db.scalar("SELECT fence FROM lease") or 0
        started = time.monotonic()
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE stock SET quantity = 6 WHERE variant_id = :v AND "
                              "warehouse_id = :w"), {"v": s.variant, "w": s.w1})
        receiver.wait_for({"L1": 6, "L2": 6}, timeout=10)
        time.sleep(max(0.0, 5.0 - (time.monotonic() - started)))
        runs = db.scalar("SELECT fence FROM lease") - start_fence
        elapsed = time.monotonic() - started
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(20)
    # one period is at least a second from a run's end to the next: two servers that both
    # ran every period would show about twice as many
    assert 2 <= runs <= elapsed + 1, (runs, elapsed)
    assert channel and receiver.went_back == []
