"""How a token revocation reaches every server process at once, with no query per request.

A revocation epoch: an 8-byte counter in a small file that every process of a deployment
maps into memory. A request reads it (a memory read); a process that sees it change drops
its cached token lookups (api/auth.py). Whoever revokes a token commits, then increments
the counter under `flock`, then answers, so a request begun after the answer finds the new
value. On SQLite the file sits beside the database (`<db>-tokens.epoch`), shared by every
process using it, the CLI included; on PostgreSQL `stockyard serve` creates a run directory
for its workers (`RUN_DIR_ENV`).

Processes that share no file (another host, or the CLI revoking on PostgreSQL) learn of a
revocation from PostgreSQL: the revoking transaction sends `NOTIFY stockyard_tokens`, and
each server process LISTENs on a connection of its own (`Listener`). There the delay is
the notification's, milliseconds after the commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from domain.services.tokens import REVOKED_CHANNEL

log = logging.getLogger("stockyard")

RUN_DIR_ENV = "STOCKYARD_RUN_DIR"  # set by `serve` for its workers
EPOCH_SUFFIX = "-tokens.epoch"
RUN_DIR_EPOCH = "tokens.epoch"

_SIZE = 8  # one unsigned 64-bit counter, in the machine's byte order


def epoch_path(sqlite_file: Path | None, run_dir: str | None) -> Path | None:
    """Where this deployment's epoch lives: beside a SQLite file, else in the run directory;
    None when there is neither (an in-memory database, a process on its own)."""
    if sqlite_file is not None:
        return Path(os.path.abspath(str(sqlite_file) + EPOCH_SUFFIX))
    if run_dir:
        return Path(run_dir) / RUN_DIR_EPOCH
    return None


class Epoch:
    """The shared counter, mapped into this process's memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self._locked():
                if os.fstat(self._fd).st_size < _SIZE:
                    os.ftruncate(self._fd, _SIZE)  # zero-filled
            self._map = mmap.mmap(self._fd, _SIZE)  # MAP_SHARED: others' writes show at once
        except BaseException:
            os.close(self._fd)
            raise
        # a native unsigned 64-bit view: reading it costs ~20 ns, struct.unpack_from ~180
        self._counter = memoryview(self._map).cast("Q")

    def read(self) -> int:
        return self._counter[0]

    def bump(self) -> int:
        """Increment the counter (among processes, under flock); the new value."""
        with self._locked():
            value: int = self._counter[0] + 1
            self._counter[0] = value
        return value

    def close(self) -> None:
        self._counter.release()
        self._map.close()
        os.close(self._fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield None
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def bump_epoch(path: Path | None) -> None:
    """Tell the processes sharing `path` that a token was revoked (the CLI's revoke)."""
    if path is None:
        return
    epoch = Epoch(path)
    try:
        epoch.bump()
    finally:
        epoch.close()


class Listener:
    """LISTENs for `NOTIFY stockyard_tokens` on a connection of its own, in a thread, and
    calls `changed` on each notification, and after each (re)connection, since
    notifications sent while it was not listening are lost."""

    RETRY = 1.0  # seconds before reconnecting after a failure
    POLL = 0.5  # seconds between looks at the stop flag

    def __init__(self, conninfo: str, changed: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._changed = changed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stockyard-token-listener",
                                        daemon=True)
        self.listening = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {REVOKED_CHANNEL}")
                    self._changed()
                    self.listening.set()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.POLL):
                            self._changed()
            except Exception:
                self.listening.clear()
                self._changed()  # while it cannot listen, nothing cached is to be trusted
                log.warning("token revocation listener: connection lost, retrying",
                            exc_info=True)
                self._stop.wait(self.RETRY)
