"""The per-process token bucket, on a clock the test moves."""

from __future__ import annotations

import pytest

from api.ratelimit import (
    LocalLimiter,
    SharedLimiter,
    Unlimited,
    make_limiter,
    retry_after,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def admitted(limiter: LocalLimiter, key: int, tries: int) -> int:
    return sum(limiter.check(key) is None for _ in range(tries))


def test_a_burst_is_admitted_then_refused() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(10, 20, clock=clock)
    assert admitted(limiter, 1, 20) == 20
    wait = limiter.check(1)
    assert wait == pytest.approx(0.1)  # one request's refill
    assert limiter.check(2) is None  # another token has a bucket of its own


def test_the_bucket_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(10, 20, clock=clock)
    admitted(limiter, 1, 20)
    clock.advance(0.5)
    assert admitted(limiter, 1, 10) == 5
    clock.advance(60)  # never more than the burst
    assert admitted(limiter, 1, 30) == 20


def test_sustained_traffic_gets_the_rate_plus_one_burst() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(1000, 2000, clock=clock)
    total = 0
    for _ in range(10_000):  # 10 s, 3 requests a millisecond: three times the rate
        total += admitted(limiter, 7, 3)
        clock.advance(0.001)
    assert total == pytest.approx(2000 + 1000 * 10, abs=2)


def test_the_wait_is_until_the_next_request_would_be_admitted() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(0.5, 2, clock=clock)  # a request every 2 s
    admitted(limiter, 1, 2)
    wait = limiter.check(1)
    assert wait == pytest.approx(2.0)
    assert wait is not None
    clock.advance(wait - 0.1)
    assert limiter.check(1) is not None
    clock.advance(0.1)
    assert limiter.check(1) is None
    assert (retry_after(0.001), retry_after(1.0), retry_after(1.2)) == (1, 1, 2)


def test_memory_stays_bounded_with_many_tokens() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(10, 20, max_keys=10_000, clock=clock)
    for key in range(100_000):
        limiter.check(key)
    assert len(limiter) == 10_000
    admitted(limiter, 99_999, 20)  # a recently used bucket is kept, and still limits
    for key in range(200_000, 200_000 + 9_999):
        limiter.check(key)
    assert limiter.check(99_999) is not None


def test_rate_zero_turns_limits_off() -> None:
    for rate in (0, -1):
        limiter = make_limiter(rate, 2000, None)
        assert isinstance(limiter, Unlimited)
        assert all(limiter.check(1) is None for _ in range(10_000))


def test_make_limiter_shares_only_through_redis() -> None:
    assert isinstance(make_limiter(10, 20, None), LocalLimiter)
    local = make_limiter(10, 20, "amqp://guest@127.0.0.1:5672/")
    assert type(local) is LocalLimiter
    shared = make_limiter(10, 20, "redis://127.0.0.1:1/3")  # not connected until start
    assert isinstance(shared, SharedLimiter)
    shared.close()
    with pytest.raises(ValueError):
        LocalLimiter(10, 0)
