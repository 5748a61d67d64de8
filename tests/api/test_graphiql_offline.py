"""GraphiQL works offline: the page and every asset it references come from Stockyard."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine

from api.app import build_app
from api.graphiql import ASSETS, IMMUTABLE, PREFIX

pytestmark = pytest.mark.anyio

HOST = "testserver"
KINDS = {"script": ("text/javascript", ".js"), "stylesheet": ("text/css", ".css")}
"""What each reference loads: its content type and file suffix."""
MIN_BYTES = 500


@dataclass(frozen=True)
class Ref:
    kind: str  # "script" or "stylesheet"
    url: str
    integrity: str | None


class Page(HTMLParser):
    """Every URL the page makes the browser fetch, and its inline scripts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.refs: list[Ref] = []
        self.others: list[str] = []  # src/href of anything else (the favicon's data: URI)
        self.inline: list[str] = []
        self._in_script = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            assert found.get("type") not in {"importmap", "module"}, found
            self._in_script = found.get("src") is None
            if found.get("src") is not None:
                self.refs.append(Ref("script", found["src"] or "", found.get("integrity")))
        elif tag == "link" and found.get("rel") == "stylesheet":
            self.refs.append(Ref("stylesheet", found.get("href") or "", found.get("integrity")))
        else:
            self.others += [value or "" for name, value in attrs if name in {"src", "href"}]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline.append(data)


@dataclass(frozen=True)
class Server:
    client: httpx.AsyncClient
    root: str  # the root path it is served at (a proxy's prefix), or ""

    @property
    def assets(self) -> str:
        return f"{self.root}{PREFIX}/"


@pytest.fixture(params=["", "/stockyard"], ids=["at the root", "behind a root path"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """An app (no database is reached) served at the root path given."""
    app = build_app(create_engine("sqlite://"), lambda _event: None)
    transport = httpx.ASGITransport(app=app, root_path=request.param)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
            yield Server(client, request.param)
    finally:
        app.state.threads.close()


async def page(server: Server) -> Page:
    response = await server.client.get(f"{server.root}/graphql",
                                        headers={"Accept": "text/html"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


async def test_the_page_references_only_this_server(server: Server) -> None:
    found = await page(server)

    assert {ref.kind for ref in found.refs} == {"script", "stylesheet"}
    for ref in found.refs:
        parts = urlsplit(ref.url)
        assert (parts.scheme, parts.netloc) in {("", ""), ("http", HOST)}, ref
        assert parts.path.startswith(server.assets), ref
    assert all(other.startswith("data:") for other in found.others), found.others
    for script in found.inline:  # nothing loaded at run time, from anywhere
        assert not re.search(r"https?://|import\s*\(|importScripts", script), script


async def test_every_asset_loads_as_the_page_expects_it(server: Server) -> None:
    found = await page(server)

    for ref in found.refs:
        response = await server.client.get(ref.url)
        content_type, suffix = KINDS[ref.kind]
        assert response.status_code == 200, ref
        assert response.headers["content-type"].split(";")[0] == content_type, ref
        assert ref.url.endswith(suffix), ref
        assert len(response.content) >= MIN_BYTES, ref
        assert response.headers["cache-control"] == IMMUTABLE, ref
        assert ref.integrity is not None, ref  # the browser checks each file's bytes:
        algorithm, digest = ref.integrity.split("-", 1)
        assert algorithm == "sha384", ref
        assert base64.b64encode(hashlib.sha384(response.content).digest()).decode() \
            == digest, ref


async def test_each_package_keeps_its_licence(server: Server) -> None:
    found = await page(server)

    packages = {_package(urlsplit(ref.url).path.removeprefix(server.assets))
                for ref in found.refs}
    assert {package.name for package in packages} == {
        "react@18.2.0", "react-dom@18.2.0", "js-cookie@3.0.5", "graphiql@3.8.3",
        "plugin-explorer@1.0.2"}
    for package in packages:
        licence = ASSETS / package / "LICENSE"
        assert "Permission is hereby granted" in licence.read_text(encoding="utf-8"), package
        response = await server.client.get(f"{server.assets}{package}/LICENSE")
        assert response.status_code == 200 and "MIT License" in response.text, package


def test_the_readme_lists_every_file_with_its_hash() -> None:
    listed = {path: (int(size), sha256) for path, size, sha256 in re.findall(
        r"^\| (\S+) \| (\d+) \| ([0-9a-f]{64}) \|$",
        (ASSETS / "README.md").read_text(encoding="utf-8"), re.MULTILINE)}
    files = {path.relative_to(ASSETS).as_posix(): path.read_bytes()
             for path in ASSETS.rglob("*") if path.is_file() and path.name != "README.md"}

    assert listed == {path: (len(data), hashlib.sha256(data).hexdigest())
                      for path, data in files.items()}


async def test_the_page_keeps_strawberrys_features(server: Server) -> None:
    script = "\n".join((await page(server)).inline)

    for feature in ("isHeadersEditorEnabled: true", "subscriptionUrl",
                    "GraphiQLPluginExplorer.explorerPlugin()", 'Cookies.get("csrftoken")'):
        assert feature in script


async def test_an_unknown_asset_or_a_folder_is_not_found(server: Server) -> None:
    for path in ("react@18.2.0/umd/nope.js", "react@18.2.0/umd/",
                 "%2e%2e/graphiql.py"):  # the app sees `../graphiql.py`
        assert (await server.client.get(f"{server.assets}{path}")).status_code == 404, path


def _package(path: str) -> PurePosixPath:
    """`@scope/name@version` or `name@version`: the first segment naming a version."""
    parts = PurePosixPath(path).parts
    end = next(i for i, part in enumerate(parts) if "@" in part[1:])
    return PurePosixPath(*parts[:end + 1])
