"""Run one function in a spawned child process, killable from the parent."""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

R = TypeVar("R")


def _entry(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_in_child(fn: Callable[..., R], *args: Any) -> R:
    """fn(*args) in a fresh interpreter; the child is terminated if we are interrupted."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_entry, args=(child, fn, args), daemon=True)
    proc.start()
    child.close()
    try:
        status, value = parent.recv()
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        parent.close()
    if status != "ok":
        raise RuntimeError(f"load generator failed:\n{value}")
    return value  # type: ignore[no-any-return]
