"""Keep-alive connections spread evenly over the processes of `stockyard serve --workers N`.

The workers share one listening socket, and the kernel gives a new connection to whichever
worker happens to be waiting in accept. A burst of keep-alive clients (a storefront's
connection pool, the bench's 32 clients) then often lands unevenly: 22 and 10, once 31 and
1. Each worker is one GIL, so the busier one answers its clients about twice as slowly, and
that worker alone sets the p99. Here a worker accepts only while it holds no more
connections than the least loaded of the others; the counts are published in a small file
per worker, in a directory the server process creates (`BOARD_ENV`). A worker that has to
wait looks again every `RECHECK` seconds, and accepts anyway after `MAX_DEFER`, so a stalled
worker never leaves clients waiting longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

log = logging.getLogger("stockyard")

BOARD_ENV = "STOCKYARD_CONNECTION_BOARD"  # set by `serve` for its workers
RECHECK = 0.002  # seconds before a worker that let a connection pass looks again
MAX_DEFER = 0.05  # a connection pending this long is accepted whatever the counts say
HEARTBEAT = 0.1  # seconds between a worker's refreshes of its count
STALE = 1.0  # an entry not refreshed for this long is a worker that is gone

_ENTRY = struct.Struct("<qd")  # open connections, time.time() of the last refresh


class ConnectionBoard:
    """Open connections per worker: one file per process, named by its pid."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.name = str(pid or os.getpid())
        self._fd = os.open(directory / self.name, os.O_RDWR | os.O_CREAT, 0o600)

    def publish(self, connections: int) -> None:
        os.pwrite(self._fd, _ENTRY.pack(connections, time.time()), 0)

    def fewest_elsewhere(self) -> int | None:
        """The fewest connections any other live worker holds; None when there is none."""
        now, fewest = time.time(), None
        for entry in os.scandir(self.directory):
            if entry.name == self.name:
                continue
            try:
                data = Path(entry.path).read_bytes()
            except OSError:  # the worker has just gone
                continue
            if len(data) != _ENTRY.size:
                continue
            connections, refreshed = _ENTRY.unpack(data)
            if now - refreshed <= STALE and (fewest is None or connections < fewest):
                fewest = connections
        return fewest

    def close(self) -> None:
        os.close(self._fd)
        with contextlib.suppress(OSError):  # the server process may have removed it all
            os.unlink(self.directory / self.name)


class BalancedServer:
    """Accepts from a shared listening socket while this worker is among the least loaded.

    Stands in for the `asyncio.Server` uvicorn keeps (it calls `close` and `wait_closed`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol_factory: Callable[[], asyncio.BaseProtocol],
                 board: ConnectionBoard, backlog: int = 100) -> None:
        self.sockets = (sock,)
        self._transports: set[asyncio.BaseTransport] = set()
        self._setting_up = 0
        self._loop, self._sock, self._factory, self._board = loop, sock, protocol_factory, board
        self._deferred_since: float | None = None
        self._closed = False
        sock.setblocking(False)
        sock.listen(backlog)  # what create_server would have done
        board.publish(0)
        self._beat = loop.call_later(HEARTBEAT, self._heartbeat)
        self._listen()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._beat.cancel()
        self._board.close()

    async def wait_closed(self) -> None:
        return None

    def _listen(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _heartbeat(self) -> None:
        self._board.publish(self.connections)
        self._beat = self._loop.call_later(HEARTBEAT, self._heartbeat)

    @property
    def connections(self) -> int:
        """Open connections: transports not closing, and sockets still being set up.

        Counting transports, not protocol callbacks, keeps the count true when a connection
        changes protocol (a websocket upgrade) or closes in any other way.
        """
        self._transports = {t for t in self._transports if not t.is_closing()}
        return len(self._transports) + self._setting_up

    def _on_readable(self) -> None:
        now = self._loop.time()
        if self._deferred_since is None:
            self._deferred_since = now
        fewest = self._board.fewest_elsewhere()
        if (fewest is not None and self.connections > fewest
                and now - self._deferred_since < MAX_DEFER):
            # let a less loaded worker take it; look again shortly
            self._loop.remove_reader(self._sock.fileno())
            self._loop.call_later(RECHECK, self._recheck)
            return
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):  # another worker took it
            self._deferred_since = None
            return
        except OSError:  # out of file descriptors or buffers: back off, like asyncio does
            log.exception("accept failed; listening again in 1 s")
            self._loop.remove_reader(self._sock.fileno())
            self._loop.call_later(1.0, self._listen)
            return
        self._deferred_since = None
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._setting_up += 1
        self._board.publish(self.connections)
        self._loop.create_task(self._serve(conn))

    def _recheck(self) -> None:
        if self._closed:
            return
        # nothing pending any more: another worker took it, the wait is over
        if not select.select([self._sock], [], [], 0)[0]:
            self._deferred_since = None
        self._listen()

    async def _serve(self, conn: socket.socket) -> None:
        try:
            transport, _ = await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception:
            log.exception("could not set up an accepted connection")
            conn.close()
            return
        finally:
            self._setting_up -= 1
        self._transports.add(transport)


class BalancingLoop(uvloop.Loop):
    """uvloop whose `create_server(sock=...)` balances when `BOARD_ENV` names a board."""

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: Any = None, port: Any = None, *,
                            sock: socket.socket | None = None, **kwargs: Any) -> Any:
        directory = os.environ.get(BOARD_ENV)
        if sock is None or not directory or kwargs.get("ssl") is not None:
            return await super().create_server(protocol_factory, host, port, sock=sock,
                                               **kwargs)
        return BalancedServer(self, sock, protocol_factory, ConnectionBoard(Path(directory)),
                              backlog=kwargs.get("backlog") or 100)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's loop factory (`loop="api.balancer:new_event_loop"`)."""
    return BalancingLoop()
