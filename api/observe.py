"""What an operator sees of each request: one access line, and the request id on every line
logged while it runs (API.md "Access and operations", Operations).

`RequestLog` is plain ASGI around the whole app: it takes the client's `X-Request-Id` (or
makes one), echoes it on the response, and when the response is sent logs one line on the
`stockyard.access` logger with what the GraphQL view noted in the request's `Entry`: the
operation, its outcome and error code, and the caller. The entry lives in a context
variable, so the service threads (api/threads.py copies the caller's context) and every
logger see the request id too (`RequestIdFilter`).

`configure_logging` sets up the process's logging once: text lines, or JSON with
`STOCKYARD_LOG_FORMAT=json` (structlog's renderer over the standard library's records).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from graphql import FieldNode, OperationDefinitionNode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain import metrics

access_log = logging.getLogger("stockyard.access")

REQUEST_ID_HEADER = b"x-request-id"
# what is accepted from a client as its request id: visible ASCII, no spaces, bounded
_CLIENT_ID = re.compile(rb"[!-~]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
FIELDS_SHOWN = 3  # root fields named in an operation's label


@dataclass(slots=True)
class Entry:
    """What the access line says of one request; the view fills in the GraphQL part."""

    request_id: str
    operation: str | None = None  # the operationName the client gave
    label: str | None = None  # "mutation orderCreate": its type and root fields
    caller: str | None = None  # the token's principal, e.g. "admin:3"
    # ok; refused (a mutation's payload errors); error (top-level errors: a client's
    # mistake); failed (an unexpected exception); unauthenticated; rate_limited
    outcome: str | None = None
    code: str | None = None  # the first error code, if any


_entry: ContextVar[Entry | None] = ContextVar("stockyard_request", default=None)


def current() -> Entry | None:
    """The request being served by this task or thread, if any."""
    return _entry.get()


def label_of(operation: OperationDefinitionNode | None) -> str | None:
    """`query productVariants`, `mutation orderCreate,orderCancel`: the operation's type and
    its root fields (not aliases), bounded by the schema, so fit for a metric's label."""
    if operation is None:
        return None
    names = list(dict.fromkeys(
        s.name.value for s in operation.selection_set.selections if isinstance(s, FieldNode)))
    shown = ",".join(names[:FIELDS_SHOWN]) + (",..." if len(names) > FIELDS_SHOWN else "")
    return f"{operation.operation.value} {shown or '...'}"


def note_result(entry: Entry, data: Any, errors: Any) -> None:
    """The outcome of one executed operation: `error` with top-level errors, `refused`
    when a mutation's payload carries errors (INSUFFICIENT_STOCK, ...), `ok` otherwise."""
    if errors:
        if entry.outcome != "failed":  # set by the schema's process_errors (api/schema.py)
            entry.outcome = "error"
        for error in errors:
            extensions = getattr(error, "extensions", None) or {}
            code = extensions.get("code") if isinstance(extensions, dict) else None
            if code:
                entry.code = str(code)
                break
        return
    if isinstance(data, dict):
        for value in data.values():
            payload_errors = value.get("errors") if isinstance(value, dict) else None
            if payload_errors:
                first = payload_errors[0]
                code = first.get("code") if isinstance(first, dict) else None
                entry.outcome, entry.code = "refused", str(code) if code else None
                return
    if entry.outcome is None:
        entry.outcome = "ok"


# what a request that is not a GraphQL operation counts as, by its path's first segment
# (any other path counts as "other": a client cannot add labels by asking for paths)
ROUTES = frozenset({"graphql", "healthz", "metrics", "channels", "feeds", "graphiql"})


class RequestLog:
    """ASGI middleware: the request id in and out, one access line per HTTP request
    (`enabled`), and the request metrics (`counted`, domain/metrics.py)."""

    def __init__(self, app: ASGIApp, *, enabled: bool = True, counted: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        self.counted = counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                given = value
                break
        request_id = given.decode() if given is not None and _CLIENT_ID.fullmatch(given) \
            else new_request_id()
        entry = Entry(request_id)
        token = _entry.set(entry)
        status = 500
        echo = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _entry.reset(token)
            seconds = time.perf_counter() - started
            if self.enabled:
                self.log(scope, entry, status, seconds)
            if self.counted:
                count(scope, entry, status, seconds)

    @staticmethod
    def log(scope: Scope, entry: Entry, status: int, seconds: float) -> None:
        outcome = _outcome(entry, status)
        access_log.info(
            "%s %s %s %s %s%s %.1f ms caller=%s", scope["method"], scope["path"], status,
            entry.label or "-", outcome, f" {entry.code}" if entry.code else "",
            seconds * 1000, entry.caller or "-",
            extra={"request_id": entry.request_id, "pid": os.getpid(), "method": scope["method"],
                   "path": scope["path"], "status": status, "operation": entry.operation,
                   "operation_label": entry.label, "outcome": outcome, "code": entry.code,
                   "duration_ms": round(seconds * 1000, 2), "caller": entry.caller})


def count(scope: Scope, entry: Entry, status: int, seconds: float) -> None:
    """The request in the request metrics: by operation label (a GraphQL operation's type
    and root fields, else `http /<route>`) and outcome."""
    label = entry.label
    if label is None:
        route = scope["path"].lstrip("/").split("/", 1)[0]
        label = f"http /{route if route in ROUTES else 'other'}"
    outcome = _outcome(entry, status)
    try:
        counter, histogram = _counted[label, outcome]
    except KeyError:  # (labels() takes a lock and builds a key each time: ~2 us a call)
        counter, histogram = _counted.setdefault((label, outcome), (
            metrics.REQUESTS.labels(label, outcome), metrics.REQUEST_SECONDS.labels(label)))
    counter.inc()
    histogram.observe(seconds)


# (operation label, outcome) -> its two children; bounded, as the labels are (the schema's
# root fields, the routes, six outcomes)
_counted: dict[tuple[str, str], tuple[Any, Any]] = {}


def _outcome(entry: Entry, status: int) -> str:
    """What the view noted, else what the HTTP status says."""
    return entry.outcome or ("ok" if status < 400 else "failed" if status >= 500 else "error")


_PROCESS = secrets.token_hex(8)  # this process's part of the ids it makes
_next_id = itertools.count(1).__next__


def new_request_id() -> str:
    """A request id of our own: 16 random hex digits per process, then a counter (uuid4
    cost 4% of a server's CPU in the order benchmark: a getrandom call per request)."""
    return f"{_PROCESS}{_next_id():016x}"


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr without a write and flush per line: the access line's own write cost 5% of a
    server's CPU in the order benchmark. Lines go out when 64 KiB are buffered, at once
    for WARNING and above, within FLUSH_EVERY otherwise (a thread), and on `flush_logs`
    (the app's shutdown: a server's worker process ends without running atexit)."""

    FLUSH_EVERY = 0.5

    def __init__(self, fileno: int) -> None:
        super().__init__(open(fileno, "w", buffering=64 * 2**10,  # noqa: SIM115
                              encoding="utf-8", errors="backslashreplace", closefd=False))
        self._dirty = False
        self._closed = False
        flusher = threading.Thread(target=self._flush_now_and_then, daemon=True,
                                   name="stockyard-log-flush")
        flusher.start()

    def flush(self) -> None:  # StreamHandler.emit calls it after every record
        self._dirty = True

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.flush_now()

    def close(self) -> None:  # logging.shutdown (atexit): what is buffered goes out
        self._closed = True
        try:
            self.flush_now()
        finally:
            super().close()

    def flush_now(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._dirty = False
            self.stream.flush()

    def _flush_now_and_then(self) -> None:
        while not self._closed:
            time.sleep(self.FLUSH_EVERY)
            if self._dirty:
                try:
                    self.flush_now()
                except (OSError, ValueError):  # stderr closed: nothing more to say
                    return


def flush_logs() -> None:
    """Write out what the process's buffered handler holds."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BufferedStreamHandler):
            handler.flush_now()


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or "-") on every record, as `request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            entry = _entry.get()
            record.request_id = entry.request_id if entry is not None else "-"
        return True


def _cheaper_records() -> None:
    """What no line shows is not gathered for each record: the caller's file and line (a
    walk up the stack), the thread, the process and its multiprocessing name (the logging
    HOWTO's "Optimization"; JSON lines carry the pid as a field of their own)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class SecondFormatter(logging.Formatter):
    """The standard text format, its date and time worked out once per second instead of
    for every line (`time.strftime` was a quarter of an access line's cost)."""

    _second: int | None = None
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """One handler on stderr for the process's loggers: Stockyard's at `level`, everyone
    else's at WARNING; `fmt` "json" renders each record as one JSON object (structlog)."""
    try:
        handler: logging.Handler = BufferedStreamHandler(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # a stand-in stderr (tests): unbuffered
        handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    _cheaper_records()
    if fmt == "json":
        import structlog

        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ]))
    else:
        handler.setFormatter(SecondFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "stockyard", False)]:
        root.removeHandler(old)
        old.close()
    handler.stockyard = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.getLogger("stockyard").setLevel(level)
