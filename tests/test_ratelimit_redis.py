"""Rate limits shared through Redis: two limiters in this process stand for two server
processes, on a private redis-server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest

from api.ratelimit import SharedLimiter
from tests.commands import free_port
from tests.conftest import service_missing
from tests.workers.support import PrivateRedis, private_redis, redis_server_missing

pytestmark = pytest.mark.broker

INTERVAL = 0.02  # seconds between a limiter's rounds


class FrozenClock:
    """Local buckets that never refill, so only what Redis says moves them."""

    def __call__(self) -> float:
        return 1000.0


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    """A private Redis on a free port, not started yet."""
    problem = redis_server_missing()
    if problem:
        service_missing(f"NO REDIS SERVER: {problem}")
    yield from private_redis(free_port())


@pytest.fixture
def limiters() -> Iterator[Callable[..., SharedLimiter]]:
    made: list[SharedLimiter] = []

    def make(url: str, rate: float, burst: int, **kwargs: object) -> SharedLimiter:
        limiter = SharedLimiter(rate, burst, url, sync_interval=INTERVAL, **kwargs)  # type: ignore[arg-type]
        limiter.start()
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.close()


def _until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(INTERVAL / 2)


def _two_rounds(limiter: SharedLimiter) -> None:
    """Until a round began after this call (the one under way may have missed it)."""
    done = limiter.rounds + 2
    _until(lambda: limiter.rounds >= done, "the limiter stopped reaching Redis")


def test_two_processes_share_one_budget(server: PrivateRedis, limiters: Callable[
        ..., SharedLimiter]) -> None:
    server.start()
    rate, burst = 200, 100
    a, b = limiters(server.url, rate, burst), limiters(server.url, rate, burst)
    admitted = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < 1.0:  # each tries ~10 times the rate
        admitted += (a.check(42) is None) + (b.check(42) is None)
        time.sleep(0.0005)
    budget = burst + rate * elapsed  # one process's; unshared, the two would admit twice it
    assert budget * 0.85 - rate * INTERVAL <= admitted <= budget * 1.15 + rate * INTERVAL
    assert a.shared and b.shared


def test_without_redis_each_process_limits_alone_and_warns_once(
        server: PrivateRedis, limiters: Callable[..., SharedLimiter],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="stockyard")
    a = limiters(server.url, 1, 20, clock=FrozenClock())  # nobody listens at server.url
    b = limiters(server.url, 1, 20, clock=FrozenClock())
    assert sum(a.check(7) is None for _ in range(30)) == 20
    assert sum(b.check(7) is None for _ in range(30)) == 20
    _until(lambda: not a.shared, "the failure went unnoticed")
    for key in range(10):  # more rounds fail: still one warning
        a.check(key)
        time.sleep(INTERVAL)
    assert a.check(7) is not None
    warnings = [r for r in caplog.records if r.name == "stockyard" and r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # one per limiter
    assert "Redis does not answer" in warnings[0].getMessage()


def test_sharing_resumes_once_redis_answers(
        server: PrivateRedis, limiters: Callable[..., SharedLimiter]) -> None:
    a = limiters(server.url, 1, 50, clock=FrozenClock())
    a.check(1)
    _until(lambda: not a.shared, "the failure went unnoticed")
    server.start()
    _until(lambda: a.check(2) is None and a.shared, "sharing did not resume")
    b = limiters(server.url, 1, 50, clock=FrozenClock())
    assert sum(a.check(3) is None for _ in range(50)) == 50
    _two_rounds(a)
    assert b.check(3) is None  # b has not heard of token 3 yet: its bucket starts full
    _two_rounds(b)
    wait = b.check(3)  # now b has: 51 used, a second each, the burst is 50
    assert wait == pytest.approx(2.0, abs=0.5)
