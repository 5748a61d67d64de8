"""The `stockyard` console script: the composition root (settings -> engine, broker, app)."""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import errno
import gc
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, BinaryIO, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from alembic import command
from alembic.config import Config
from starlette.applications import Starlette

from domain.db import make_engine, session_factories
from domain.models import Role
from domain.permissions import Principal
from domain.settings import Settings
from domain.sync import Pusher, Sync
from domain.uow import UnitOfWork
from domain.webhooks import Deliverer

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from domain.services.audit import Drift

HERE = os.path.dirname(os.path.abspath(__file__))


def migrate(settings: Settings) -> None:
    """alembic upgrade head on the configured database."""
    config = Config(os.path.join(HERE, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(HERE, "migrations"))
    config.attributes["database_url"] = settings.database_url
    command.upgrade(config, "head")


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    before = _revision(settings)
    migrate(settings)
    after = _revision(settings)
    if before == after:
        done = f"already at {after} (head)"
    elif before is None:
        done = f"migrated an empty database to {after} (head)"
    else:
        done = f"upgraded {before} -> {after} (head)"
    print(f"Database {shown_url(settings.database_url)}: {done}")
    return 0


def _revision(settings: Settings) -> str | None:
    """The database's alembic revision (None: not migrated yet)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
    finally:
        engine.dispose()
    return ", ".join(heads) or None


def shown_url(url: str) -> str:
    """`url` fit for a terminal or a log: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and all(key != "password" for key, _ in query):
        return url  # as it is: urlunsplit would turn sqlite:///x into sqlite:/x
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostport}")
    return urlunsplit(parts._replace(query=urlencode(
        [(key, "***" if key == "password" else value) for key, value in query], safe="*")))


def make_relay(settings: Settings, engine: Engine) -> Sync:
    """The sync of a server process (domain/sync.py): its relay works out the listings'
    figures of committed stock changes and hands the variants to the broker's
    `stock_changed` actor; channels to push go to the `push_channel` actor. With no broker
    set, the actors run in this process."""
    from workers.broker import make_broker, start_embedded_worker
    from workers.delivery import HttpPost

    broker = make_broker(settings)
    from workers import actors  # actors bind to the broker set just above

    actors.bind(broker)  # imported earlier (tests): rebind
    post = HttpPost()
    actors.use_pusher(Pusher(engine, post), Deliverer(engine, post))
    start_embedded_worker(broker)
    # the app's lifespan starts and stops it
    return Sync(engine, actors.push_channel.send, actors.stock_changed.send,
                reconcile_every=settings.reconcile_seconds,
                deliver=actors.deliver_webhooks.send)


def app_factory() -> Starlette:
    """uvicorn's factory: one engine and broker per server process."""
    from api.app import build_app
    from api.auth import TokenCache
    from api.observe import configure_logging
    from api.ratelimit import make_limiter
    from api.revocation import Epoch

    settings = Settings.from_env()
    configure_logging(settings.log_format)  # a worker process of `serve --workers N` too
    # threads waiting on the database get the GIL back sooner: in the bench, 1 ms beat both
    # 0.5 ms and the default 5 ms on orders/s and p99
    sys.setswitchinterval(0.001)
    engine = make_engine(settings)
    epoch = _epoch_path(settings)
    app = build_app(engine, make_relay(settings, engine), threads=settings.db_pool_size,
                    tokens=TokenCache(epoch=Epoch(epoch) if epoch is not None else None),
                    fast_paths=settings.fast_paths, cors_origins=settings.cors_origins,
                    limits=settings.limits, access_log=settings.access_log,
                    metrics=settings.metrics and settings.metrics_port is None,
                    # shared through Redis when the broker is Redis, per process otherwise
                    limiter=make_limiter(settings.limits.rate, settings.limits.burst,
                                         settings.broker_url))
    # the schema, the models and the libraries are long-lived: out of the collector's
    # reach, a full collection no longer walks them (a 10k-row bulk request took ~20% less)
    gc.freeze()
    return app


@contextlib.contextmanager
def _migrated(settings: Settings) -> Iterator[tuple[sessionmaker[Session], sessionmaker[Session]]]:
    """The writer and reader session factories of the migrated database, for one command."""
    migrate(settings)
    engine = make_engine(settings)
    try:
        yield session_factories(engine)
    finally:
        engine.dispose()


Command = Callable[[argparse.Namespace, Settings], int]


def _refusing_domain_errors(run: Command) -> Command:
    """The command, with a domain error printed as `error: ...` and exit status 2."""
    def guarded(args: argparse.Namespace, settings: Settings) -> int:
        from domain.errors import DomainError

        try:
            return run(args, settings)
        except DomainError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2

    return guarded


def _epoch_path(settings: Settings) -> Path | None:
    """The revocation epoch this process shares (api/revocation.py)."""
    from api.revocation import RUN_DIR_ENV, epoch_path

    return epoch_path(settings.sqlite_path(), os.environ.get(RUN_DIR_ENV))


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.balancer import BOARD_ENV
    from api.revocation import RUN_DIR_ENV

    problem = _cannot_listen(args.host, args.port)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    # uvicorn stops gracefully on SIGTERM, then raises it again: end with status 0 (and
    # the temporary directories below removed) instead of dying of it, then or earlier
    signal.signal(signal.SIGTERM, _exit_quietly)
    migrate(settings)
    print(f"Stockyard GraphQL on http://{args.host}:{args.port}/graphql", flush=True)
    with contextlib.ExitStack() as stack:
        # files the workers share: the token revocation epoch (api/revocation.py)
        os.environ[RUN_DIR_ENV] = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="stockyard-run-"))
        if settings.metrics:
            _serve_metrics(stack, settings, args.host, args.workers)
        loop = "uvloop"
        if args.workers > 1:
            # the workers spread their keep-alive connections evenly (api/balancer.py)
            board = stack.enter_context(tempfile.TemporaryDirectory(prefix="stockyard-conns-"))
            os.environ[BOARD_ENV] = board
            loop = "api.balancer:new_event_loop"
        uvicorn.run("cli:app_factory", factory=True, host=args.host, port=args.port,
                    workers=args.workers, loop=loop, http="httptools",
                    # requests in flight get this long to finish after SIGTERM
                    timeout_graceful_shutdown=settings.shutdown_seconds,
                    access_log=False, log_level="warning")  # api/observe.py logs requests
    return 0


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (None: it can), found by binding
    every address the host names as uvicorn would, then letting go."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror}"
    for family, _type, _proto, _name, address in addresses:
        try:
            socket.create_server(address, family=family).close()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use"
            return f"cannot listen on {host} port {port}: {exc.strerror}"
    return None


def _exit_quietly(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


def _serve_metrics(stack: contextlib.ExitStack, settings: Settings, host: str,
                   workers: int) -> None:
    """Several server processes share their samples through a directory of their own
    (domain/metrics.py), set before they start; with STOCKYARD_METRICS_PORT this process
    serves them (and the database's state) on that port instead of /metrics."""
    from domain.metrics import MULTIPROCESS_ENV

    if workers > 1:
        os.environ[MULTIPROCESS_ENV] = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="stockyard-metrics-"))
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        from domain import metrics

        engine = make_engine(settings)
        stack.callback(engine.dispose)
        server, _thread = start_http_server(settings.metrics_port, addr=host,
                                            registry=metrics.registry(engine))
        stack.callback(server.shutdown)
        print(f"Metrics on http://{host}:{settings.metrics_port}/metrics", flush=True)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.broker_url is None:
        print("STOCKYARD_BROKER_URL is not set: the server runs its tasks in-process, "
              "no worker is needed.", file=sys.stderr)
        return 2
    from dramatiq.cli import main as dramatiq_main

    from domain.metrics import WORKER_METRICS_ENV, WORKER_METRICS_PORT

    if settings.metrics:
        # the worker process dramatiq starts serves them (workers/entrypoint.py)
        port = settings.metrics_port or WORKER_METRICS_PORT
        os.environ[WORKER_METRICS_ENV] = f"{args.metrics_host}:{port}"
        print(f"Metrics on http://{args.metrics_host}:{port}/metrics", flush=True)

    processes, threads = 1, 8
    print(f"Stockyard worker: broker {shown_url(settings.broker_url)}, queues "
          f"{', '.join(_actor_queues())}, {processes} process(es) x {threads} threads",
          flush=True)
    sys.argv = ["dramatiq", "workers.entrypoint", "--processes", str(processes),
                "--threads", str(threads)]
    return int(dramatiq_main() or 0)


def _actor_queues() -> list[str]:
    """The queues of workers/actors.py, which dramatiq's workers consume: read from its
    source, as importing it here would bind the actors to a broker in this process, whose
    forks (dramatiq's workers) would then keep it instead of making theirs."""
    source = Path(HERE, "workers", "actors.py").read_text(encoding="utf-8")
    queues = [keyword.value.value for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Call)
              for keyword in node.keywords
              if keyword.arg == "queue_name" and isinstance(keyword.value, ast.Constant)
              and isinstance(keyword.value.value, str)]
    return list(dict.fromkeys(queues))


def _schema(_args: argparse.Namespace, settings: Settings) -> int:
    from api.schema import schema_for

    print(schema_for(fast_paths=settings.fast_paths).as_str())
    return 0


@_refusing_domain_errors
def _token_create(args: argparse.Namespace, settings: Settings) -> int:
    from api import ids
    from domain.services import tokens

    seller_id = None
    if args.seller is not None:
        seller_id = ids.decode(args.seller, "Seller", "seller") \
            if not args.seller.isdigit() else int(args.seller)
    with _migrated(settings) as (writer, _):
        token = tokens.create_token(UnitOfWork(writer), Role(args.role), seller_id,
                                    name=args.name)
    print(f"Created a token with role {args.role}; send it as: Authorization: Bearer <token>",
          file=sys.stderr)
    print(token)
    return 0


CLI_PRINCIPAL = Principal(token_id=0, role=Role.ADMIN, label="cli")


def _token_list(_args: argparse.Namespace, settings: Settings) -> int:
    from api import ids
    from domain.services import tokens

    with _migrated(settings) as (_, reader), reader() as session:
        rows = tokens.list_tokens(session)
    table = [("id", "name", "role", "seller", "created", "last used", "revoked")]
    table += [(ids.encode("ApiToken", t.id), t.name or "-", t.role.value,
               ids.encode("Seller", t.seller_id) if t.seller_id is not None else "-",
               _when(t.created_at), _when(t.last_used_at), _when(t.revoked_at))
              for t in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return 0


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


@_refusing_domain_errors
def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from api import ids
    from api.auth import CACHE_SECONDS
    from api.revocation import bump_epoch
    from domain.services import tokens

    token_id = int(args.id) if args.id.isascii() and args.id.isdigit() else \
        ids.decode(args.id, "ApiToken", "id")
    with _migrated(settings) as (writer, _):
        with writer() as session:
            found = tokens.find(session, token_id)
            already = found.revoked_at if found is not None else None
        token = tokens.revoke(UnitOfWork(writer), CLI_PRINCIPAL, token_id)
    # servers sharing the epoch refuse it from their next request; on PostgreSQL the
    # others heard the revoking transaction's NOTIFY
    try:
        bump_epoch(_epoch_path(settings))
    except OSError as exc:  # e.g. the servers' file belongs to another user
        print(f"warning: revoked, but the servers could not be told at once ({exc}); they "
              f"refuse the token within {int(CACHE_SECONDS)} s", file=sys.stderr)
    gid = ids.encode("ApiToken", token.id)
    if already is not None:
        print(f"token {gid} was already revoked ({_when(already)})")
    else:
        print(f"revoked token {gid}")
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from domain.services import audit

    engine = make_engine(settings)
    try:
        writer, reader = session_factories(engine)
        if args.repair:
            before = audit.repair(UnitOfWork(writer), actor="cli:check")
            _print_drift(before, "before repair")
        with reader() as session:
            off = audit.audit(session)
        stocks = _count_stocks(reader)
    finally:
        engine.dispose()
    _print_drift(off, "off" if not args.repair else "still off after repair")
    print(f"checked {stocks} stocks: {len(off)} off", file=sys.stderr if off else sys.stdout)
    return 1 if off else 0


def _count_stocks(reader: sessionmaker[Session]) -> int:
    from sqlalchemy import func, select

    from domain.models import Stock

    with reader() as session:
        return int(session.scalar(select(func.count(Stock.id))) or 0)


def _print_drift(rows: Sequence[Drift], title: str) -> None:
    if not rows:
        return
    print(f"{len(rows)} stock(s) {title}:")
    print(f"{'stock':>8}  {'sku':<24} {'warehouse':<20} {'qty':>8} {'ledger':>8} "
          f"{'alloc':>8} {'ledger':>8} {'live':>8}  problem")
    for d in rows:
        print(f"{d.stock_id:>8}  {d.sku[:24]:<24} {d.warehouse[:20]:<20} {d.quantity:>8} "
              f"{d.ledger_quantity:>8} {d.allocated:>8} {d.ledger_allocated:>8} "
              f"{d.live_allocated:>8}  {'; '.join(d.problems)}")


def _import_stock(args: argparse.Namespace, settings: Settings) -> int:
    from domain.services.stock_import import COLUMNS, import_stock

    path = Path(args.file)
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    with _migrated(settings) as (writer, _):
        progress = ProgressBar(path.stat().st_size)
        try:
            with path.open("rb") as raw:
                reader = csv.DictReader(progress.lines(raw))
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    print(f"error: the header row lacks {', '.join(missing)} "
                          f"(expected {','.join(COLUMNS)})", file=sys.stderr)
                    return 2
                report = import_stock(
                    UnitOfWork(writer), CLI_PRINCIPAL,
                    ((reader.line_num, row) for row in reader),
                    decode_id=_warehouse_pk, source=path.name,
                    reject_everything=args.error_policy == "reject-everything",
                    progress=progress.rows)
        finally:
            progress.done()
    print(f"rows applied: {report.applied}")
    print(f"rows rejected: {len(report.rejected)}")
    for line_no, reason in report.rejected[:1000]:
        print(f"  line {line_no}: {reason}")
    if len(report.rejected) > 1000:
        print(f"  ... and {len(report.rejected) - 1000} more")
    if report.rejected and args.error_policy == "reject-everything":
        print("nothing was applied (--error-policy reject-everything)")
    return 1 if report.rejected else 0


def _warehouse_pk(text: str) -> int | None:
    from api import ids

    if text.isdigit():
        return int(text)
    try:
        type_name, pk = ids.parse(text)
    except ids.InvalidId:
        return None
    return pk if type_name == "Warehouse" else None


class ProgressBar:
    """A progress bar on stderr, driven by the bytes of the file read so far."""

    def __init__(self, total_bytes: int) -> None:
        self.total = max(total_bytes, 1)
        self.read = 0
        self.count = 0
        self.live = sys.stderr.isatty()

    def lines(self, raw: BinaryIO) -> Iterator[str]:
        for chunk in raw:
            self.read += len(chunk)
            yield chunk.decode("utf-8-sig" if self.read == len(chunk) else "utf-8")

    def rows(self, count: int) -> None:
        self.count = count
        share = min(self.read / self.total, 1.0)
        bar = "#" * int(share * 30)
        end = "\r" if self.live else "\n"
        print(f"[{bar:<30}] {share:6.1%}  {count:,} rows", end=end, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.live:
            print(file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stockyard", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, then serve GraphQL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(run=_serve)
    worker = sub.add_parser("worker", help="run dramatiq workers on the configured broker")
    worker.add_argument("--metrics-host", default="127.0.0.1",
                        help="where the worker serves /metrics (port: STOCKYARD_METRICS_PORT, "
                             "default 9464)")
    worker.set_defaults(run=_worker)
    sub.add_parser("migrate", help="alembic upgrade head, then say what it did") \
        .set_defaults(run=_migrate)
    sub.add_parser("schema", help="print the GraphQL schema served (SDL)") \
        .set_defaults(run=_schema)
    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token and print it (last line)")
    create.add_argument("--role", choices=[r.value for r in Role], required=True)
    create.add_argument("--seller", help="seller ID (global ID or number) for seller tokens")
    create.add_argument("--name", help="a name for the token (at most 40 characters), shown "
                                       "in the ledger's actor, e.g. \"Berlin dashboard\"")
    create.set_defaults(run=_token_create)
    token_sub.add_parser("list", help="list the tokens, newest first") \
        .set_defaults(run=_token_list)
    revoke = token_sub.add_parser("revoke", help="refuse a token from now on, in every server")
    revoke.add_argument("id", help="the token's ID (global ID or number)")
    revoke.set_defaults(run=_token_revoke)
    check = sub.add_parser("check", help="audit every stock against its ledger and allocations")
    check.add_argument("--repair", action="store_true",
                       help="rebuild allocated counters from live allocations (ledgered)")
    check.set_defaults(run=_check)
    imp = sub.add_parser("import-stock", help="set on-hand from a CSV of sku,warehouse,quantity")
    imp.add_argument("file")
    imp.add_argument("--error-policy", choices=["reject-everything", "reject-failed-rows"],
                     default="reject-everything")
    imp.set_defaults(run=_import_stock)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    from api.observe import configure_logging

    configure_logging(settings.log_format)
    return int(args.run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
