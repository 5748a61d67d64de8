"""Bearer token -> Principal, with a small in-process cache (tokens never change role)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from domain.permissions import Principal
from domain.services import tokens

CACHE_SECONDS = 60.0


class TokenCache:
    def __init__(self, ttl: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[Principal | None, float]] = {}

    def is_fresh(self, token: str) -> bool:
        hit = self._entries.get(token)
        return hit is not None and hit[1] > self._clock()

    def resolve(self, session_factory: Callable[[], Session], token: str) -> Principal | None:
        """The token's principal; unknown tokens are cached too (briefly) to spare the DB."""
        now = self._clock()
        hit = self._entries.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        with session_factory() as session:
            principal = tokens.authenticate(session, token)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (principal, now + (self._ttl if principal else 2.0))
        return principal


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
