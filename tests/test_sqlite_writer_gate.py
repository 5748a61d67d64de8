"""SQLite writers take turns through the gate (domain/db.py) and always give the turn back."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

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
