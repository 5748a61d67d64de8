"""Running the `stockyard` command in a child process, as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

STOCKYARD = [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())"]


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment with a fresh SQLite file under `tmp_path` and no broker."""
    env = dict(os.environ)
    env["STOCKYARD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    env.pop("STOCKYARD_BROKER_URL", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_healthy(port: int, deadline: float) -> None:
    """Until /healthz answers 200 (one worker is up), failing at `deadline` (monotonic)."""
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)


def create_token(env: dict[str, str], *args: str) -> str:
    """`stockyard token create *args`: the secret it prints on its last line."""
    return subprocess.run([*STOCKYARD, "token", "create", *args], env=env,
                          capture_output=True, text=True, check=True).stdout.split()[-1]


@dataclass(frozen=True, slots=True)
class Served:
    port: int
    pid: int


@contextmanager
def serving(env: dict[str, str], *, workers: int = 1,
            board: Path | None = None) -> Iterator[Served]:
    """`stockyard serve` on a free port, healthy, until the block ends; with `board` (the
    server's TMPDIR), also until every worker has joined the connection board there."""
    port = free_port()
    command = [*STOCKYARD, "serve", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(command, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        wait_until_healthy(port, deadline)
        # /healthz answers as soon as one worker is up; wait until all have joined
        while board is not None and len(list(board.glob("stockyard-conns-*/*"))) < workers:
            assert time.monotonic() < deadline, "a worker did not come up"
            time.sleep(0.1)
        yield Served(port, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=20)
