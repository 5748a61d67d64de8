"""Instructions per request in the server's own code: a figure the VM's noise leaves alone.

`python -m bench.instructions` (PostgreSQL: `STOCKYARD_DATABASE_URL`; valgrind installed)
runs this module twice under `valgrind --tool=callgrind`: each seeds a bench database,
builds the app as `stockyard serve` does (access lines to /dev/null, metrics in
multiprocess mode), sends 20 requests to warm up and then 0 or `--requests` more through
the ASGI app, one at a time: `orderCreate`s of 3 spread lines, or with `--read NAME` one of
the read workloads (README "Read workloads"; every answer checked). The difference of the
two totals over `--requests` is the server's instructions per request, its service
threads included, PostgreSQL's own work not counted. The relay is left out: under
valgrind it would run once per order instead of once per hundreds.

Compare two commits by running it in a worktree of each (README "Instructions per order").
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import MutableMapping
from typing import Any

WARM_UP = 20
READS = ("trivial", "availability", "product-page", "dashboard-stocks", "dashboard-movements",
         "node", "nodes")  # bench.reads.WORKLOADS, without importing the app here
SWITCHES = ("access_log", "metrics")


def _seeded(pg_database: str, fresh: bool = True) -> tuple[Any, Any]:
    """The bench database (created and seeded when `fresh`) and its seed's keys."""
    from bench.database import BenchDatabase
    from bench.seed import migrate, seed

    db = BenchDatabase.choose(os.environ.get("STOCKYARD_DATABASE_URL"), pg_database)
    if not fresh:
        return db, None
    db.create()
    migrate(db)
    return db, seed(db, 1000, 300)


def _prepare_reads(pg_database: str, path: str) -> None:
    """Seed and ready the database for the reads once, outside valgrind (seeding there
    took minutes), and keep what the inner runs need in `path`."""
    from bench import reads

    db, seeded = _seeded(pg_database)
    with open(path, "wb") as out:
        pickle.dump(reads.prepare(db, 1000, seeded.token, seeded.actor), out)


def _place(orders: int, pg_database: str, switches: dict[str, bool], read: str | None,
           data_path: str | None) -> None:
    """Build the app and send WARM_UP + `orders` requests (valgrind's inner run): orders
    into a database seeded here, or reads of the one `_prepare_reads` readied."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-instr-"))
    from bench.load import order_body, variant_gid

    db, seeded = _seeded(pg_database, fresh=read is None)

    from api.app import build_app
    from api.observe import configure_logging
    from domain.db import make_engine
    from domain.settings import Settings

    configure_logging("text")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w", buffering=65536))  # noqa: SIM115
    engine = make_engine(Settings(database_url=db.url))
    app = build_app(engine, lambda _event: None, access_log=switches["access_log"],
                    metrics=switches["metrics"])
    rng = random.Random(7)

    def judge(status: int, _payload: bytes, _expect: Any) -> str | None:
        return None if status == 200 else f"HTTP_{status}"

    if read is None:
        token = seeded.token
        bodies = [order_body([variant_gid(v) for v in rng.sample(seeded.spread_variants, 3)])
                  for _ in range(WARM_UP + orders)]
        expected: list[Any] = [None] * len(bodies)
    else:
        from bench import reads

        assert data_path is not None
        with open(data_path, "rb") as kept:
            data = pickle.load(kept)
        spec = reads.SPECS[read]
        token = data.tokens[spec.role]
        drawn = [reads.request(spec, data, rng) for _ in range(WARM_UP + orders)]
        bodies, expected = [b for b, _ in drawn], [e for _, e in drawn]
        judge = functools.partial(reads.judge, spec, data)
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {token}".encode())]
    problems: list[str] = []

    async def post(body: bytes, expect: Any) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/graphql",
                 "raw_path": b"/graphql", "query_string": b"", "root_path": "",
                 "headers": [*headers, (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        answer: dict[str, Any] = {"body": b""}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = int(message["status"])
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await app(scope, receive, send)
        problem = judge(answer["status"], answer["body"], expect)
        if problem is not None:
            problems.append(problem)

    async def run() -> None:
        for body, expect in zip(bodies, expected, strict=True):
            await post(body, expect)

    asyncio.run(run())
    app.state.threads.close()
    engine.dispose()
    if problems:
        raise SystemExit(f"{len(problems)} wrong answers: {sorted(set(problems))}")
    if read is None:
        db.drop()


def _collected(orders: int, args: argparse.Namespace, data_path: str | None) -> int:
    """valgrind's instruction total for one inner run."""
    with tempfile.TemporaryDirectory() as scratch:
        command = ["valgrind", "--tool=callgrind",
                   f"--callgrind-out-file={scratch}/callgrind.out", sys.executable,
                   "-m", "bench.instructions", "--inner", str(orders),
                   "--pg-database", args.pg_database,
                   *(["--read", args.read, "--data", str(data_path)] if args.read else []),
                   *(f"--{name.replace('_', '-')}={getattr(args, name)}" for name in SWITCHES)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--requests", "--orders", type=int, default=200,
                        help="requests measured")
    parser.add_argument("--read", choices=READS, help="a read workload instead of orders")
    parser.add_argument("--pg-database", default="stockyard_instr",
                        help="throw-away database on the PostgreSQL server")
    for name in SWITCHES:
        parser.add_argument(f"--{name.replace('_', '-')}", choices=("on", "off"), default="on")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    switches = {name: getattr(args, name) == "on" for name in SWITCHES}
    if args.inner is not None:
        _place(args.inner, args.pg_database, switches, args.read, args.data)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.instructions needs valgrind (apt install valgrind)")
    with tempfile.TemporaryDirectory() as scratch:
        data_path = None
        if args.read:
            data_path = f"{scratch}/reads.pickle"
            _prepare_reads(args.pg_database, data_path)
        try:
            base = _collected(0, args, data_path)
            measured = _collected(args.requests, args, data_path)
        finally:
            if args.read:
                _seeded(args.pg_database, fresh=False)[0].drop()
    what = args.read or "orderCreate"
    print(f"instructions per {what}: {(measured - base) / args.requests / 1e6:.3f} M "
          f"({args.requests} requests; access log {args.access_log}, metrics {args.metrics})")


if __name__ == "__main__":
    main()
