"""Bearer token -> Principal, with a small in-process cache that revocations clear.

A request with a cached token costs a dict lookup and one memory read of the revocation
epoch (api/revocation.py): no query, no lock. Last-use times are kept here too and written
in one statement at most every `FLUSH_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from cross_web import HTTPException
from sqlalchemy.orm import Session

from api.revocation import Epoch
from domain.permissions import Principal
from domain.services import tokens

CACHE_SECONDS = 60.0
UNKNOWN_SECONDS = 2.0  # an unknown token is remembered briefly: it may be created meanwhile
FLUSH_SECONDS = 30.0  # last-use times reach the database at most this late (plus a request)
MAX_ENTRIES = 10_000
MAX_TOKEN_CHARS = 128  # issued tokens have 47 (domain/services/tokens.py)


class Unauthenticated(HTTPException):
    """The Authorization header carries no live token: HTTP 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(401, reason)


class _Miss:
    pass


MISS: Final = _Miss()


class TokenCache:
    """Token -> principal (None: unknown or revoked) for `ttl` seconds, per process.

    Entries are dropped when the revocation epoch changes (`get` reads it) or when told so
    (`drop`: this process revoked a token and shares no epoch, or PostgreSQL notified one).
    A lookup that was under way when entries were dropped answers its request but is not
    kept: it may have read the token before the revocation committed.
    """

    def __init__(self, ttl: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, epoch: Epoch | None = None) -> None:
        self._ttl = ttl
        self._clock = clock
        self._wall = wall
        self._epoch = epoch
        self._seen = epoch.read() if epoch is not None else 0
        self._entries: dict[str, tuple[Principal | None, float]] = {}
        self._generation = 0
        self._lock = threading.Lock()  # taken by lookups and drops, never by a cache hit
        self._used: dict[int, float] = {}  # token id -> time.time() of its last use
        self._next_flush = clock() + FLUSH_SECONDS

    def get(self, token: str) -> Principal | _Miss | None:
        """The cached principal (None: known to be unknown or revoked), or MISS."""
        epoch = self._epoch
        if epoch is not None and epoch.read() != self._seen:
            self.drop()
        hit = self._entries.get(token)
        if hit is None or hit[1] <= self._clock():
            return MISS
        return hit[0]

    def load(self, session_factory: Callable[[], Session], token: str) -> Principal | None:
        """Look the token up in the database and cache the answer (in a service thread)."""
        generation = self._generation
        now = self._clock()
        with session_factory() as session:
            principal = tokens.authenticate(session, token)
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries = {}
                self._entries[token] = (principal, now + (self._ttl if principal else
                                                          UNKNOWN_SECONDS))
        return principal

    def drop(self) -> None:
        """Forget every cached lookup (a token was revoked)."""
        with self._lock:
            if self._epoch is not None:
                self._seen = self._epoch.read()
            self._generation += 1
            self._entries = {}

    def revoked(self) -> None:
        """This process revoked a token (committed): every process must forget it before
        the caller hears back."""
        if self._epoch is not None:
            self._epoch.bump()  # this process sees it on its next `get`, like the others
        self.drop()

    def used(self, principal: Principal) -> dict[int, datetime] | None:
        """Note a request by `principal`; every use not yet written, when a write is due.

        Called on the event loop only, so the pending uses need no lock.
        """
        self._used[principal.token_id] = self._wall()
        if self._clock() < self._next_flush:
            return None
        return self.take_uses()

    def take_uses(self) -> dict[int, datetime] | None:
        """The uses not yet written (None when there are none); the next write is due in
        `FLUSH_SECONDS`."""
        self._next_flush = self._clock() + FLUSH_SECONDS
        if not self._used:
            return None
        uses, self._used = self._used, {}
        return {token_id: datetime.fromtimestamp(moment, UTC)
                for token_id, moment in uses.items()}


def bearer_token(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`; None for another scheme or none."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
