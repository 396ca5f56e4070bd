"""Request IDs, the per-request context every log line reads, and the log formats.

Every HTTP response carries `X-Request-ID`: the client's own when it sent a sane one (1 to
MAX_ID_LENGTH characters of [A-Za-z0-9._:@+=-]; anything else is replaced, never echoed), else a
new one. A new ID is a per-process prefix (pid and random bits, so workers and restarts never
collide) and a counter: no uuid4 and no os.urandom per request on the hot path.

The request's `RequestContext` (ID, model, version, status, start time) lives in a ContextVar set
where the request enters the app (service.app.MonoserveApp, service.pipeline.endpoint.serve_asgi): each
ASGI request runs in its own task, and anyio's worker threads inherit the context, so every log
record made while serving it, in any module, carries its ID through `RequestContextFilter`.

MONOSERVE_LOG_FORMAT=json writes one JSON object per line: time, level, logger, message,
request_id, model, version, status, duration_ms (the last five when known). MONOSERVE_ACCESS_LOG
adds one line per request on the `service.access` logger.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import secrets
import time
from typing import Any, Callable

import orjson

from service.base import tracing

HEADER = "x-request-id"
HEADER_BYTES = b"x-request-id"
MAX_ID_LENGTH = 128
_SANE = re.compile(r"[A-Za-z0-9._:@+=\-]{1,%d}" % MAX_ID_LENGTH)

access_log = logging.getLogger("service.access")


class RequestContext:
    """What log lines and spans say about the request being served. Class-level defaults: a new
    context sets two attributes (the hot path makes one per request)."""

    model: str | None = None
    version: int | None = None
    status: int | None = None
    # (stage, start ns, end ns) noted by the pipeline when tracing is on (service.base.tracing); else None
    marks: list[tuple[str, int, int]] | None = None

    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.start = _perf_counter()
        if tracing._tracer is not None:
            self.marks = []


_perf_counter = time.perf_counter
CURRENT: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("monoserve_request", default=None)


class _IdSource:
    """'<pid hex>-<6 random hex>-<counter hex>': unique across workers and restarts, cheap to make
    (no syscall, no randomness per request: ~0.2 us). A forked child starts its own prefix."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prefix = f"{os.getpid():x}-{secrets.token_hex(3)}-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


_ids = _IdSource()
os.register_at_fork(after_in_child=_ids.reset)
new_id = _ids.next


def accept(value: str | None) -> str:
    """The client's X-Request-ID when sane, else a new one."""
    if value is not None and _SANE.fullmatch(value):
        return value
    return new_id()


def from_scope(scope: dict[str, Any]) -> str:
    """The request ID for an ASGI scope (the header's value read from the raw list)."""
    for name, value in scope["headers"]:
        if name == HEADER_BYTES:
            return accept(value.decode("latin-1"))
    return new_id()


def begin(request_id: str) -> RequestContext:
    context = RequestContext(request_id)
    CURRENT.set(context)
    return context


def current_id() -> str | None:
    context = CURRENT.get()
    return None if context is None else context.id


def log_access(context: RequestContext, method: str, path: str) -> None:
    """One line per request (MONOSERVE_ACCESS_LOG), with model, version, status and duration."""
    duration_ms = (time.perf_counter() - context.start) * 1e3
    model = f" {context.model}" + (f" v{context.version}" if context.version is not None else "") if context.model else ""
    access_log.info("%s %s %s%s %.3f ms", method, path, context.status, model, duration_ms,
                    extra={"duration_ms": round(duration_ms, 3)})


def finish(context: RequestContext, method: str, path: str, trace: Callable[[], tuple[str, Any]]) -> None:
    """After the answer: the access line (when on) and the request's span (when tracing sampled it).
    `trace()` gives (route, request headers), asked only for a traced request."""
    if access_log.isEnabledFor(logging.INFO):
        log_access(context, method, path)
    if context.marks is not None:
        route, headers = trace()
        tracing.record(context, method, route, headers)


# -- logging ----------------------------------------------------------------------------------
class RequestContextFilter(logging.Filter):
    """Puts the current request's ID, model, version and status on every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = CURRENT.get()
        if context is None:
            record.request_id = getattr(record, "request_id", None)
        else:
            record.request_id = context.id
            record.model = context.model
            record.version = context.version
            record.status = context.status
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{text} [request_id={request_id}]" if request_id else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes into "exc_info" as text."""

    FIELDS = ("request_id", "model", "version", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(log_format: str, level: str, access: bool) -> dict[str, Any]:
    """A logging.config.dictConfig for the server process (uvicorn's loggers included): every
    handler formats as `log_format` ("text" or "json") and carries the request context."""
    formatter = {"()": JsonFormatter} if log_format == "json" else {"()": TextFormatter}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestContextFilter}},
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["request"],
                                 "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["default"], "level": "WARNING"},
        "loggers": {
            "service": {"level": level.upper()},
            "service.access": {"level": "INFO" if access else "WARNING"},
            "uvicorn": {"level": level.upper()},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"level": "WARNING"},  # service.access replaces it (IDs, models, durations)
        },
    }


def configure_logging(log_format: str, level: str, access: bool) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(log_format, level, access))
