"""The `stockyard` console script: the composition root (settings -> engine, broker, app)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from alembic import command
from alembic.config import Config
from starlette.applications import Starlette

from domain.db import make_engine, session_factories
from domain.events import Event, StockChanged
from domain.models import Role
from domain.settings import Settings
from domain.uow import UnitOfWork

HERE = os.path.dirname(os.path.abspath(__file__))


def migrate(settings: Settings) -> None:
    """alembic upgrade head on the configured database."""
    config = Config(os.path.join(HERE, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(HERE, "migrations"))
    config.attributes["database_url"] = settings.database_url
    command.upgrade(config, "head")


def make_publisher(settings: Settings):  # type: ignore[no-untyped-def]
    """Wire committed domain events to the broker (after commit only)."""
    from workers.broker import make_broker, start_embedded_worker

    broker = make_broker(settings)
    from workers import actors  # actors bind to the broker set just above

    if actors.stock_changed.broker is not broker:  # imported earlier (tests): rebind
        actors.stock_changed.broker = broker
        broker.declare_actor(actors.stock_changed)
    start_embedded_worker(broker)

    def publish(event: Event) -> None:
        if isinstance(event, StockChanged):
            actors.stock_changed.send(list(event.variant_ids))

    return publish


def app_factory() -> Starlette:
    """uvicorn's factory: one engine and broker per server process."""
    from api.app import build_app

    settings = Settings.from_env()
    # a thread holding a hot stock row lock should get the GIL back quickly to COMMIT
    sys.setswitchinterval(0.001)
    return build_app(make_engine(settings), make_publisher(settings),
                     threads=settings.db_pool_size)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    migrate(settings)
    print(f"Stockyard GraphQL on http://{args.host}:{args.port}/graphql", flush=True)
    uvicorn.run("cli:app_factory", factory=True, host=args.host, port=args.port,
                workers=args.workers, loop="uvloop", http="httptools",
                access_log=args.access_log, log_level="warning")
    return 0


def _worker(_args: argparse.Namespace, settings: Settings) -> int:
    if settings.broker_url is None:
        print("STOCKYARD_BROKER_URL is not set: the server runs its tasks in-process, "
              "no worker is needed.", file=sys.stderr)
        return 2
    from dramatiq.cli import main as dramatiq_main

    sys.argv = ["dramatiq", "workers.entrypoint", "--processes", "1", "--threads", "4"]
    return int(dramatiq_main() or 0)


def _token_create(args: argparse.Namespace, settings: Settings) -> int:
    from api import ids
    from domain.errors import DomainError
    from domain.services import tokens

    seller_id = None
    if args.seller is not None:
        try:
            seller_id = ids.decode(args.seller, "Seller", "seller") \
                if not args.seller.isdigit() else int(args.seller)
        except DomainError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
    migrate(settings)
    engine = make_engine(settings)
    try:
        writer, _ = session_factories(engine)
        token = tokens.create_token(UnitOfWork(writer), Role(args.role), seller_id)
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"Created a token with role {args.role}; send it as: Authorization: Bearer <token>",
          file=sys.stderr)
    print(token)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stockyard", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, then serve GraphQL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(run=_serve)
    sub.add_parser("worker", help="run dramatiq workers on the configured broker") \
        .set_defaults(run=_worker)
    sub.add_parser("migrate", help="alembic upgrade head") \
        .set_defaults(run=lambda _a, s: migrate(s) or 0)
    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token and print it (last line)")
    create.add_argument("--role", choices=[r.value for r in Role], required=True)
    create.add_argument("--seller", help="seller ID (global ID or number) for seller tokens")
    create.set_defaults(run=_token_create)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    return int(args.run(args, Settings.from_env()))


if __name__ == "__main__":
    sys.exit(main())
