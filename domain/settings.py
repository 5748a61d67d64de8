"""Settings read once from the STOCKYARD_* environment and passed down explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "sqlite:///./var/stockyard.db"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may ask for (API.md, "Access and operations"); each is refused
    before any resolver runs. `STOCKYARD_MAX_*` and `STOCKYARD_RATE_*` set them."""

    depth: int = 15  # nested selections, through fragments
    aliases: int = 100  # in one document
    tokens: int = 5_000  # lexical tokens in one document
    # characters of one document: 5,000 tokens of ordinary length fit in a tenth of it,
    # and lexing one long string literal costs the event loop ~0.15 s per MB
    document_chars: int = 256 * 2**10
    # objects an operation may return at most: each list multiplies what it holds by its
    # size (a connection's `first`, `nodes`' ids, a plain list's most, see api/limits.py)
    # (a page of 100 orders with every line and allocation may hold 10 million; three
    # nested product/variants lists under 100 variants, 10^8, may not)
    cost: int = 20_000_000
    list_items: int = 1_000  # items of a list argument (`nodes`, `skus`, order lines, ...)
    bulk_rows: int = 10_000  # ... except `stockBulkUpdate`'s rows
    batch: int = 20  # operations in one batched request
    body_bytes: int = 16 * 2**20  # HTTP 413 above
    header_bytes: int = 16 * 2**10  # all request headers together; HTTP 431 above
    rate: float = 1_000.0  # requests a second per token (0: no limit); HTTP 429 above
    burst: int = 2_000  # requests a token may send at once after a quiet spell

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        def number(name: str, default: float) -> float:
            value = (env.get(name) or "").strip()
            if not value:
                return default
            try:
                parsed = float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {value!r}") from None
            if parsed < 0:
                raise ValueError(f"{name} must not be negative, not {value!r}")
            return parsed

        defaults = cls()
        return cls(
            depth=int(number("STOCKYARD_MAX_DEPTH", defaults.depth)),
            aliases=int(number("STOCKYARD_MAX_ALIASES", defaults.aliases)),
            tokens=int(number("STOCKYARD_MAX_TOKENS", defaults.tokens)),
            document_chars=int(number("STOCKYARD_MAX_DOCUMENT_CHARS", defaults.document_chars)),
            cost=int(number("STOCKYARD_MAX_COST", defaults.cost)),
            list_items=int(number("STOCKYARD_MAX_LIST_ITEMS", defaults.list_items)),
            bulk_rows=int(number("STOCKYARD_MAX_BULK_ROWS", defaults.bulk_rows)),
            batch=int(number("STOCKYARD_MAX_BATCH", defaults.batch)),
            body_bytes=int(number("STOCKYARD_MAX_BODY_BYTES", defaults.body_bytes)),
            header_bytes=int(number("STOCKYARD_MAX_HEADER_BYTES", defaults.header_bytes)),
            rate=number("STOCKYARD_RATE_PER_SECOND", defaults.rate),
            burst=int(number("STOCKYARD_RATE_BURST", defaults.burst)),
        )


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str | None = None
    reconcile_seconds: int = 600
    # database connections per server process; also the number of worker threads that
    # run services, so requests queue on the event loop instead of contending for the GIL
    # (in the bench, 4 beat 12 on p99: fewer threads wait for the GIL less often)
    db_pool_size: int = 4
    # the fast lane and custom input coercion (api/fast_lane.py, api/coercion.py) use private
    # names of strawberry and graphql-core; off, requests take strawberry's public path only
    fast_paths: bool = True
    # origins whose browsers may call the API (CORS); `*` is any origin, without credentials
    cors_origins: tuple[str, ...] = ()
    limits: Limits = Limits()
    log_format: str = "text"  # or "json": one JSON object per line
    access_log: bool = True  # one line per request (api/observe.py)
    metrics: bool = True  # Prometheus metrics (domain/metrics.py)
    # where they are served: None: GET /metrics of the API's own port (serve); a port: a
    # listener of their own (serve: instead of /metrics; worker: default WORKER_METRICS_PORT)
    metrics_port: int | None = None
    # after SIGTERM, how long `serve` lets requests in flight finish before cancelling them
    shutdown_seconds: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("STOCKYARD_DATABASE_URL") or DEFAULT_DATABASE_URL,
            broker_url=env.get("STOCKYARD_BROKER_URL") or None,
            reconcile_seconds=int(env.get("STOCKYARD_RECONCILE_SECONDS") or 600),
            db_pool_size=int(env.get("STOCKYARD_DB_POOL_SIZE") or 4),
            fast_paths=_on_off(env, "STOCKYARD_FAST_PATHS", default=True),
            cors_origins=_origins(env.get("STOCKYARD_CORS_ORIGINS") or ""),
            limits=Limits.from_env(env),
            log_format=_log_format(env.get("STOCKYARD_LOG_FORMAT") or "text"),
            access_log=_on_off(env, "STOCKYARD_ACCESS_LOG", default=True),
            metrics=_on_off(env, "STOCKYARD_METRICS", default=True),
            metrics_port=_port(env.get("STOCKYARD_METRICS_PORT") or ""),
            shutdown_seconds=int(env.get("STOCKYARD_SHUTDOWN_SECONDS") or 30),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The database file of a sqlite URL (None for in-memory or other databases)."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[-1]
        return None if path in ("", ":memory:") else Path(path)


def _port(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"STOCKYARD_METRICS_PORT must be a TCP port, not {value!r}")
    return int(value)


def _log_format(value: str) -> str:
    value = value.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"STOCKYARD_LOG_FORMAT must be text or json, not {value!r}")
    return value


def _on_off(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    """on/off (also true/false, yes/no, 1/0); anything else is a mistake worth stopping for."""
    value = env.get(name) or ""
    match value.strip().lower():
        case "":
            return default
        case "on" | "true" | "yes" | "1":
            return True
        case "off" | "false" | "no" | "0":
            return False
    raise ValueError(f"{name} must be on or off, not {value!r}")


def _origins(value: str) -> tuple[str, ...]:
    """Comma-separated origins (`https://shop.example`, `http://localhost:3000`) or `*`;
    blanks are ignored. A path, even a lone trailing slash, never matches a browser's
    Origin header, so it is refused rather than silently never allowed."""
    origins = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path \
                or parts.query or parts.fragment:
            raise ValueError(f"STOCKYARD_CORS_ORIGINS: {origin!r} is not an origin "
                             "(scheme://host[:port], no path) nor *")
    return origins
