"""Per-token request rate limits, decided in memory on every request: no I/O on the way.

Each process keeps a token bucket per key (a token id) in GCRA form, one float per key: the
time at which the bucket would be full again. A request is admitted while that time is no
more than `(burst - 1) / rate` ahead of now, and moves it `1 / rate` further.

Shared through Redis (`SharedLimiter`), a daemon thread every `sync_interval` seconds sends
each key's requests admitted here since its last round to one Lua script, which keeps the
same float for the whole deployment (`stockyard:rate:<key>`, on Redis's clock) and answers
how far each bucket now is from full; the thread sets the local bucket to that, plus what
this process admitted meanwhile. So within one interval a process learns what every other
one consumed. Under sustained load N processes each refill the whole `rate` locally, but
each is set back to the shared state every interval, which settles where each admits 1/N
of the refill: together, `rate` a second. A key a process has not synced yet starts full
there, so a client bursting on N processes at once may get up to N bursts in the first
interval; the shared bucket then goes that far below empty (it is not floored at zero),
and the key is refused everywhere until the excess is repaid, so over any longer span the
deployment admits `burst + rate * seconds`, give or take one interval's refill per process.
When Redis does not answer, each process limits on its own (fail open, one warning) and
shares again once Redis answers; what was admitted during the outage is not sent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("stockyard")

DEFAULT_RATE = 1000.0  # requests a second per token (API spec)
DEFAULT_BURST = 2000
# keys (tokens) whose buckets a process remembers; past it the least recently used one is
# forgotten, which only matters if it was not full: ~160 bytes a key (~8 MB at the cap)
DEFAULT_MAX_KEYS = 50_000
DEFAULT_SYNC_INTERVAL = 0.05  # seconds between pushes to Redis
KEY_PREFIX = "stockyard:rate:"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

Clock = Callable[[], float]


class Limiter(Protocol):
    def check(self, key: int) -> float | None:
        """None: admitted, and counted. Else the seconds until a request of `key` would be
        admitted (`retry_after` turns it into a Retry-After value)."""
        ...

    def start(self) -> None:
        """Begin sharing (a thread); call it in the process that serves, after any fork."""
        ...

    def close(self) -> None: ...


def retry_after(seconds: float) -> int:
    """A Retry-After header value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def make_limiter(rate: float, burst: int, redis_url: str | None, *,
                 sync_interval: float = DEFAULT_SYNC_INTERVAL,
                 max_keys: int = DEFAULT_MAX_KEYS, clock: Clock = time.monotonic) -> Limiter:
    """No limit when `rate <= 0`; shared through Redis when `redis_url` is a Redis URL (the
    broker's URL may be passed as it is: an AMQP one gives per-process limits)."""
    if rate <= 0:
        return Unlimited()
    if redis_url and redis_url.startswith(REDIS_SCHEMES):
        return SharedLimiter(rate, burst, redis_url, sync_interval=sync_interval,
                             max_keys=max_keys, clock=clock)
    return LocalLimiter(rate, burst, max_keys=max_keys, clock=clock)


class Unlimited:
    """Rate limiting turned off."""

    def check(self, key: int) -> float | None:
        return None

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class LocalLimiter:
    """A token bucket per key, in this process only. Not thread-safe: the event loop's."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS,
                 clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError(f"rate {rate} and burst {burst} must be positive, max_keys "
                             f"{max_keys} too")
        self.rate = rate
        self.burst = burst
        self._step = 1.0 / rate  # seconds of refill one request uses
        self._slack = (burst - 1) / rate  # how far ahead of now `full_at` may be and admit
        # sums of float steps drift (more so on a large clock): a hundredth of a request
        # past the slack is still on time
        self._tolerance = self._step / 100
        self._max_keys = max_keys
        self._clock = clock
        # key -> when its bucket is full again; least recently used first
        self._full_at: OrderedDict[int, float] = OrderedDict()

    def check(self, key: int) -> float | None:
        now = self._clock()
        table = self._full_at
        full_at = table.get(key)
        if full_at is None:
            if len(table) >= self._max_keys:
                table.popitem(last=False)
            full_at = now
        else:
            table.move_to_end(key)
            if full_at < now:
                full_at = now
        wait = full_at - now - self._slack
        if wait > self._tolerance:
            return wait
        table[key] = full_at + self._step
        return None

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        """How many keys' buckets are remembered."""
        return len(self._full_at)


# KEYS: one per token. ARGV[1]: seconds of refill per request; ARGV[1 + i]: requests
# admitted for KEYS[i]. Each key holds when its bucket is full again (Redis's clock, so
# hosts' clocks need not agree) and expires then, since a missing key means full. Answers,
# per key, the seconds until it is full, as strings (Lua numbers would become integers).
_PUSH = """
local step = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local behind = {}
for i, key in ipairs(KEYS) do
  local full_at = tonumber(redis.call('GET', key)) or now
  if full_at < now then full_at = now end
  full_at = full_at + tonumber(ARGV[i + 1]) * step
  local ms = math.ceil((full_at - now) * 1000)
  if ms > 0 then redis.call('SET', key, string.format('%.6f', full_at), 'PX', ms) end
  behind[i] = string.format('%.6f', full_at - now)
end
return behind
"""


class SharedLimiter(LocalLimiter):
    """Local buckets that a thread keeps in step with every process's through Redis."""

    CHUNK = 500  # keys per script call, so Redis is never blocked for long

    def __init__(self, rate: float, burst: int, redis_url: str, *,
                 sync_interval: float = DEFAULT_SYNC_INTERVAL,
                 max_keys: int = DEFAULT_MAX_KEYS, clock: Clock = time.monotonic,
                 prefix: str = KEY_PREFIX) -> None:
        super().__init__(rate, burst, max_keys=max_keys, clock=clock)
        self._interval = sync_interval
        self._prefix = prefix
        # no retries of its own: the next round is the retry, and a round must stay short
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=1.0,
                                           socket_connect_timeout=1.0,
                                           retry=Retry(NoBackoff(), 0))
        self._push = self._redis.register_script(_PUSH)
        self._lock = threading.Lock()  # the buckets and `_pending`, against the thread
        self._pending: dict[int, int] = {}  # key -> admitted since the last round
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stockyard-rate-limit",
                                        daemon=True)
        self.shared = True  # whether the last round with something to push reached Redis
        self.rounds = 0  # rounds done (tests wait on it)

    def check(self, key: int) -> float | None:
        with self._lock:
            wait = LocalLimiter.check(self, key)
            if wait is None:
                self._pending[key] = self._pending.get(key, 0) + 1
        return wait

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._redis.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sync()
            self.rounds += 1

    def sync(self) -> None:
        """One round: push what was admitted here, take the shared state back."""
        with self._lock:
            counts, self._pending = self._pending, {}
        if not counts:
            return
        try:
            behind = self._send(counts)
        except Exception as exc:  # whatever the failure, fail open: counts are dropped
            if self.shared:
                self.shared = False
                log.warning("rate limits: Redis does not answer (%s: %s); limiting each "
                            "process on its own until it does", type(exc).__name__, exc)
            return
        if not self.shared:
            self.shared = True
            log.info("rate limits: Redis answers again; limits are shared")
        now = self._clock()
        step = self._step
        with self._lock:
            table, pending = self._full_at, self._pending
            for key, seconds in behind.items():
                table[key] = now + seconds + pending.get(key, 0) * step
            while len(table) > self._max_keys:
                table.popitem(last=False)

    def _send(self, counts: dict[int, int]) -> dict[int, float]:
        """Each key's seconds from full across the deployment, after adding `counts`."""
        items = list(counts.items())
        behind: dict[int, float] = {}
        for start in range(0, len(items), self.CHUNK):
            chunk = items[start:start + self.CHUNK]
            answer = self._push(keys=[f"{self._prefix}{key}" for key, _ in chunk],
                                args=[self._step, *(n for _, n in chunk)])
            behind.update((key, float(s)) for (key, _), s in zip(chunk, answer, strict=True))
        return behind
