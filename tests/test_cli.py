"""The `stockyard` command as a user runs it: token create, migrate, serve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STOCKYARD = [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["STOCKYARD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    env.pop("STOCKYARD_BROKER_URL", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_token_create_prints_the_token_on_its_last_line(tmp_path: Path) -> None:
    result = subprocess.run([*STOCKYARD, "token", "create", "--role", "admin"],
                            env=_env(tmp_path), capture_output=True, text=True, check=True)

    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("sy_") and len(token) > 30


def test_seller_token_needs_an_existing_seller(tmp_path: Path) -> None:
    result = subprocess.run([*STOCKYARD, "token", "create", "--role", "seller", "--seller", "42"],
                            env=_env(tmp_path), capture_output=True, text=True)

    assert result.returncode != 0
    assert "seller not found" in result.stderr


def test_serve_migrates_and_answers_graphql_with_a_cli_token(tmp_path: Path) -> None:
    env = _env(tmp_path)
    token = subprocess.run([*STOCKYARD, "token", "create", "--role", "admin"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    port = _free_port()
    server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)

        answer = httpx.post(f"http://127.0.0.1:{port}/graphql",
                            json={"query": 'mutation { sellerCreate(input: {name: "A"}) '
                                           "{ seller { name } errors { code } } }"},
                            headers={"Authorization": f"Bearer {token}"}).json()
        ide = httpx.get(f"http://127.0.0.1:{port}/graphql", headers={"Accept": "text/html"})
    finally:
        server.terminate()
        server.wait(timeout=20)

    assert answer == {"data": {"sellerCreate": {"seller": {"name": "A"}, "errors": []}}}
    assert ide.status_code == 200 and "graphiql" in ide.text.lower()
