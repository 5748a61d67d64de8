"""Running the `stockyard` command in a child process, as a user would."""

from __future__ import annotations

import os
import socket
import sys
import time
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
