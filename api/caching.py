"""What /graphql adds to strawberry's answers over HTTP: the media type the client prefers
(GraphQL over HTTP) and the caching of GET reads (Cache-Control, ETag, If-None-Match).

Both depend on request headers (`Accept`, `Authorization`), which is why they live together:
every answer that may be cached says so with `Vary: Accept, Authorization`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from brotli_asgi import BrotliMiddleware
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

GRAPHQL_RESPONSE = "application/graphql-response+json"
GRAPHQL_RESPONSE_TYPE = f"{GRAPHQL_RESPONSE}; charset=utf-8"

MAX_AGE = 30
"""Seconds a shared cache (a CDN) may serve an anonymous GET read without asking again."""

PUBLIC = f"public, max-age={MAX_AGE}"
PRIVATE = "private, no-cache"
NOT_STORED = "no-store"
VARY = ("Accept", "Authorization")

COMPRESSED_FROM = 500  # bytes: a smaller body goes out as it is
_ACCEPT_ENCODING = b"accept-encoding"

_JSON_RANGES = {"application/json": 2, "application/*": 1, "*/*": 0}  # by specificity


def prefers_graphql_response(accept: str | None) -> bool:
    """Whether an Accept header asks for `application/graphql-response+json` at least as
    much as for `application/json` (which `application/*` and `*/*` also cover, the most
    specific range counting). Without the header, or with `*/*` alone: JSON, as before."""
    if accept is None or "graphql-response" not in accept.lower():
        return False
    wanted = 0.0
    json_q, json_level = 0.0, -1
    for media_range in accept.lower().split(","):
        media, *params = media_range.split(";")
        media = media.strip()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if media == GRAPHQL_RESPONSE:
            wanted = max(wanted, q)
        elif media in _JSON_RANGES and _JSON_RANGES[media] >= json_level:
            json_q = q if _JSON_RANGES[media] > json_level else max(json_q, q)
            json_level = _JSON_RANGES[media]
    return wanted > 0 and wanted >= json_q


def request_failure(data: object, errors: list[GraphQLError] | None) -> int | None:
    """The HTTP status of a result whose execution never started (GraphQL over HTTP: a
    request error, answered without `data`): 400 for the client's mistakes (a document that
    does not parse, validate or fit the limits, variables that do not coerce), 500 for an
    unexpected failure. None when execution started: a field error carries a `path`, even
    when it nulled all of `data`."""
    if data is not None or not errors or any(error.path for error in errors):
        return None
    if any(error.original_error is not None
           and not isinstance(error.original_error, GraphQLError) for error in errors):
        return 500
    return 400


@dataclass(slots=True)
class Answer:
    """What /graphql learns while answering one request that needs more than strawberry's
    answer: a GET, or a client preferring application/graphql-response+json."""

    graphql_response: bool
    get: bool
    results: int = 0  # operations answered: more than one is a batch
    errors: bool = False  # some operation answered errors
    failure: int | None = None  # the status of a request error (`request_failure`)

    @classmethod
    def of(cls, scope: Scope) -> Answer | None:
        """None for the common request: a POST taking application/json, as before (read
        from the raw headers: this runs before every request's own work)."""
        get = scope["method"] == "GET"
        graphql_response = False
        for name, value in scope["headers"]:
            if name == b"accept":
                graphql_response = b"graphql-response" in value.lower() \
                    and prefers_graphql_response(value.decode("latin-1"))
                break
        return cls(graphql_response, get) if get or graphql_response else None

    def finish(self, request: Request, response: Response) -> Response:
        """The GraphQL answer (or refusal) `response` in the preferred media type, with its
        request error's status, and cached as `for_get` says."""
        if self.graphql_response:
            response.headers["content-type"] = GRAPHQL_RESPONSE_TYPE
            if self.failure is not None and self.results == 1:
                response.status_code = self.failure
        if self.get:
            cacheable = self.results == 1 and not self.errors and response.status_code == 200
            return for_get(request, response, cacheable)
        return response


def for_get(request: Request, response: Response, cacheable: bool) -> Response:
    """A GET's answer with its caching headers, or 304 when the client has it already.

    A read answered 200 without errors gets a weak `ETag` (a hash of its media type and
    body; weak because the compression middleware may send it gzip or br under the same tag,
    and a strong tag would promise the same bytes) and `Vary: Accept, Authorization`.
    Without an Authorization header it is `public, max-age=MAX_AGE`: anonymous answers are
    the same for every caller, so a CDN may keep and share them. With one, it is `private,
    no-cache`: the answer depends on the token, so no shared cache may keep it (RFC 9111
    would let a CDN reuse an anonymous answer for a request with a token only when it
    honours Vary, hence the Vary), and a browser keeps it only to revalidate every time with
    `If-None-Match`, which the server answers with the current token (304 when unchanged): a
    browser whose user switches tokens never reads the other token's answer. Anything else
    (errors, refusals) is `no-store`.

    The query still runs for a request that gets 304: what is saved is the transfer.
    """
    if not cacheable:
        response.headers["cache-control"] = NOT_STORED
        return response
    headers = response.headers
    tag = hashlib.sha256(b"%s\n%s" % (headers.get("content-type", "").encode(),
                                      bytes(response.body))).hexdigest()[:32]
    etag = f'W/"{tag}"'
    headers["etag"] = etag
    authorization = request.headers.get("authorization")
    headers["cache-control"] = PRIVATE if authorization and authorization.strip() else PUBLIC
    for name in VARY:
        headers.add_vary_header(name)
    if not _matches(request.headers.get("if-none-match"), etag):
        return response
    not_modified = Response(status_code=304)
    not_modified.raw_headers = [(name, value) for name, value in response.raw_headers
                                if name not in (b"content-length", b"content-type")]
    not_modified.background = response.background
    return not_modified


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison of If-None-Match with the answer's tag."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(candidate.strip().removeprefix("W/") == etag.removeprefix("W/")
               for candidate in if_none_match.split(","))


class Compression:
    """br, else gzip, for a body of `COMPRESSED_FROM` bytes or more whose client asks for it
    (brotli-asgi). A request without Accept-Encoding goes straight to the app: the
    middleware's own look at the headers (starlette's Headers over all of them) cost more
    than the rest of this layer, on every order."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.compressed = BrotliMiddleware(app, quality=4, minimum_size=COMPRESSED_FROM)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, _value in scope["headers"]:
                if name == _ACCEPT_ENCODING:
                    await self.compressed(scope, receive, send)
                    return
        await self.app(scope, receive, send)
