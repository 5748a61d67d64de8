"""The `stockyard` command as a user runs it: token create, migrate, serve."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from api import ids
from tests.commands import STOCKYARD, cli_env, create_token, serving


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
    token = create_token(env, "--role", "admin")
    with serving(env, workers=2) as server:
        answer = httpx.post(f"http://127.0.0.1:{server.port}/graphql",
                            json={"query": 'mutation { sellerCreate(input: {name: "A"}) '
                                           "{ seller { name } errors { code } } }"},
                            headers={"Authorization": f"Bearer {token}"}).json()
        ide = httpx.get(f"http://127.0.0.1:{server.port}/graphql",
                        headers={"Accept": "text/html"})

    assert answer == {"data": {"sellerCreate": {"seller": {"name": "A"}, "errors": []}}}
    assert ide.status_code == 200 and "graphiql" in ide.text.lower()


def _stockyard(env: dict[str, str], *args: str,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STOCKYARD, *args], env=env, capture_output=True, text=True,
                          check=check)


def test_token_list_shows_names_roles_and_revocations(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    named = _stockyard(env, "token", "create", "--role", "storefront", "--name", "Web shop")
    _stockyard(env, "token", "create", "--role", "admin")

    before = _table(_stockyard(env, "token", "list").stdout)
    revoked = _stockyard(env, "token", "revoke", ids.encode("ApiToken", 1))
    again = _stockyard(env, "token", "revoke", "1")
    after = _table(_stockyard(env, "token", "list").stdout)

    assert named.stdout.strip().splitlines()[-1].startswith("sy_")
    assert before[0] == ["id", "name", "role", "seller", "created", "last used", "revoked"]
    # newest first; nothing used or revoked yet
    assert before[1][:4] == [ids.encode("ApiToken", 2), "-", "admin", "-"]
    assert before[2][:4] == [ids.encode("ApiToken", 1), "Web shop", "storefront", "-"]
    assert before[2][4].endswith(" UTC") and before[2][5:] == ["-", "-"]
    assert revoked.stdout.strip() == f"revoked token {ids.encode('ApiToken', 1)}"
    assert again.stdout.startswith(f"token {ids.encode('ApiToken', 1)} was already revoked")
    assert after[2][6].endswith(" UTC") and after[1][6] == "-"


def _table(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]


@pytest.mark.parametrize(("args", "message"), [
    (["token", "revoke", "99"], "token not found"),
    (["token", "revoke", "not-an-id"], "is not a valid ID"),
    (["token", "revoke", ids.encode("Seller", 1)], "no ApiToken with ID"),
    (["token", "create", "--role", "admin", "--name", "x" * 41], "at most 40 characters"),
])
def test_token_commands_refuse_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = _stockyard(cli_env(tmp_path), *args, check=False)

    assert result.returncode == 2
    assert message in result.stderr


def test_a_stopping_server_writes_the_last_uses_it_still_holds(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    token = _stockyard(env, "token", "create", "--role", "storefront", "--name", "shop") \
        .stdout.split()[-1]
    with serving(env) as server:
        answer = httpx.post(f"http://127.0.0.1:{server.port}/graphql",
                            json={"query": "{ __typename }"},
                            headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        unused = _table(_stockyard(env, "token", "list").stdout)[1][5]

    assert unused == "-"  # not written per request
    assert _table(_stockyard(env, "token", "list").stdout)[1][5].endswith(" UTC")
