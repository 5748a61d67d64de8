"""SQLite writers take turns through the gate (domain/db.py) and always give the turn back."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from domain import db as db_module
from domain.db import make_engine, session_factories
from domain.settings import Settings


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setattr(db_module, "GATE_TIMEOUT", 5.0)  # a leaked turn fails fast
    engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path / 'gate.db'}"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engine
    engine.dispose()


def _insert(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})


def _until(holds: Callable[[], bool], what: str, deadline: float | None = None) -> None:
    """Wait for another thread's step; fail with `what` at `deadline` (monotonic; a test
    with several waits passes one for all), by default 10 s from now."""
    if deadline is None:
        deadline = time.monotonic() + 10
    while not holds():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_the_turn_comes_back_after_commit_rollback_and_error(engine: Engine) -> None:
    _insert(engine, 1)
    with engine.connect() as conn:  # rolled back on close
        conn.execute(text("INSERT INTO t VALUES (2)"))
    with pytest.raises(ZeroDivisionError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (3)"))
        raise ZeroDivisionError
    writer, _ = session_factories(engine)
    with writer() as session:
        session.execute(text("INSERT INTO t VALUES (4)"))
        session.commit()
    # another thread gets its turn at once: no turn was left held
    worker = threading.Thread(target=_insert, args=(engine, 5))
    worker.start()
    worker.join(4)
    assert not worker.is_alive()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 4, 5]


def test_readers_do_not_wait_for_a_writer(engine: Engine) -> None:
    _, reader = session_factories(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        with reader() as session:  # a writer holds the turn; reading still works
            assert session.execute(text("SELECT COUNT(*) FROM t")).scalar() == 0


def test_writers_of_several_threads_all_commit(engine: Engine) -> None:
    threads = [threading.Thread(target=_insert, args=(engine, n)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM t")).scalar() == 24


def test_a_writer_of_another_process_waits_for_its_turn(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "gate.db"
    child = ("import sys; from sqlalchemy import text; from domain.db import make_engine; "
             "from domain.settings import Settings; "
             f"e = make_engine(Settings(database_url='sqlite:///{path}')); "
             "c = e.connect(); c.execute(text('INSERT INTO t VALUES (2)')); c.commit(); "
             "print('done', flush=True)")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                                text=True, cwd=Path(__file__).parents[2])
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.5)  # blocked on the gate while this transaction is open
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "done"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]


def test_a_turn_never_given_back_fails_after_the_timeout(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "GATE_TIMEOUT", 0.5)
    lock = tmp_path / "gate.db-writer.lock"
    holder = subprocess.Popen(  # a stuck writer of another process
        [sys.executable, "-c", "import fcntl, os, sys, time; "
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OperationalError, match="database is locked"):
            _insert(engine, 1)
    finally:
        holder.kill()
        holder.wait(10)
    _insert(engine, 2)  # the turn comes back with the process gone
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [2]


def test_a_turn_a_writer_of_this_process_waited_for_and_gave_up_goes_back(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's waiter thread takes the file lock once the other process lets go, for a
    thread that gave up meanwhile: it must give it straight back, or every other process
    would wait for this one forever."""
    monkeypatch.setattr(db_module, "GATE_TIMEOUT", 0.5)
    lock = tmp_path / "gate.db-writer.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; "
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OperationalError, match="database is locked"):
            _insert(engine, 1)
    finally:
        holder.communicate("", timeout=10)  # lets go: this process's waiter takes it
    other = subprocess.run(
        [sys.executable, "-c", "import fcntl, os, time; "
         f"fd = os.open({str(lock)!r}, os.O_RDWR); deadline = time.monotonic() + 10\n"
         "while True:\n"
         "    try:\n"
         "        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('got'); break\n"
         "    except BlockingIOError:\n"
         "        assert time.monotonic() < deadline, 'the lock was never given back'\n"
         "        time.sleep(0.01)"], capture_output=True, text=True, timeout=30)
    assert other.stdout.strip() == "got", other.stderr
    _insert(engine, 2)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [2]


def _queue_behind(gate: Any, work: Callable[[Any], Any], engine: Engine,
                  outcomes: dict[int, Any], key: int) -> threading.Thread:
    """A thread that hands `work` to `together` on a gated connection of its own; returns
    once the piece is queued (or is the one about to run)."""
    queued = len(gate._waiting)

    def run() -> None:
        pooled = engine.raw_connection()
        try:
            outcomes[key] = pooled.driver_connection.together(work)  # type: ignore[union-attr]
        except Exception as exc:
            outcomes[key] = exc
        finally:
            pooled.close()

    thread = threading.Thread(target=run)
    thread.start()
    _until(lambda: len(gate._waiting) != queued or (gate._combining and key == 0),
           "the piece was never queued")
    return thread


def _inserting(n: int, fail: bool = False) -> Callable[[Any], int]:
    def work(conn: Any) -> int:
        conn.execute("INSERT INTO t VALUES (?)", (n,))
        if fail:
            raise ValueError(f"piece {n} refused")
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
    return work


def test_pieces_queued_during_a_turn_share_the_next_and_one_that_raises_leaves_no_trace(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit (`_WriterGate.together`): the pieces that queued while the turn was
    taken run in one transaction, each caller gets its own result, and a piece that raises
    gets its error while the others commit without its writes."""
    runs: list[int] = []
    run_together = db_module._run_together

    def counted(conn: Any, jobs: list[Any]) -> None:
        runs.append(len(jobs))
        run_together(conn, jobs)

    monkeypatch.setattr(db_module, "_run_together", counted)
    gate = db_module._WriterGate.of(tmp_path / "gate.db")
    outcomes: dict[int, Any] = {}
    with engine.begin() as held:  # another writer's turn, under way
        held.execute(text("INSERT INTO t VALUES (0)"))
        first = _queue_behind(gate, _inserting(1), engine, outcomes, 0)  # waits for the turn
        rest = [_queue_behind(gate, _inserting(n, fail=n == 3), engine, outcomes, n)
                for n in (2, 3, 4)]
    for thread in [first, *rest]:
        thread.join(30)
        assert not thread.is_alive()

    assert runs == [1, 3]  # the first alone (it took the queue), then the three together
    assert outcomes[0] == 2  # rows it saw: the held turn's and its own
    assert outcomes[2] == 3 and outcomes[4] == 4  # piece 3's row was never committed
    assert isinstance(outcomes[3], ValueError)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [0, 1, 2, 4]


def _checkpointed(path: Path) -> list[int]:
    """The rows the database file itself holds, WAL left out (immutable: no WAL read)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]
    except sqlite3.DatabaseError:  # not even the table yet, or read mid-checkpoint: the
        return []  # file is read as if immutable while the checkpoint writes its pages
    finally:
        conn.close()


def test_commits_are_checkpointed_by_a_thread_of_the_gate_not_in_the_turn(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's connections never checkpoint in a COMMIT; its _Checkpointer thread
    copies the committed pages into the file soon after, then ends once idle."""
    monkeypatch.setattr(db_module._Checkpointer, "IDLE", 0.2)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    _insert(engine, 1)
    _insert(engine, 2)
    deadline = time.monotonic() + 10
    _until(lambda: _checkpointed(tmp_path / "gate.db") == [1, 2], "never checkpointed",
           deadline)
    _until(lambda: all(t.name != "sqlite-checkpoint" for t in threading.enumerate()),
           "the checkpoint thread did not end when idle", deadline)
    _insert(engine, 3)  # starts it again
    _until(lambda: _checkpointed(tmp_path / "gate.db") == [1, 2, 3],
           "not checkpointed after a restart", deadline)


class _FakeTurn:
    """The part of a gated connection `together` uses: BEGIN waits for `go` (so pieces
    queue meanwhile), and ROLLBACK fails."""

    def __init__(self, go: threading.Event) -> None:
        self.go = go

    def begin_immediate(self) -> None:
        assert self.go.wait(10)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        raise OSError("disk gone")


def test_every_piece_of_a_turn_that_broke_gets_its_error(tmp_path: Path) -> None:
    """A turn that fails past its pieces (here a ROLLBACK after a refusal) hands each of
    its pieces the error: none is left undone, for its thread to find no value."""
    gate = db_module._WriterGate.of(tmp_path / "broken.db")
    go = threading.Event()
    outcomes: dict[str, Any] = {}

    def refused(_conn: Any) -> int:
        raise ValueError("refused")

    def run(name: str, work: Callable[[Any], Any]) -> None:
        try:
            outcomes[name] = gate.together(_FakeTurn(go), work)
        except BaseException as exc:
            outcomes[name] = exc

    first = threading.Thread(target=run, args=("first", lambda _conn: 1))
    first.start()  # takes the turn, waits in BEGIN
    deadline = time.monotonic() + 10
    _until(lambda: gate._combining, "the first piece never took the turn", deadline)
    rest = [threading.Thread(target=run, args=(name, work))
            for name, work in (("refused", refused), ("after", lambda _conn: 3))]
    for queued, thread in enumerate(rest, start=1):
        thread.start()
        _until(lambda: len(gate._waiting) == queued, "never queued",  # noqa: B023 (waited here)
               deadline)
    go.set()
    for thread in [first, *rest]:
        thread.join(10)
        assert not thread.is_alive()

    assert outcomes["first"] == 1
    assert isinstance(outcomes["refused"], OSError)  # the rollback's error ended the turn
    assert isinstance(outcomes["after"], OSError), outcomes["after"]


def test_a_checkpoint_thread_that_could_not_connect_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SQLite's own checkpoint off, a checkpointer that stayed "running" after its
    thread died would let the WAL grow for good."""
    monkeypatch.setattr(db_module._Checkpointer, "IDLE", 0.2)
    connect = sqlite3.connect
    calls: list[str] = []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append("connect")
        if len(calls) == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return connect(*args, **kwargs)

    checkpoints = db_module._Checkpointer(tmp_path / "gate.db")
    monkeypatch.setattr(sqlite3, "connect", fails_once)
    monkeypatch.setattr(threading, "excepthook", lambda _args: None)  # the failed thread
    checkpoints.due()
    deadline = time.monotonic() + 10
    _until(lambda: not checkpoints._running, "the dead thread left it running", deadline)
    checkpoints.due()  # the next commit's
    assert checkpoints._running
    _until(lambda: not checkpoints._running, "the new thread never ended when idle",
           deadline)
    assert calls == ["connect", "connect"]
