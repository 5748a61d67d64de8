"""GraphiQL offline: strawberry's IDE page, its assets served by Stockyard.

strawberry's graphiql.html loads React, ReactDOM, js-cookie, GraphiQL and its explorer
plugin from unpkg.com. The same files, pinned to the versions the page names, live in
`ASSETS` (their licences and hashes: api/static/graphiql/README.md) under unpkg's paths, so
the page changes by its CDN prefix only. Its `integrity` attributes stay valid: the files are
byte for byte what unpkg serves. Everything else on the page (headers editor, subscription
URL, URL sharing) is strawberry's.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope
from strawberry.http.ides import get_graphql_ide_html

CDN = "https://unpkg.com/"
PREFIX = "/graphiql/static"
"""Where the assets are served; their paths carry versions, so they never change."""
ASSETS = Path(__file__).parent / "static" / "graphiql"
IMMUTABLE = "public, max-age=31536000, immutable"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def page(request: Request) -> HTMLResponse:
    """strawberry's GraphiQL page, its assets served under `PREFIX` (behind the server's
    root path, if any)."""
    return HTMLResponse(_html(request.scope.get("root_path", "")))


@functools.cache
def _html(root_path: str) -> str:
    return get_graphql_ide_html("graphiql").replace(CDN, f"{root_path}{PREFIX}/")


class Assets(StaticFiles):
    """The files of `ASSETS`, cached by browsers for a year; scripts and styles as UTF-8
    (whatever the host's mime.types says)."""

    def __init__(self) -> None:
        super().__init__(directory=ASSETS)

    def file_response(self, full_path: PathLike, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = IMMUTABLE
        content_type = TYPES.get(Path(full_path).suffix)
        if content_type is not None and response.status_code == 200:
            response.headers["Content-Type"] = content_type
        return response
