"""Instructions per `orderCreate` in the server's own code: a figure the VM's noise leaves alone.

`python -m bench.instructions` (PostgreSQL: `STOCKYARD_DATABASE_URL`; valgrind installed)
runs this module twice under `valgrind --tool=callgrind`: each seeds a bench database,
builds the app as `stockyard serve` does (access lines to /dev/null, metrics in
multiprocess mode), places 20 orders to warm up and then 0 or `--orders` orders of 3
spread lines through the ASGI app, one at a time. The difference of the two totals over
`--orders` is the server's instructions per order, PostgreSQL's own work not counted. The
relay is left out: under valgrind it would run once per order instead of once per hundreds.

Compare two commits by running it in a worktree of each (README "Instructions per order").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import MutableMapping
from typing import Any

WARM_UP = 20
SWITCHES = ("access_log", "metrics")


def _place(orders: int, pg_database: str, switches: dict[str, bool]) -> None:
    """Seed, build the app, place WARM_UP + `orders` orders (valgrind's inner run)."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-instr-"))
    from bench.database import BenchDatabase
    from bench.load import order_body, variant_gid
    from bench.seed import migrate, seed

    db = BenchDatabase.choose(os.environ.get("STOCKYARD_DATABASE_URL"), pg_database)
    db.create()
    migrate(db)
    seeded = seed(db, 1000, 300)

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
    bodies = [order_body([variant_gid(v) for v in rng.sample(seeded.spread_variants, 3)])
              for _ in range(WARM_UP + orders)]
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {seeded.token}".encode())]
    statuses: list[int] = []

    async def post(body: bytes) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/graphql",
                 "raw_path": b"/graphql", "query_string": b"", "root_path": "",
                 "headers": [*headers, (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))

        await app(scope, receive, send)

    async def run() -> None:
        for body in bodies:
            await post(body)

    asyncio.run(run())
    app.state.threads.close()
    engine.dispose()
    if statuses != [200] * len(bodies):
        raise SystemExit(f"not every order was answered 200: {sorted(set(statuses))}")
    db.drop()


def _collected(orders: int, args: argparse.Namespace) -> int:
    """valgrind's instruction total for one inner run."""
    with tempfile.TemporaryDirectory() as scratch:
        command = ["valgrind", "--tool=callgrind",
                   f"--callgrind-out-file={scratch}/callgrind.out", sys.executable,
                   "-m", "bench.instructions", "--inner", str(orders),
                   "--pg-database", args.pg_database,
                   *(f"--{name.replace('_', '-')}={getattr(args, name)}" for name in SWITCHES)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200, help="orders measured")
    parser.add_argument("--pg-database", default="stockyard_instr",
                        help="throw-away database on the PostgreSQL server")
    for name in SWITCHES:
        parser.add_argument(f"--{name.replace('_', '-')}", choices=("on", "off"), default="on")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    switches = {name: getattr(args, name) == "on" for name in SWITCHES}
    if args.inner is not None:
        _place(args.inner, args.pg_database, switches)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.instructions needs valgrind (apt install valgrind)")
    base, measured = _collected(0, args), _collected(args.orders, args)
    print(f"instructions per orderCreate: {(measured - base) / args.orders / 1e6:.3f} M "
          f"({args.orders} orders; access log {args.access_log}, metrics {args.metrics})")


if __name__ == "__main__":
    main()
