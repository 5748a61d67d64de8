"""The ASGI application: /graphql (GraphiQL on GET), /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import anyio.to_thread
import orjson
from cross_web import HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http.base import BaseRequestProtocol
from strawberry.http.types import QueryParams
from strawberry.schema.exceptions import InvalidOperationTypeError

from api import caching, graphiql
from api.auth import (
    FLUSH_SECONDS,
    MAX_TOKEN_CHARS,
    MISS,
    TokenCache,
    Unauthenticated,
    bearer_token,
)
from api.caching import Answer, request_failure
from api.context import Context, Services
from api.fast_lane import FastLane
from api.inbound import feed_route, inbound_route
from api.limits import Gate, RequestLimits
from api.observe import RequestLog, current, flush_logs, note_result
from api.persisted import PersistedQueries, PersistedQueryError, PersistedQueryNotFound
from api.ratelimit import Limiter, Unlimited, make_limiter, retry_after
from api.revocation import Listener
from api.schema import schema_for
from api.threads import Threads
from domain import metrics as domain_metrics
from domain.db import READ_ONLY, session_factories
from domain.permissions import Principal
from domain.relay import Relay
from domain.services import tokens as token_service
from domain.settings import Limits
from domain.sync import Sync
from domain.uow import Publish

log = logging.getLogger("stockyard")

_ANSWER = "stockyard.answer"  # the request scope's key of its `Answer` (api/caching.py)

# what browsers' clients send: the bearer token, JSON, a correlation id, and Apollo's
# CSRF-prevention headers (`apollo-require-preflight`, `x-apollo-operation-name`)
CORS_HEADERS = ("Authorization", "Content-Type", "X-Request-Id", "Apollo-Require-Preflight",
                "X-Apollo-Operation-Name")
# a browser reuses a preflight this long (Chromium caps it at 2 hours)
CORS_MAX_AGE = 7200


def _dumps(data: object) -> bytes:
    """`data` as compact JSON; what orjson refuses (an int beyond 64 bits, a key that is
    not a string) as `json.dumps` writes it."""
    try:
        return orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(data, separators=(",", ":")).encode()


# 19 digits in a row: perhaps an int beyond 64 bits, which orjson reads as a float
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _loads(data: str | bytes) -> Any:
    """A request's JSON, read as `json.loads` reads it: orjson where it can, `json.loads`
    for what orjson refuses (NaN, a body in UTF-16), for a body with `_LONG_DIGITS`, and for
    text (a GET's parameters)."""
    if isinstance(data, bytes) and _LONG_DIGITS.search(data) is None:
        try:
            return orjson.loads(data)
        except ValueError:  # orjson.JSONDecodeError
            pass
    return json.loads(data)


class RateLimited(HTTPException):
    """A token sent more requests than its rate allows: HTTP 429 with Retry-After."""

    def __init__(self, seconds: float) -> None:
        self.retry_after = retry_after(seconds)
        super().__init__(429, f"Too many requests for this token; retry after "
                              f"{self.retry_after} s.")


class StockyardGraphQL(GraphQL[Context, None]):
    """Strawberry's view, answering as GraphQL over HTTP asks (api/caching.py: the media
    type the client prefers, GET reads cached) and running Apollo's automatic persisted
    queries (api/persisted.py)."""

    def __init__(self, services: Services, tokens: TokenCache | None = None, *,
                 fast_paths: bool = True, limiter: Limiter | None = None) -> None:
        super().__init__(schema_for(fast_paths=fast_paths), graphql_ide="graphiql")
        self.services = services
        self.tokens = tokens or TokenCache()
        self.limiter: Limiter = Unlimited() if limiter is None else limiter
        self.persisted = PersistedQueries()
        self._writes: set[asyncio.Task[None]] = set()
        # the common request skips strawberry's wrapper
        self.lane = FastLane(self) if fast_paths else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Transport errors answer as GraphQL-shaped JSON, never as a 500.

        With `Accept: application/graphql-response+json` every answer has that media type,
        and one whose operation never started (it does not parse, validate or fit the
        limits; its variables do not coerce) has no `data` and HTTP 400 (500 for an
        unexpected failure), a mutation over GET 405. With application/json, or without
        Accept, such answers keep HTTP 200 and `"data": null`, as before."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        entry = current()
        request = Request(scope=scope, receive=receive)
        answer = Answer.of(scope)  # None for a JSON POST: the fast lane's common case
        if answer is not None:
            scope[_ANSWER] = answer
        refused = True
        try:
            response: Response = (self.lane and await self.lane.respond(request)) \
                or await self.run(request)
            refused = False
        except PersistedQueryError as exc:
            if entry is not None:
                entry.outcome, entry.code = "error", exc.code
            # Apollo's clients read PersistedQueryNotFound from a 200 (and from a 404, as
            # its router answers an unknown persisted query; a 400 would turn APQ off)
            status = 400
            if isinstance(exc, PersistedQueryNotFound):
                status = 404 if answer is not None and answer.graphql_response else 200
            response = JSONResponse(
                {"errors": [{"message": exc.message, "extensions": {"code": exc.code}}]},
                status_code=status)
        except Unauthenticated as exc:
            if entry is not None:
                entry.outcome = "unauthenticated"
            response = JSONResponse(
                {"errors": [{"message": exc.reason,
                             "extensions": {"code": "UNAUTHENTICATED"}}]},
                status_code=exc.status_code, headers={"WWW-Authenticate": "Bearer"})
        except RateLimited as exc:
            if entry is not None:
                entry.outcome = "rate_limited"
            response = JSONResponse(
                {"errors": [{"message": exc.reason, "extensions": {"code": "RATE_LIMITED"}}]},
                status_code=429, headers={"Retry-After": str(exc.retry_after)})
        except HTTPException as exc:
            response = JSONResponse({"errors": [{"message": exc.reason}]},
                                    status_code=exc.status_code)
            if answer is not None and answer.get and answer.graphql_response \
                    and isinstance(exc.__cause__, InvalidOperationTypeError):
                response.status_code = 405  # GraphQL over HTTP: a mutation needs a POST
                response.headers["allow"] = "POST"
        if answer is not None and (refused or answer.results):  # not GraphiQL's page
            response = answer.finish(request, response)
        await response(scope, receive, send)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        """A GET naming a persisted query by its hash alone runs it, whatever it accepts."""
        return super().should_render_graphql_ide(request) \
            and request.query_params.get("extensions") is None

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.page(request)  # its assets served by Stockyard, not a CDN

    async def process_result(self, request: Request, result: Any) -> Any:
        """Strawberry's, noting the outcome for the access line (api/observe.py), and for
        a GET or a client preferring application/graphql-response+json, what `__call__`
        answers with (`Answer`); with that media type a request error has no `data`."""
        entry = current()
        if entry is not None:
            note_result(entry, result.data, result.errors)
        processed = await super().process_result(request, result)
        answer: Answer | None = request.scope.get(_ANSWER)
        if answer is not None:
            answer.results += 1
            answer.errors = answer.errors or bool(result.errors)
            if answer.graphql_response:
                failure = request_failure(result.data, result.errors)
                if failure is not None:
                    del processed["data"]
                    answer.failure = answer.failure or failure
        return processed

    def encode_json(self, data: object) -> bytes:
        """The answer as JSON: orjson, which wrote a dashboard's page of 50 stocks in 6 us
        where `json.dumps` took 127 (bench/README, fourteenth session); what it cannot
        write (an int beyond 64 bits) goes to `json.dumps` as before."""
        return _dumps(data)

    def parse_json(self, data: str | bytes) -> Any:
        """The request body's JSON, a persisted query's text put in place (api/persisted.py).
        Both paths read the body through here: the fast lane runs persisted queries too."""
        parsed = self._parse_body(data)
        if type(parsed) is dict:
            return self.persisted.resolve(parsed) if "extensions" in parsed else parsed
        return [self.persisted.resolve(item) if "extensions" in item else item
                for item in parsed]

    def parse_query_params(self, params: QueryParams) -> dict[str, Any]:
        """A GET's parameters (`variables` and `extensions` as JSON), a persisted query's
        text put in place."""
        parsed: dict[str, Any] = dict(params)
        for name in ("variables", "extensions"):
            if parsed.get(name):
                parsed[name] = self._parse_body(parsed[name])
        return self.persisted.resolve(parsed)

    def _parse_body(self, data: str | bytes) -> Any:
        try:
            parsed = _loads(data)
        except ValueError as exc:  # also bodies that are not UTF-8
            raise HTTPException(400, "Unable to parse request body as JSON") from exc
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, "The request body must be a JSON object")
        if parsed == []:
            raise HTTPException(400, "A batch needs at least one operation.")
        if isinstance(parsed, list) and not all(isinstance(item, dict) for item in parsed):
            raise HTTPException(400, "Each operation of a batch must be a JSON object.")
        gate = self.services.gate
        if isinstance(parsed, list) and gate is not None and gate.limits.batch \
                and len(parsed) > gate.limits.batch:
            raise HTTPException(400, f"A batch may hold {gate.limits.batch} operations, "
                                     f"not {len(parsed)}.")
        return parsed

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        """The caller: none without an Authorization header; HTTP 401 (both the fast lane
        and strawberry's path raise it to `__call__`) for a header naming no live token."""
        principal = None
        header = request.headers.get("authorization")
        if header is not None and header.strip():  # clients often send an empty one
            token = bearer_token(header)
            if token is None:
                raise Unauthenticated("The Authorization header must be `Bearer <token>`.")
            if len(token) > MAX_TOKEN_CHARS:  # none is issued so long: never looked up or kept
                raise Unauthenticated("The token is unknown or has been revoked.")
            cache = self.tokens
            found = cache.get(token)
            if found is MISS:
                found = await self.services.threads.run(
                    functools.partial(cache.load, self.services.reader, token))
            if not isinstance(found, Principal):
                raise Unauthenticated("The token is unknown or has been revoked.")
            principal = found
            entry = current()
            if entry is not None:
                entry.caller = principal.name
            wait = self.limiter.check(principal.token_id)
            if wait is not None:
                raise RateLimited(wait)
            uses = cache.used(principal)
            if uses is not None:
                self.write_uses_soon(uses)
        return Context(request=request if isinstance(request, Request) else None,
                       services=self.services, principal=principal)

    def write_uses_soon(self, uses: dict[int, datetime]) -> None:
        """Write the tokens' last uses in the background (the request does not wait)."""
        task = asyncio.get_running_loop().create_task(self.write_uses(uses))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def uses_written(self) -> None:
        """Until the background writes of last uses started so far have ended."""
        while self._writes:
            await asyncio.wait(set(self._writes))

    async def write_uses(self, uses: dict[int, datetime]) -> None:
        try:
            await self.services.threads.run(
                functools.partial(token_service.record_uses, self.services.uow(), uses))
        except Exception:  # a last-use time is not worth failing anything for
            log.warning("could not record the tokens' last use", exc_info=True)


def build_app(engine: Engine, publish: Publish, *, threads: int = 12,
              tokens: TokenCache | None = None, fast_paths: bool = True,
              cors_origins: Sequence[str] = (), limits: Limits = Limits(),
              limiter: Limiter | None = None, access_log: bool = True,
              metrics: bool = True) -> Starlette:
    """The app around an engine the caller owns; `publish` receives committed events (a
    `Relay`, which the lifespan starts and stops, or a test's list).

    `threads` bounds the services running at once (match the database pool size). The
    lifespan's end stops them; without a lifespan (tests), `app.state.threads.close()`.
    `tokens` caches token lookups; give it the deployment's revocation epoch
    (api/revocation.py). On PostgreSQL the lifespan also listens for revocations.
    `fast_paths=False` (STOCKYARD_FAST_PATHS=off) answers through strawberry's public path
    only: no fast lane, no custom coercion.
    `cors_origins` (STOCKYARD_CORS_ORIGINS) may call from browsers: see `_cors`.
    `limits` bound what one request may ask for (api/limits.py); `limiter` counts each
    token's requests (api/ratelimit.py; by default per process, at `limits.rate`), and the
    lifespan starts and closes it. `access_log` (STOCKYARD_ACCESS_LOG) logs one line per
    request (api/observe.py); the request id is taken or made, and echoed, either way.
    `metrics` counts requests and serves `GET /metrics` (domain/metrics.py); the command
    line turns the route off when the metrics have a port of their own.
    """
    writer, reader = session_factories(engine)
    cache = tokens or TokenCache()
    services = Services(writer=writer, reader=reader, publish=publish,
                        threads=Threads(threads), tokens=cache,
                        gate=Gate.of(schema_for(fast_paths=fast_paths), limits))
    if limiter is None:
        limiter = make_limiter(limits.rate, limits.burst, None)
    graphql = StockyardGraphQL(services, cache, fast_paths=fast_paths, limiter=limiter)
    listener = Listener(engine.url.set(drivername="postgresql").render_as_string(
        hide_password=False), cache.drop) if engine.dialect.name == "postgresql" else None

    async def healthz(_request: Request) -> Response:
        def ping() -> None:
            # read-only: on SQLite a health check must not wait for a writer's turn
            with engine.execution_options(**{READ_ONLY: True}).connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await anyio.to_thread.run_sync(ping)
        except Exception:
            log.exception("health check failed")
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_page(_request: Request) -> Response:
        # every server process's samples, and the state of channels, feeds and webhooks
        page = await anyio.to_thread.run_sync(
            lambda: generate_latest(domain_metrics.registry(engine)))
        return Response(page, media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if isinstance(publish, Relay | Sync):
            publish.start()
        if listener is not None:
            listener.start()
        limiter.start()
        flushing = asyncio.get_running_loop().create_task(_flush_uses(graphql))
        yield
        flushing.cancel()
        await graphql.uses_written()
        uses = cache.take_uses()
        if uses is not None:
            await graphql.write_uses(uses)
        if listener is not None:
            await anyio.to_thread.run_sync(listener.close)
        await anyio.to_thread.run_sync(limiter.close)
        # the services still running commit first
        await anyio.to_thread.run_sync(services.threads.close)
        if isinstance(publish, Relay | Sync):
            # a last round while the broker is still there; what it cannot hand on stays
            # in the ledger for the next process
            await anyio.to_thread.run_sync(publish.close)
        flush_logs()

    app = Starlette(
        routes=[Route("/graphql", graphql),
                Route("/healthz", healthz, methods=["GET"]),
                Route("/channels/{path:path}", inbound_route(services), methods=["POST"]),
                Route("/feeds/{path:path}", feed_route(services), methods=["POST"]),
                *([Route("/metrics", metrics_page, methods=["GET"])] if metrics else []),
                Mount(graphiql.PREFIX, graphiql.Assets(), name="graphiql")],
        lifespan=lifespan,
        # the request id outermost, so every answer carries it and the line times it all;
        # then CORS: a browser can read a refusal only with its Access-Control headers;
        # innermost br, else gzip, for a body of 500 bytes or more whose client asks for it
        # (a client that does not is passed straight through)
        middleware=[Middleware(RequestLog, enabled=access_log, counted=metrics),
                    *_cors(cors_origins),
                    Middleware(RequestLimits, body_bytes=limits.body_bytes,
                               header_bytes=limits.header_bytes),
                    Middleware(caching.Compression)],
    )
    app.state.threads = services.threads
    app.state.graphql = graphql
    return app


def _cors(origins: Sequence[str]) -> list[Middleware]:
    """CORS in front of every route (the fast lane runs inside /graphql, behind it).

    None without origins: responses carry no Access-Control-* header, as before. Listed
    origins get credentials allowed. `*` allows any origin without credentials (browsers
    refuse them with a wildcard): bearer tokens still work, since the Authorization header
    is allowed explicitly; Stockyard sets no cookies.
    """
    if not origins:
        return []
    wildcard = "*" in origins
    return [Middleware(CORSMiddleware, allow_origins=["*"] if wildcard else list(origins),
                       allow_methods=["GET", "POST", "OPTIONS"], allow_headers=CORS_HEADERS,
                       allow_credentials=not wildcard, max_age=CORS_MAX_AGE,
                       expose_headers=["X-Request-Id"])]


async def _flush_uses(graphql: StockyardGraphQL) -> None:
    """Last uses reach the database within `FLUSH_SECONDS` even when no request comes to
    take them (the request path writes them when due)."""
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        uses = graphql.tokens.take_uses()
        if uses is not None:
            graphql.write_uses_soon(uses)  # not cancelled with this loop: the lifespan waits
