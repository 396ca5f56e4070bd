"""uvicorn's HTTP protocols with a header deadline, against clients that open a connection and
never finish their request line and headers (slowloris).

What uvicorn does by itself (0.54): `timeout_keep_alive` closes a connection idle *between*
requests; nothing bounds a connection that never sends anything, or that sends its headers one
byte at a time: every byte received cancels the keep-alive timer, with either implementation.
h11 caps the size of incomplete headers (`h11_max_incomplete_event_size`, 16 KiB); httptools
caps nothing. These subclasses add, for both: from the connection's first moment and from the
first byte of each later request, the headers must be complete within `header_timeout_s` and
within `MAX_HEADER_BYTES`, or the connection is closed. The body has its own deadline
(`body_timeout_s`, a 408 from service.pipeline.endpoint); the keep-alive timeout stays uvicorn's, except
that it does not cut off a client still uploading a body that was refused early (for at most
`body_timeout_s`), so that client reads its 413/503 instead of a reset.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.base.codec import Chunks
from service.base.deadlines import Deadline, DeadlineSweeper, sweeper
from service.base.extensions import BODY_INTO

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024

_DISCARD_CHUNK = 256 * 1024


def _configured_header_timeout_s() -> float:
    from service.settings import get_settings

    return get_settings().header_timeout_s


def _body_timeout_s() -> float:
    from service.settings import get_settings

    return get_settings().body_timeout_s


class _HeaderDeadline:
    """Mixin over a uvicorn HTTP protocol (it uses their `loop` and `transport`); subclasses say
    whether the parser is between the start of a request and the end of its headers."""

    _header_timer: Deadline | None = None  # the connection's _header_deadline while it is armed
    _header_deadline: Deadline
    _sweeper: DeadlineSweeper
    _header_timeout_s: float
    _header_bytes = 0

    _drain_started: float | None = None

    def _in_headers(self) -> bool:
        raise NotImplementedError

    def _draining(self) -> bool:
        """The answer is sent but the request's body is still arriving (an early 413/503)."""
        raise NotImplementedError

    def timeout_keep_alive_handler(self) -> None:
        # uvicorn arms its keep-alive timer when an answer is complete, and closes the connection if
        # no byte arrives within it. After an early answer the client is still uploading the body
        # (uvicorn discards it) and reads the answer only when done: closing then would turn a clear
        # 503 into a reset. So the drain may go on, for at most body_timeout_s.
        if self._draining():
            now = self.loop.time()  # type: ignore[attr-defined]
            if self._drain_started is None:
                self._drain_started = now
            if now - self._drain_started < _body_timeout_s():
                self.timeout_keep_alive_task = self.loop.call_later(  # type: ignore[attr-defined]
                    self.timeout_keep_alive, self.timeout_keep_alive_handler)  # type: ignore[attr-defined]
                return
        self._drain_started = None
        super().timeout_keep_alive_handler()  # type: ignore[misc]

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._header_timer = None
        self._sweeper = sweeper(self.loop)  # type: ignore[attr-defined]
        self._header_timeout_s = _configured_header_timeout_s()
        self._header_deadline = self._sweeper.add(self._header_timeout_s, self._on_header_timeout)
        self._header_deadline.cancel()  # armed just below, like every request's
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_bytes = 0
            # a coarse deadline (service.base.deadlines), not a TimerHandle per request; one per connection
            self._header_timer = self._header_deadline
            self._sweeper.rearm(self._header_deadline, self._header_timeout_s)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._header_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        # Judged after parsing: a chunk that completes the headers (and carries body bytes) is fine;
        # body bytes still arriving after an early answer (uvicorn discards them) are not headers.
        if not self._in_headers() or self._upgraded():
            self._disarm_header_timer()
            return
        self._count_header_bytes(data)

    def _count_header_bytes(self, data: bytes) -> None:
        """Headers still incomplete after `data`: the deadline runs, and their size is capped."""
        self._arm_header_timer()
        self._header_bytes += len(data)
        transport = self.transport  # type: ignore[attr-defined]
        if self._header_bytes > MAX_HEADER_BYTES and not transport.is_closing():
            log.info("closing a connection whose request headers exceed %d bytes", MAX_HEADER_BYTES)
            self._disarm_header_timer()
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _upgraded(self) -> bool:
        """The connection was handed to another protocol (a WebSocket upgrade): it is no longer HTTP.
        uvicorn keeps the transport and calls `set_protocol`, so this protocol's deadline would
        otherwise close a stream that merely pauses (the stream has its own idle timeout)."""
        transport = self.transport  # type: ignore[attr-defined]
        return transport is not None and transport.get_protocol() is not self

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if self._upgraded():
            return
        if self._in_headers() and not transport.is_closing():
            log.info("closing a connection whose request headers did not arrive within %.3g s", self._header_timeout_s)
            transport.close()


class H11HeaderDeadline(_HeaderDeadline, H11Protocol):
    def _in_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE  # before a request's headers are complete

    def _draining(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete


class _BodyReader(asyncio.BufferedProtocol):
    """The rest of one request body, read from the socket straight into the application's buffer.

    uvicorn's path copies every body byte five times in user space (uvloop's bytes, the parser's
    on_body bytes, the cycle's bytearray, receive()'s bytes, the application's buffer:
    docs/performance.md); this one reads with recv_into into the final buffer and copies nothing.
    The HTTP protocol hands the transport to it (`transport.set_protocol`, which uvloop and asyncio
    both honour between reads) for exactly the bytes the body has left, so a pipelined request
    behind the body stays in the socket, and takes the transport back when they have arrived.

    If the application stops waiting (its body deadline cancelled it), the reader goes on reading
    the body's remaining bytes into a scratch buffer and dropping them, so that the connection
    stays in step for the answer and a next request; closing the connection ends it as usual.
    """

    __slots__ = ("http", "view", "position", "progress", "done", "_scratch", "_remaining")

    def __init__(self, http: Any, view: memoryview, progress: Callable[[int], None] | None,
                 done: asyncio.Future) -> None:
        self.http, self.view, self.progress, self.done = http, view, progress, done
        self.position = 0
        self._scratch: memoryview | None = None  # set when the application stopped waiting
        self._remaining = 0

    def abandon(self) -> None:
        """Keep the connection in step without the application: read and drop the body's rest."""
        if self._scratch is None:
            self._remaining = len(self.view) - self.position
            self._scratch = memoryview(bytearray(min(_DISCARD_CHUNK, max(1, self._remaining))))
            self.view = memoryview(b"")
            self.progress = None

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._scratch is not None:
            return self._scratch[: min(len(self._scratch), self._remaining)]
        return self.view[self.position:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._scratch is not None:
            self._remaining -= nbytes
            if self._remaining <= 0:
                self.http._body_read(self)
            return
        self.position += nbytes
        if self.progress is not None:
            self.progress(self.position)
        if self.position >= len(self.view):
            self.http._body_read(self)
            if not self.done.done():
                self.done.set_result(self.position)

    def eof_received(self) -> bool | None:
        return self.http.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.position)  # short: the pipeline sees the client went away
        self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()


try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import (
        HEADER_RE,
        HEADER_VALUE_RE,
        STATUS_LINE,
        HttpToolsProtocol,
        RequestResponseCycle,
    )

    _JOIN_MAX = 64 * 1024  # an answer up to this size goes out with its head in one write; a bigger one in two

    def _nothing() -> None:
        pass

    class _HotCycle(RequestResponseCycle):
        """One request on a hot route (service.edge.fastpath.HotLane), answered below ASGI.

        It is uvicorn's cycle as far as uvicorn's protocol can tell (the attributes its parser
        callbacks, flow control, pipelining, keep-alive and shutdown read and write, and uvicorn's
        own `receive`, which sends any 100 Continue), but the pipeline is called directly, and the
        answer is written as head and body in one write, from the pipeline's Reply: no scope
        dispatch through the app, no message dicts, no per-header checks of headers we made."""

        def __init__(self, protocol: HttpToolsHeaderDeadline, lane: Any, adapter: Any, path: str, query: bytes,
                     keep_alive: bool) -> None:
            # only what uvicorn's protocol and receive() use (its own __init__ sets twenty attributes)
            self.transport = protocol.transport
            self.flow = protocol.flow
            self.message_event = asyncio.Event()
            self.on_response = protocol.on_response_complete
            self.default_headers = protocol.server_state.default_headers
            self.disconnected = False
            self.keep_alive = keep_alive
            self.waiting_for_100_continue = protocol.expect_100_continue
            self.body = bytearray()
            self.more_body = True
            self.response_started = self.response_complete = False
            self.lane, self.adapter, self.path, self.query = lane, adapter, path, query
            self.headers, self.body_into = protocol.headers, protocol._body_into

        async def run_asgi(self, app: Any) -> None:  # how uvicorn's protocol starts a cycle (queued ones too)
            try:
                await self.lane.serve(self.adapter, self.headers, self.path, self.query, self.receive, self.body_into,
                                      self.write_reply, self.body_ready)
            except BaseException as exc:  # as uvicorn's run_asgi: the pipeline maps every error, so this is a bug
                log.error("Exception in the hot path of POST %s", self.path, exc_info=exc)
                if not self.response_started and not self.disconnected:
                    self.write_head(500, [b"content-type: text/plain; charset=utf-8\r\n", b"content-length: 21\r\n",
                                          b"connection: close\r\n"], b"Internal Server Error", close=True)
                elif not self.response_complete:
                    self.transport.close()
            else:
                if not self.response_started and not self.disconnected:  # handle() gives None only on a disconnect
                    log.error("the hot path of POST %s returned without an answer", self.path)
                    self.transport.close()
            finally:
                self.on_response = _nothing

        def body_ready(self) -> bytes | None:
            """The whole body when the parser has already seen all of it (a small request arrives
            with its headers in one read); None when more is to come, a 100 Continue is owed, or
            the client is gone: then the pipeline receives it, under its deadline, as usual."""
            if self.more_body or self.waiting_for_100_continue or self.disconnected or self.response_complete:
                return None
            body = bytes(self.body)
            self.body = bytearray()
            return body

        async def write_reply(self, reply: Any, request_id: str | None) -> None:
            """The pipeline's Reply, as uvicorn's send() would write it from send_reply's messages."""
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()
            if self.disconnected:
                return
            body = reply.body
            lines = [b"content-length: %d\r\ncontent-type: " % len(body), reply.media_type.encode("latin-1"), b"\r\n"]
            if request_id is not None:  # accepted only when sane, or our own (service.base.context)
                lines.append(b"x-request-id: %s\r\n" % request_id.encode("latin-1"))
            close = False
            if reply.headers:
                for name, value in reply.headers.items():
                    name_bytes, value_bytes = name.lower().encode("latin-1"), str(value).encode("latin-1")
                    if HEADER_RE.search(name_bytes) or HEADER_VALUE_RE.search(value_bytes):
                        raise RuntimeError(f"invalid HTTP header {name!r}")  # as uvicorn: a 500, nothing sent
                    if name_bytes == b"connection" and b"close" in [t.strip().lower() for t in value_bytes.split(b",")]:
                        close = True
                    lines.append(b"%s: %s\r\n" % (name_bytes, value_bytes))
            if isinstance(body, Chunks):  # a large answer, each part written from its own memory
                self.write_head(reply.status, lines, None, close)
                for part in body.parts:
                    if self.flow.write_paused and not self.disconnected:
                        await self.flow.drain()
                    if self.disconnected:
                        return
                    self.transport.write(part)
                self._complete()
            else:
                self.write_head(reply.status, lines, body, close)

        def write_head(self, status: int, lines: list[bytes], body: bytes | None, close: bool) -> None:
            """Status line, headers and (unless None) the whole body; then the request is complete."""
            self.response_started = True
            self.waiting_for_100_continue = False
            if close:
                self.keep_alive = False
            head = [STATUS_LINE[status]]
            for name, value in self.default_headers:  # the server's (none as service.server runs it)
                head += [name, b": ", value, b"\r\n"]
            head += lines
            if not self.keep_alive and not close:
                head.append(b"connection: close\r\n")
            head.append(b"\r\n")
            if body is None:
                self.transport.write(b"".join(head))
                return
            if len(body) <= _JOIN_MAX:
                head.append(body)
                self.transport.write(b"".join(head))
            else:  # no copy of a large body to join it
                self.transport.write(b"".join(head))
                self.transport.write(body)
            self._complete()

        def _complete(self) -> None:
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    class HttpToolsHeaderDeadline(_HeaderDeadline, HttpToolsProtocol):
        # uvicorn makes a new cycle when a request's headers are complete: the parser is reading
        # headers while the cycle is still the one it had when the message began (None at first).
        # Each override is a Python frame per request: on_message_begin, on_message_complete, data_received.
        _cycle_at_begin: Any = None
        _message_complete = False

        def _in_headers(self) -> bool:
            return self.cycle is self._cycle_at_begin

        def _draining(self) -> bool:
            return self.cycle is not None and self.cycle.response_complete and not self._message_complete

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._extensions = {BODY_INTO: self._body_into}  # one dict per connection, not per request
            # the app's hot routes (service.app.MonoserveApp, service.edge.fastpath.HotLane); None
            # under another app, with the hot path off, or when uvicorn wrapped the app in middleware
            self._lane = getattr(self.app, "hot_lane", None) if self.limit_concurrency is None else None
            self._keep_alive_deadline = self._sweeper.add(self.timeout_keep_alive, self.timeout_keep_alive_handler)
            self._keep_alive_deadline.cancel()  # armed when an answer is complete

        def on_response_complete(self) -> None:
            # uvicorn's, but the keep-alive timeout is the connection's coarse deadline
            # (service.base.deadlines), re-armed, instead of a TimerHandle made and cancelled per
            # request; uvicorn cancels it through timeout_keep_alive_task as before
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                deadline = self._keep_alive_deadline
                self._sweeper.rearm(deadline, self.timeout_keep_alive)
                self.timeout_keep_alive_task = deadline  # type: ignore[assignment]

        def connection_lost(self, exc: Exception | None) -> None:
            self._keep_alive_deadline.cancel()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            lane = self._lane
            if lane is not None and self.parser.get_method() == b"POST" and not self.parser.should_upgrade():
                parsed = httptools.parse_url(self.url)  # as uvicorn's on_headers_complete
                path = parsed.path.decode("ascii")
                if "%" in path:
                    path = urllib.parse.unquote(path)
                path = self.root_path + path
                adapter = lane.adapter(path)
                if adapter is not None:
                    http_version = self.parser.get_http_version()
                    keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
                    self.scope["method"], self.scope["path"] = "POST", path  # for anything that reads the scope
                    cycle = _HotCycle(self, lane, adapter, path, parsed.query or b"", keep_alive)
                    existing, self.cycle = self.cycle, cycle
                    if existing is None or existing.response_complete:
                        self._start_asgi_task(cycle, self.app)
                    else:  # pipelined behind a request still being answered: uvicorn's queue
                        self.flow.pause_reading()
                        self.pipeline.appendleft((cycle, self.app))
                    return
            super().on_headers_complete()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["extensions"] = self._extensions
            self._cycle_at_begin = self.cycle
            self._message_complete = False
            self._drain_started = None
            if self._header_timer is None:  # _arm_header_timer, inlined: once per request
                self._header_bytes = 0
                self._header_timer = self._header_deadline
                self._sweeper.rearm(self._header_deadline, self._header_timeout_s)

        def data_received(self, data: bytes) -> None:
            HttpToolsProtocol.data_received(self, data)  # the mixin's check, inlined below (once per read)
            if self.cycle is not self._cycle_at_begin or self.transport.get_protocol() is not self:
                # the headers are complete (the common case, inlined), or the connection became a
                # WebSocket (uvicorn upgrades before it makes a cycle): no header deadline either way
                timer = self._header_timer
                if timer is not None:
                    timer.cancel()
                    self._header_timer = None
                return
            self._count_header_bytes(data)

        def on_message_complete(self) -> None:
            # uvicorn returns early here when the answer was sent before the body ended (an early
            # 413/503), so its cycle cannot tell whether the body is complete
            self._message_complete = True
            super().on_message_complete()

        async def _body_into(self, view: memoryview, progress: Callable[[int], None] | None = None) -> int:
            """Fill `view` with the current request's next body bytes; the count written (short
            only when the client went away). Called by the application in place of its further
            receive() calls, after it has admitted the body (limits, budget) and received its first
            chunk (which sends any 100 Continue)."""
            cycle = self.cycle
            pending = cycle.body  # body bytes parsed since the application's last receive()
            written = min(len(pending), len(view))
            if written:
                view[:written] = pending[:written]
                cycle.body = bytearray()
                if progress is not None:
                    progress(written)
            if not cycle.more_body or cycle.disconnected or written == len(view) or self.transport.is_closing():
                return written
            # the parser has counted the body bytes it has seen; the reader takes exactly the rest,
            # then a fresh parser (in _body_read) starts at the next request
            done: asyncio.Future = self.loop.create_future()
            step = None if progress is None else (lambda count: progress(written + count))
            reader = _BodyReader(self, view[written:], step, done)
            self.transport.set_protocol(reader)
            self.flow.resume_reading()  # uvicorn pauses reading while its own buffer is full
            try:
                return written + await done
            except asyncio.CancelledError:
                if not done.done():
                    reader.abandon()
                raise

        def _body_read(self, reader: _BodyReader) -> None:
            """The reader has the whole body: the request's message is complete, and the connection
            goes back to this protocol with a parser at the start of the next request."""
            if self.transport.get_protocol() is reader and not self.transport.is_closing():
                self.transport.set_protocol(self)
            self.parser = httptools.HttpRequestParser(self)
            try:
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's own
            except AttributeError:  # pragma: no cover - httptools < 0.6.3
                pass
            self._message_complete = True
            cycle = self.cycle
            if cycle is not None:
                cycle.more_body = False
                cycle.message_event.set()

except ImportError:  # pragma: no cover - uvicorn without httptools (the serve extra installs it)
    HttpToolsHeaderDeadline = None  # type: ignore[assignment,misc]


def protocol_class(name: str) -> type:
    """'auto' (httptools when installed, as uvicorn's own 'auto'), 'httptools' or 'h11'."""
    if name == "h11" or (name == "auto" and HttpToolsHeaderDeadline is None):
        return H11HeaderDeadline
    if HttpToolsHeaderDeadline is None:
        raise RuntimeError("MONOSERVE_HTTP=httptools but httptools is not installed")
    return HttpToolsHeaderDeadline
