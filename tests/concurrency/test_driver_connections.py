"""db.DriverConnections under threads that borrow at the same moment (a barrier): each
connection is lent to one thread at a time, and never more than the limit at once."""

from __future__ import annotations

import threading
import time

from domain.db import DriverConnections, driver_connections
from tests.conftest import Database

THREADS = 8
LIMIT = 3
ROUNDS = 20


def test_each_connection_is_lent_to_one_thread_at_a_time(pg_db: Database) -> None:
    connections = DriverConnections(driver_connections(pg_db.engine).factory, LIMIT)
    barrier = threading.Barrier(THREADS)
    guard = threading.Lock()
    holders: dict[int, int] = {}  # id of a lent connection -> the thread holding it
    most = 0
    problems: list[str] = []

    def borrow(me: int) -> None:
        nonlocal most
        for _ in range(ROUNDS):
            barrier.wait()
            with connections.lend() as raw:
                with guard:
                    if id(raw) in holders:
                        problems.append(f"{me} got the connection {holders[id(raw)]} holds")
                    holders[id(raw)] = me
                    most = max(most, len(holders))
                if raw.execute("SELECT 1").fetchone() != (1,):
                    problems.append("wrong answer")
                time.sleep(0.002)
                with guard:
                    del holders[id(raw)]

    threads = [threading.Thread(target=borrow, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    connections.close()

    assert problems == []
    assert most == LIMIT  # the limit was reached, never passed
