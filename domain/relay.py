"""The relay: committed stock changes, read back from the ledger and handed on, coalesced.

The ledger is the outbox. Every change of a stock's counters appends its movements in the
same transaction (`domain/ledger.py`), so a committed change is already a durable fact and
the order path writes nothing more for it. The relay reads the movements past its cursor,
sends the union of their variants (one message per round instead of one per order), and
moves on only once the send returned. A crash or a broker outage delays a hand-off; it
never loses one. Delivery is at least once: the consumer re-reads the figures, so a second
delivery costs a read, never a wrong figure.

Ids that commit out of order (PostgreSQL). A movement's id is drawn when it is inserted
and becomes visible when its transaction commits, so a reader can see id 11 while id 10
is still in flight. Each id the relay reads past without seeing it is a gap, remembered
with the xmax of the snapshot that read past it. A transaction draws movement ids only
after it has changed a stock row (the ledger always follows the counters), so its xid
was assigned before the id was drawn, and is below that xmax. The gap is re-read every
round until its row shows up (then it is handed on) or a snapshot's xmin passes that xmax:
every transaction that could have drawn the id has ended, and its row would have been
seen. Rows and snapshot come from one statement, so both describe the same instant.
The stored position is the last id below the oldest open gap; after a restart, what was
sent past it is sent again. SQLite serializes its writers and gives a new row max(id) + 1,
so no id can commit below one already seen: there a gap is final at once.

One relay leads per database (a PostgreSQL advisory lock on the relay's own connection,
or an flock beside the SQLite file); the relays of other processes wait to take over when
the leader's process ends. A commit in the leader's process wakes it at once; otherwise
it looks every `interval` seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from domain.db import READ_ONLY, epoch, pg_array
from domain.events import Event

log = logging.getLogger("stockyard.relay")

Send = Callable[[list[int]], None]
Movements = Callable[[list[int]], None]  # the ids of committed movements, ascending

NAME = "stock_changed"
INTERVAL = 0.1  # seconds between looks when nothing wakes the relay
WINDOW = 0.05  # at least this long between rounds: later changes ride along
BATCH = 5_000  # movements read per round
VARIANTS_PER_MESSAGE = 1_000
SAVE_EVERY = 1.0  # seconds between writes of the position (a restart resends at most this)
RETRY_MAX = 5.0  # seconds: the longest wait between tries while the broker is down
LEAD_RETRY = 2.0  # seconds between tries to take the lead

_READ_SQLITE = text(
    "SELECT id, variant_id, created_at FROM stock_movement WHERE id > :after ORDER BY id "
    "LIMIT :batch")
# one statement, so the snapshot that read the rows is the one whose xmin and xmax we keep
_READ_POSTGRESQL = text(
    "SELECT m.id, m.variant_id, CAST(CAST(pg_snapshot_xmin(s) AS TEXT) AS BIGINT), "
    "CAST(CAST(pg_snapshot_xmax(s) AS TEXT) AS BIGINT), m.created_at "
    "FROM pg_current_snapshot() AS s LEFT JOIN LATERAL ("
    "(SELECT id, variant_id, created_at FROM stock_movement WHERE id > :after ORDER BY id "
    "LIMIT :batch) UNION ALL (SELECT id, variant_id, created_at FROM stock_movement "
    "WHERE id = ANY(CAST(:gaps AS INTEGER[])))) AS m ON true")
_LOAD = text("SELECT last_id FROM relay_position WHERE name = :name")
_CREATE = text("INSERT INTO relay_position (name, last_id) SELECT CAST(:name AS VARCHAR(64)), 0 "
               "WHERE NOT EXISTS (SELECT 1 FROM relay_position WHERE name = :name)")
_SAVE = text("UPDATE relay_position SET last_id = :last_id, updated_at = CURRENT_TIMESTAMP "
             "WHERE name = :name")
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")


class Relay:
    """Hands the variants of committed movements to `send`; a `Publish` callable too (a
    committed unit of work wakes it)."""

    def __init__(self, engine: Engine, send: Send, *, name: str = NAME,
                 interval: float = INTERVAL, batch: int = BATCH,
                 movements: Movements | None = None) -> None:
        self._engine = engine
        self._send = send
        self._movements = movements  # called first, with every movement a round found
        self._name = name
        self._interval = interval
        self._batch = batch
        self._postgresql = engine.dialect.name == "postgresql"
        self._cursor: int | None = None  # the highest id read; None until loaded
        self._gaps: dict[int, int] = {}  # id read past -> xmax of the snapshot that did
        self._saved: int | None = None
        self._saved_at = 0.0
        self._held: Connection | None = None  # the leader's connection (PostgreSQL)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # when the oldest movement of the round being handed on was written (Unix
        # seconds), for `send` to time what follows from it (the sync lag metric)
        self.round_since: float | None = None

    # -- one round -------------------------------------------------------------------------

    def run_once(self) -> list[int]:
        """Read what committed past the cursor (and the open gaps), hand its variants on,
        then move on; the variants sent. Raises what `send` raises, having moved nothing."""
        if self._cursor is None:
            self._load()
        after = self._cursor
        assert after is not None
        with self._connection() as conn:
            if self._postgresql:
                rows = conn.execute(_READ_POSTGRESQL, {
                    "after": after, "batch": self._batch,
                    "gaps": pg_array(sorted(self._gaps))}).all()
                xmin, xmax = rows[0][2], rows[0][3]
                read = [r for r in rows if r[0] is not None]
                found = [(r[0], r[1]) for r in read]
                oldest = min(read, key=lambda r: r[0])[4] if read else None
            else:
                read = list(conn.execute(_READ_SQLITE, {"after": after,
                                                        "batch": self._batch}))
                found = [(r[0], r[1]) for r in read]
                oldest = read[0][2] if read else None
        self.round_since = epoch(oldest) if oldest is not None else None
        if self._movements is not None and found:
            self._movements(sorted({movement for movement, _ in found}))
        variants = sorted({variant for _, variant in found})
        for i in range(0, len(variants), VARIANTS_PER_MESSAGE):
            self._send(variants[i:i + VARIANTS_PER_MESSAGE])
        seen = {movement for movement, _ in found}
        top = max((i for i in seen if i > after), default=after)
        if self._postgresql:
            for gap in seen.intersection(self._gaps):
                del self._gaps[gap]
            for gap in range(after + 1, top):
                if gap not in seen:
                    self._gaps[gap] = xmax
            # closed: every transaction that could have drawn the id has ended unseen
            self._gaps = {gap: seen_at for gap, seen_at in self._gaps.items()
                          if seen_at > xmin}
        self._cursor = top
        return variants

    @property
    def position(self) -> int | None:
        """The id up to which everything was handed on or can never commit."""
        if self._cursor is None:
            return None
        return min(self._gaps) - 1 if self._gaps else self._cursor

    def save(self, *, force: bool = True) -> None:
        """Store the position, if it moved (and, unless forced, `SAVE_EVERY` has passed)."""
        position = self.position
        now = time.monotonic()
        if position is None or position == self._saved or (
                not force and now - self._saved_at < SAVE_EVERY):
            return
        with self._engine.begin() as conn:
            conn.execute(_SAVE, {"name": self._name, "last_id": position})
        self._saved, self._saved_at = position, now

    def _load(self) -> None:
        with self._engine.begin() as conn:
            conn.execute(_CREATE, {"name": self._name})
            self._saved = self._cursor = int(conn.execute(_LOAD, {"name": self._name}).scalar_one())
        self._gaps = {}

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._held is not None:
            yield self._held
            return
        # autocommit on PostgreSQL; on SQLite a read that never waits for the writer turn
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if self._postgresql \
            else {READ_ONLY: True}
        with self._engine.connect().execution_options(**options) as conn:
            yield conn

    # -- in the background -----------------------------------------------------------------

    def __call__(self, _event: Event) -> None:
        """A unit of work committed: look now rather than at the next interval."""
        self._wake.set()
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            self._thread = None  # it died of something no round catches: start another
            self.start()

    def start(self) -> None:
        """Lead (or wait to lead) in a thread of its own."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stock-relay", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after a last round, with the position stored."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._leadership() as leading:
                    if leading:
                        self._lead()
                        return
            except Exception as exc:
                log.warning("stock relay lost its database connection: %r", exc)
            self._stop.wait(LEAD_RETRY)

    def _lead(self) -> None:
        self._cursor = None  # start from the stored position: another leader may have moved it
        delay = 0.0
        last = 0.0
        while True:
            stopping = self._stop.is_set()
            last = time.monotonic()
            try:
                self.run_once()
                self.save(force=stopping)
                delay = 0.0
            except Exception as exc:  # the broker is down: keep the cursor, try again later
                if self._postgresql and self._held is not None and self._held.invalidated:
                    raise
                delay = min(max(delay * 2, 0.2), RETRY_MAX)
                log.warning("stock changes not handed on (%r); next try in %.1f s", exc, delay)
                if stopping:
                    return
            if stopping:
                return
            self._wake.wait(delay or self._interval)
            self._wake.clear()
            self._stop.wait(max(0.0, WINDOW - (time.monotonic() - last)))

    @contextlib.contextmanager
    def _leadership(self) -> Iterator[bool]:
        """True while this relay leads: it holds the database's relay lock."""
        if self._postgresql:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                if not conn.execute(_TRY_LOCK, {"key": _lock_key(self._name)}).scalar():
                    yield False
                    return
                self._held = conn
                try:
                    yield True
                finally:
                    self._held = None
                    # the lock lives as long as the session: a pooled connection would
                    # keep it, so this one is closed, not returned
                    conn.invalidate()
            return
        path = _lock_path(self._engine, self._name)
        if path is None:  # an in-memory database has one process
            yield True
            return
        with open(path, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True  # closing the file releases the lock


def _lock_key(name: str) -> int:
    return zlib.crc32(f"stockyard relay {name}".encode())


def _lock_path(engine: Engine, name: str) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(f"{database}-relay-{name}.lock")
