"""`stockyard serve` (and `stockyard worker`) as subprocesses: start, wait for /healthz,
stop, read the log."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from bench.database import ROOT

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stockyard_command() -> list[str]:
    """The console script next to this interpreter, else `python -c cli.main()`."""
    script = Path(sys.executable).parent / "stockyard"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())"]


def checkout_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment with `settings`, and this checkout first on PYTHONPATH: the
    console script's imports otherwise go to wherever the venv's editable install points,
    so a bench run from a second worktree (an A/B) would serve the other checkout's code."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, **settings,
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


class Server:
    """A `stockyard serve --workers N` process with its stderr captured to `log_path`
    (`env`: more STOCKYARD_* settings, e.g. the broker)."""

    def __init__(self, database_url: str, workers: int, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.workers = workers
        self.log_path = log_path
        self._env = checkout_env({"STOCKYARD_DATABASE_URL": database_url, **(env or {})})
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Launch and wait until /healthz answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # own session: a Ctrl-C in the terminal reaches the bench, which stops the server
            self._proc = subprocess.Popen(
                [*stockyard_command(), "serve", "--host", HOST, "--port", str(self.port),
                 "--workers", str(self.workers)],
                cwd=ROOT, env=self._env, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}; "
                                   f"see {self.log_path}")
            if self._healthy():
                return
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout:.0f}s; see {self.log_path}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful), then SIGKILL of its process group if it hangs."""
        proc, self._proc = self._proc, None
        _terminate(proc, timeout)

    def log_size(self) -> int:
        """Current size of the captured stderr (to slice it per workload)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def deadlocks_logged(self, since: int = 0) -> int:
        """Lines mentioning 'deadlock' in the server's stderr after byte offset `since`."""
        if not self.log_path.exists():
            return 0
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return sum(b"deadlock" in line.lower() for line in log)


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL of the process group (its own session) if it hangs."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Worker:
    """A `stockyard worker` process (dramatiq on the configured broker), stderr to
    `log_path`. It has no health check: it is up once it stays up for `boot` seconds."""

    def __init__(self, database_url: str, log_path: Path, env: Mapping[str, str]) -> None:
        self.log_path = log_path
        self._env = checkout_env({"STOCKYARD_DATABASE_URL": database_url, **env})
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, boot: float = 2.0) -> None:
        """Launch; fails when the process exits within `boot` seconds."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [*stockyard_command(), "worker"], cwd=ROOT, env=self._env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = self._proc.wait(boot)
        except subprocess.TimeoutExpired:
            return
        raise RuntimeError(f"stockyard worker exited with {code}; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (dramatiq finishes its current messages), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        _terminate(proc, timeout)
