"""`serve --workers 2`: a token revoked through the API or the CLI is refused by every worker,
on every keep-alive connection, from the next request on (SQLite and PostgreSQL)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api import ids
from tests.commands import STOCKYARD, cli_env, create_token, serving
from tests.conftest import _create_pg_database, _drop_pg_database, require_postgres
from tests.test_balancer import _established_per_worker

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

CONNECTIONS = 8
QUERY = {"query": "{ __typename }"}


@dataclass
class Server:
    port: int
    pid: int
    env: dict[str, str]
    admin: str
    run_root: Path

    def epoch(self) -> int:
        """The revocation epoch the workers share: beside a SQLite file, else in the run
        directory `serve` made."""
        beside = self.run_root / "cli.db-tokens.epoch"
        files = [beside] if beside.exists() else \
            list(self.run_root.glob("stockyard-run-*/tokens.epoch"))
        assert len(files) == 1, files
        return int.from_bytes(files[0].read_bytes(), "little")

    def token(self, *args: str) -> str:
        return create_token(self.env, *args)

    def clients(self) -> list[httpx.Client]:
        """Keep-alive connections, opened one after the other (the workers take turns)."""
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{self.port}",
                                limits=httpx.Limits(max_connections=1))
                   for _ in range(CONNECTIONS)]
        for client in clients:
            assert client.get("/healthz").status_code == 200
        return clients


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = cli_env(tmp_path)
    env["TMPDIR"] = str(tmp_path)  # where `serve` puts the workers' board and run directory
    pg_url = None
    if request.param == "postgresql":
        require_postgres()
        pg_url = _create_pg_database()
        env["STOCKYARD_DATABASE_URL"] = pg_url
    admin = create_token(env, "--role", "admin")
    try:
        with serving(env, workers=2, board=tmp_path) as served:
            yield Server(served.port, served.pid, env, admin, tmp_path)
    finally:
        if pg_url is not None:
            _drop_pg_database(pg_url)


def _post(client: httpx.Client, token: str) -> int:
    return client.post("/graphql", json=QUERY,
                       headers={"Authorization": f"Bearer {token}"}).status_code


def _cached_by_both_workers(server: Server, clients: list[httpx.Client], token: str) -> None:
    for _ in range(3):
        for client in clients:
            assert _post(client, token) == 200
    held = _established_per_worker(server.pid, server.port)
    assert sorted(held.values())[-2:] == [CONNECTIONS // 2] * 2, held


def test_a_token_revoked_through_the_api_is_refused_by_every_worker_at_once(
        server: Server) -> None:
    secret = server.token("--role", "storefront", "--name", "shop")
    clients = server.clients()
    try:
        _cached_by_both_workers(server, clients, secret)

        answer = clients[0].post("/graphql", json={
            "query": "mutation($id: ID!) { tokenRevoke(id: $id) { errors { code } } }",
            "variables": {"id": ids.encode("ApiToken", 2)}},
            headers={"Authorization": f"Bearer {server.admin}"}).json()

        assert answer == {"data": {"tokenRevoke": {"errors": []}}}
        assert server.epoch() == 1
        assert [_post(client, secret) for client in clients] == [401] * CONNECTIONS
        assert [_post(client, server.admin) for client in clients] == [200] * CONNECTIONS
    finally:
        for client in clients:
            client.close()


def test_a_token_revoked_with_the_cli_is_refused_by_every_worker(server: Server) -> None:
    secret = server.token("--role", "storefront")
    clients = server.clients()
    try:
        _cached_by_both_workers(server, clients, secret)

        subprocess.run([*STOCKYARD, "token", "revoke", "2"], env=server.env, check=True,
                       capture_output=True)

        # SQLite: the epoch beside the database, at once; PostgreSQL: the NOTIFY, which
        # arrives milliseconds after the commit
        deadline = time.monotonic() + 2
        refused = [_post(client, secret) for client in clients]
        while refused != [401] * CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.01)
            refused = [_post(client, secret) for client in clients]
        assert refused == [401] * CONNECTIONS
    finally:
        for client in clients:
            client.close()
