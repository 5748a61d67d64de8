"""The `stockyard` command as a user runs it: token create, migrate, serve."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.commands import STOCKYARD, cli_env, free_port, wait_until_healthy


def test_token_create_prints_the_token_on_its_last_line(tmp_path: Path) -> None:
    result = subprocess.run([*STOCKYARD, "token", "create", "--role", "admin"],
                            env=cli_env(tmp_path), capture_output=True, text=True, check=True)

    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("sy_") and len(token) > 30


def test_seller_token_needs_an_existing_seller(tmp_path: Path) -> None:
    result = subprocess.run([*STOCKYARD, "token", "create", "--role", "seller", "--seller", "42"],
                            env=cli_env(tmp_path), capture_output=True, text=True)

    assert result.returncode != 0
    assert "seller not found" in result.stderr


def test_serve_migrates_and_answers_graphql_with_a_cli_token(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    token = subprocess.run([*STOCKYARD, "token", "create", "--role", "admin"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    port = free_port()
    server = subprocess.Popen([*STOCKYARD, "serve", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(port, time.monotonic() + 30)

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
