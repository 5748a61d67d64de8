"""The ASGI application: /graphql (GraphiQL on GET), /healthz."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from cross_web import HTTPException
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from api.auth import TokenCache, bearer_token
from api.context import Context, Services
from api.fast_lane import FastLane
from api.schema import schema_for
from api.threads import Threads
from domain.db import READ_ONLY, session_factories
from domain.uow import Publish

log = logging.getLogger("stockyard")


class StockyardGraphQL(GraphQL[Context, None]):
    def __init__(self, services: Services, *, fast_paths: bool = True) -> None:
        super().__init__(schema_for(fast_paths=fast_paths), graphql_ide="graphiql")
        self.services = services
        self.tokens = TokenCache()
        # the common request skips strawberry's wrapper
        self.lane = FastLane(self) if fast_paths else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Transport errors answer as GraphQL-shaped JSON, never as a 500."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            request = Request(scope=scope, receive=receive)
            response: Response = (self.lane and await self.lane.respond(request)) \
                or await self.run(request)
        except HTTPException as exc:
            response = JSONResponse({"errors": [{"message": exc.reason}]},
                                    status_code=exc.status_code)
        await response(scope, receive, send)

    def parse_json(self, data: str | bytes) -> Any:
        try:
            parsed = json.loads(data)
        except ValueError as exc:  # also bodies that are not UTF-8
            raise HTTPException(400, "Unable to parse request body as JSON") from exc
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, "The request body must be a JSON object")
        return parsed

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        token = bearer_token(request.headers.get("authorization"))
        principal = None
        if token is not None:
            principal = self.tokens.resolve(self.services.reader, token) \
                if self.tokens_cached(token) else await self.services.threads.run(
                    functools.partial(self.tokens.resolve, self.services.reader, token))
        return Context(request=request if isinstance(request, Request) else None,
                       services=self.services, principal=principal)

    def tokens_cached(self, token: str) -> bool:
        return self.tokens.is_fresh(token)


def build_app(engine: Engine, publish: Publish, *, threads: int = 12,
              fast_paths: bool = True) -> Starlette:
    """The app around an engine the caller owns; `publish` receives committed events.

    `threads` bounds the services running at once (match the database pool size). The
    lifespan's end stops them; without a lifespan (tests), `app.state.threads.close()`.
    `fast_paths=False` (STOCKYARD_FAST_PATHS=off) answers through strawberry's public path
    only: no fast lane, no custom coercion.
    """
    writer, reader = session_factories(engine)
    services = Services(writer=writer, reader=reader, publish=publish,
                        threads=Threads(threads))
    graphql = StockyardGraphQL(services, fast_paths=fast_paths)

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

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        # the services still running commit and publish first
        await anyio.to_thread.run_sync(services.threads.close)
        # the last window of stock events goes out while the broker is still there
        close = getattr(publish, "close", None)
        if close is not None:
            close()

    app = Starlette(
        routes=[Route("/graphql", graphql),
                Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
    )
    app.state.threads = services.threads
    return app
