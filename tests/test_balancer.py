"""api/balancer.py: `serve --workers N` spreads keep-alive connections evenly."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import uvloop

from api import balancer
from api.balancer import BalancedServer, ConnectionBoard
from tests.commands import cli_env, serving


def _entry(directory: Path, name: str, connections: int, age: float = 0.0) -> None:
    (directory / name).write_bytes(struct.pack("<qd", connections, time.time() - age))


def test_the_board_reports_the_fewest_connections_of_the_other_live_workers(
    tmp_path: Path,
) -> None:
    board = ConnectionBoard(tmp_path, pid=1)
    board.publish(0)  # its own entry never counts
    assert board.fewest_elsewhere() is None
    _entry(tmp_path, "2", 7)
    _entry(tmp_path, "3", 4)
    _entry(tmp_path, "4", 1, age=balancer.STALE + 1)  # a worker that is gone
    (tmp_path / "5").write_bytes(b"torn")
    assert board.fewest_elsewhere() == 4
    board.close()
    assert not (tmp_path / "1").exists()


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """A connection, and how long until the server answered on it."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
    return reader, writer, time.monotonic() - started


def _serve(tmp_path: Path) -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def test_a_worker_lets_connections_pass_while_another_holds_fewer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(balancer, "MAX_DEFER", 0.3)  # far above a connection's own time

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sock, port = _serve(tmp_path)
        server = BalancedServer(loop, sock, _Echo, ConnectionBoard(tmp_path), backlog=16)
        try:
            _entry(tmp_path, "other", 0)  # a live worker with no connection, that never accepts
            first = await _connect(port)  # 0 held here, not more than the other: accepted
            assert first[2] < balancer.MAX_DEFER and server.connections == 1
            second = await _connect(port)  # 1 > 0: left for the other, then taken anyway
            assert second[2] >= balancer.MAX_DEFER * 0.9 and server.connections == 2
            _entry(tmp_path, "other", 5)
            third = await _connect(port)  # the other holds more now: accepted at once
            assert third[2] < balancer.MAX_DEFER and server.connections == 3
            for _, writer, _ in (first, second, third):
                writer.close()
            published = tmp_path / str(os.getpid())
            for _ in range(100):
                if server.connections == 0 and struct.unpack("<qd", published.read_bytes())[0] == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.connections == 0  # closed connections are counted off
            assert struct.unpack("<qd", published.read_bytes())[0] == 0
            server.close()  # stops listening and leaves the board
            assert not published.exists()
            with pytest.raises((ConnectionError, asyncio.TimeoutError, OSError)):
                await asyncio.wait_for(_connect(port), 0.5)
        finally:
            server.close()
            sock.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


class _Upgrading(asyncio.Protocol):
    """Hands its transport to another protocol, as uvicorn does for a websocket."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        other = _Echo()
        self.transport.set_protocol(other)
        other.connection_made(self.transport)
        self.transport.write(data)  # type: ignore[attr-defined]


def test_a_connection_that_changes_protocol_is_still_counted_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sock, port = _serve(tmp_path)
        server = BalancedServer(loop, sock, _Upgrading, ConnectionBoard(tmp_path))
        try:
            _, writer, _ = await _connect(port)
            assert server.connections == 1
            writer.close()
            for _ in range(100):
                if server.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.connections == 0
        finally:
            server.close()
            sock.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def _established_per_worker(server_pid: int, port: int) -> Counter[int]:
    """Established connections on `port` held by each child process of `server_pid`."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    inodes.add(fields[9])
    children = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True,
                              text=True).stdout.split()
    held: Counter[int] = Counter()
    for pid in map(int, children):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        held[pid] = sum(link[8:-1] in inodes for link in links if link.startswith("socket:["))
    return held


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_serve_with_two_workers_splits_a_burst_of_keep_alive_clients_evenly(
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path)
    env["TMPDIR"] = str(tmp_path)  # where `serve` puts the workers' board
    with serving(env, workers=2, board=tmp_path) as server:

        async def burst() -> Counter[int]:
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32)) as client:
                # 32 clients connect at once and keep their connections
                await asyncio.gather(*[client.get(f"http://127.0.0.1:{server.port}/healthz")
                                       for _ in range(32)])
                return _established_per_worker(server.pid, server.port)

        held = asyncio.run(burst())

    assert sum(held.values()) == 32, held
    # the two workers (the other child is multiprocessing's resource tracker)
    assert sorted(held.values())[-2:] in ([16, 16], [15, 17]), held
