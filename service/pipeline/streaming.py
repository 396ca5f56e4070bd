"""Streaming smoothing, free of any transport: a signal filtered chunk by chunk, with output equal to
the one-shot answer of the whole signal.

The promise (docs/service.md, "Streaming"): for every edge mode and every way a signal is cut into
chunks ([n], [C, n] or [B, C, n] each, n >= 0, the rows C (or B x C) fixed by the first chunk; an
answer comes in its chunk's nesting), the concatenation along
time of `push(chunk)` for every chunk and of `end()` equals `/smooth` of the whole signal with the
same model version and mode (within float32 rounding; bit for bit when the same convolution path
runs). It holds because every mode is a slice of the *full* correlation (contract.modes): the
signal padded with K-1 copies of its first sample on the left and of its last sample on the right,
correlated with the K-tap kernel, so `full[t]` needs the padded samples t .. t+K-1. After `seen`
samples the padded signal is known up to the K-1 left copies + `seen` samples, so `full[0:seen]`
is known; the stream keeps the last K-1 padded samples per channel (`tail`), and each chunk of n
samples yields `full[seen : seen + n]` as the valid correlation of `tail + chunk`. Each mode keeps
the part of that inside its slice:

- ``causal``: ``full[0 : L]``: every sample answered at once (no delay);
- ``same``:   ``full[h : h + L]``, h = K // 2: sample s is answered once sample s + h has arrived;
  `end()` appends the right edge padding and flushes the last h;
- ``valid``:  ``full[K-1 : L]``: answers start once K samples have arrived; `end()` flushes nothing.

As in one-shot `/smooth`, a stream that ends with no sample (any mode), or with fewer than K samples
in `valid` mode, is an error (the one-shot request would be a 400).

API (stable; the WebSocket route, the HTTP carried state and the gRPC stream all use it):

    stream = SmoothStream.open(served, mode)      # served: a ProvenVersion (the version is pinned)
    out = stream.push(chunk)                      # chunk [n] | [C, n] | [B, C, n] -> rows [C, m] float32
    tail = stream.end()                           # -> [C, t]; the stream is closed afterwards
    out = stream.step(chunk_or_None, end=False)   # push, and with end=True the tail after it, nested as the chunk
    codec = StateCodec(secret)                    # secret: bytes shared by every worker/replica
    token = codec.seal(stream)                    # a str carrying everything the next chunk needs
    stream = resume(registry, codec.unseal(token), model=..., version=..., mode=...)  # 400 / 409
    check_pinned(registry, stream)                # 409 when the pinned version no longer serves
    stream = open_stream(registry, model, version, mode)   # resolve + open (404/400/503 as /smooth)
    hub = StreamHub.from_settings(settings)       # per worker: hub.acquire()/release() (503 over
                                                  # MONOSERVE_STREAM_MAX_OPEN), hub.codec (the secret)
    stream.check_chunk(array)                     # 400 unless finite, of 1-3 dims, with the stream's rows
    stream.work_elements(n)                       # for the pipeline's inline/thread rule:
        # served.predicted_seconds(...) * 1e6 <= settings.inline_max_inference_us -> inline

Every method argument `method` is settings.smooth_method ("auto": the convolution path one-shot
/smooth takes for that length). The Service (service.edge.routes.deps) holds one hub as `service.streams`.

`SmoothStream` holds (served ProvenVersion, mode, channels, the last K-1 padded samples per
channel, samples seen); `push`/`end` are plain CPU work (call them in a worker thread when not tiny;
one call at a time per stream). Errors are service.base.errors exceptions: BadRequestError (400: bad
chunk, forged or foreign state, a state for another model/version/mode/channel count),
VersionGoneError (409: the pinned version no longer serves, or was replaced by other files).

The state (`StateCodec`): a JSON header (model, version, digest of the version's files, mode,
channels, samples seen, issue time) and the raw float32 tail, HMAC-SHA256 signed with the secret.
The signature is checked (constant time) before anything in it is parsed or allocated, so a forged
or altered state is a 400 without further work; a genuine state only ever holds what this service
produced (its size bounded by the frames the service accepted). A state names its version by number
and by digest: a version re-published with other files under the same number is "gone" (409).
A state older than `max_age_s` is refused (400), so a state cannot be replayed forever; and as each
answer issues a new state, one older than `idle_s` (MONOSERVE_STREAM_IDLE_TIMEOUT_S, the idle rule
of every stream transport) belongs to a stream unused for that long: refused as expired (408).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from contract.modes import EDGE_MODES, mode_slice
from contract.padding import history as padding_history
from contract.padding import lead as padding_lead
from contract.padding import left_edge as padding_left
from contract.padding import min_length as padding_min_length
from contract.padding import right_edge as padding_right
from service.base import codec
from service.compute import shapes
from service.base.errors import BadRequestError, PayloadTooLargeError, RequestTimeoutError, ServiceError, VersionGoneError
from service.compute.inference import full_correlation_of

if TYPE_CHECKING:
    from service.compute.version import ProvenVersion
    from service.repository.registry import ModelRegistry

STATE_FORMAT = 1
_MAC_BYTES = 32
# What a stream that answers only when it ends (circular padding) may hold: 1 MiB of float32 in all
# channels (256 open streams per worker hold at most 256 MiB; its carried state stays far below the
# state codec's cap). A longer circular signal is one-shot /smooth's job.
MAX_HELD_ELEMENTS = 256 * 1024


def _slice_bounds(mode: str, kernel_size: int) -> int:
    """The first index of the full correlation that `mode` answers (its slice's start)."""
    return mode_slice(mode, kernel_size, kernel_size).start


class SmoothStream:
    """One stream: the pinned version, the mode, the channel count and the last K-1 padded samples."""

    __slots__ = ("served", "mode", "channels", "tail", "seen", "kernel_size", "start", "ended", "lead", "padding",
                 "edge_lead", "history")

    def __init__(self, served: ProvenVersion, mode: str, channels: int | None = None,
                 tail: np.ndarray | None = None, seen: int = 0, lead: tuple[int, ...] | None = None):
        info = served.manifest.smoother
        if info is None:
            raise BadRequestError(f"model {served.manifest.name!r} is a {served.kind}, not a smoother",
                                  model=served.manifest.name)
        self.served = served
        self.mode = mode
        self.kernel_size = int(info.kernel_size)
        self.start = _slice_bounds(mode, self.kernel_size)  # first index of `full` this mode answers
        self.padding = info.padding
        # samples held before the left edge is known (None: the whole signal, circular padding), and
        # padded samples kept between chunks after that (contract.padding)
        self.edge_lead = padding_lead(self.padding, self.kernel_size, mode)
        self.history = padding_history(self.padding, self.kernel_size)
        self.channels = channels
        # [C, history] float32: the last samples of the padded signal once the stream answers; before
        # that (seen < edge_lead) the raw samples so far; None before the first sample
        self.tail = tail
        self.seen = seen  # samples per channel received so far
        self.ended = False
        self.lead = lead  # the leading dimensions of the last chunk: how answers are nested

    @classmethod
    def open(cls, served: ProvenVersion, mode: str | None = None) -> SmoothStream:
        """A new stream on `served` (a smoother) in `mode` (default: the model's default mode)."""
        info = served.manifest.smoother
        if info is None:
            raise BadRequestError(f"model {served.manifest.name!r} is a {served.kind}, not a smoother",
                                  model=served.manifest.name)
        mode = mode or info.default_mode
        if mode not in EDGE_MODES or mode not in info.edge_modes:
            raise BadRequestError(f"unknown mode {str(mode)[:40]!r}; expected one of {list(info.edge_modes)}",
                                  field="mode")
        return cls(served, mode)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.served.manifest.name

    @property
    def version(self) -> int:
        return self.served.manifest.version

    @property
    def state_nbytes(self) -> int:
        """Bytes the stream holds between chunks (its tail)."""
        return 0 if self.tail is None else int(self.tail.nbytes)

    @property
    def answering(self) -> bool:
        """Whether the left edge is known, so chunks are answered as they come (else they are held)."""
        return self.edge_lead is not None and self.seen >= self.edge_lead

    def tail_width(self) -> int:
        """Samples per channel the state holds after `seen` samples."""
        return 0 if not self.seen else (self.history if self.answering else self.seen)

    def state_bytes_bound(self, channels: int) -> int:
        """The most bytes this stream's state may hold with `channels` channels (for the in-flight budget):
        its padded history, or for a stream that answers only when it ends all it may hold until then."""
        if self.edge_lead is None:
            return MAX_HELD_ELEMENTS * 4
        return channels * max(self.history, self.edge_lead - 1) * 4

    def pending(self) -> int:
        """Samples per channel received but not yet answered (answered by later chunks or `end`)."""
        return min(self.seen, self.start) if self.answering else self.seen

    def work_elements(self, samples: int) -> int:
        """Input elements one push of `samples` samples convolves (for the inline/thread decision)."""
        return (self.channels or 1) * (samples + self.kernel_size - 1)

    # -- chunks ---------------------------------------------------------------------------------
    def check_chunk(self, chunk: Any, field: str = "signal") -> np.ndarray:
        """`chunk` as a C-contiguous float32 array in its own nesting ([n], [C, n] or [B, C, n], as
        one-shot /smooth takes: service.compute.shapes) whose rows (C, or B x C) are this stream's channel
        count (400 otherwise). Changes nothing: a refused chunk leaves the stream as it was."""
        if not isinstance(chunk, np.ndarray):
            raise BadRequestError(f"'{field}' must be an array ({shapes.SIGNAL_NESTINGS})", field=field)
        shapes.check_rank(chunk, field)
        channels, samples = shapes.rows_of(chunk.shape), chunk.shape[-1]
        if channels < 1:
            raise BadRequestError(f"a stream chunk needs at least one channel, got shape {list(chunk.shape)}",
                                  field=field, shape=list(chunk.shape))
        if self.channels is not None and channels != self.channels:
            raise BadRequestError(f"this stream has {self.channels} channel(s) (fixed by its first chunk), the chunk "
                                  f"has {channels} (shape {list(chunk.shape)})", field=field, expected=self.channels,
                                  got=channels)
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        if samples:
            codec.check_finite(chunk, field)  # the service's one finite check (a fast path for small chunks)
        return chunk

    def push(self, chunk: np.ndarray, method: str = "auto", checked: bool = False) -> np.ndarray:
        """The answers that `chunk` ([n], [C, n] or [B, C, n]) completes, as rows [C, m] float32 (m may
        be 0 while same/valid wait, or while the left edge of reflect/circular padding is not known
        yet); `step` answers in the chunk's own nesting."""
        if self.ended:
            raise BadRequestError("the stream has ended")
        if not checked:  # a transport that refused bad chunks before computing passes checked=True (one check a frame)
            chunk = self.check_chunk(chunk)
        self.lead = chunk.shape[:-1]
        chunk = shapes.as_rows(chunk)
        channels, samples = chunk.shape
        if self.channels is None:
            self.channels = channels
        if samples == 0:
            return np.empty((channels, 0), dtype=np.float32)
        history = self.kernel_size - 1
        if not self.answering:  # hold the raw samples until the left edge is known
            raw = chunk if self.tail is None else np.concatenate((self.tail, chunk), axis=1)
            if self.edge_lead is None or raw.shape[1] < self.edge_lead:
                if channels * raw.shape[1] > MAX_HELD_ELEMENTS:
                    raise PayloadTooLargeError(
                        f"a stream with {self.padding} padding answers only when it ends, and holds at most "
                        f"{MAX_HELD_ELEMENTS} samples in all channels until then (smooth a longer signal with one-shot "
                        "/smooth)", field="signal", limit=MAX_HELD_ELEMENTS)
                self.tail, self.seen = raw, raw.shape[1]
                return np.empty((channels, 0), dtype=np.float32)
            work = np.concatenate((padding_left(raw, self.kernel_size, self.padding, self.mode), raw), axis=1)
            before, self.seen = 0, raw.shape[1]
        else:
            work = np.concatenate((self.tail[:, self.tail.shape[1] - history:], chunk), axis=1) if history else chunk
            before, self.seen = self.seen, self.seen + samples
        out = self._valid(work, method)  # full[before : seen]
        self.tail = np.ascontiguousarray(work[:, work.shape[1] - self.history:])
        drop = max(0, self.start - before)
        return out[:, drop:] if drop else out

    def end(self, method: str = "auto") -> np.ndarray:
        """The answers still owed, with the right edge padding ([C, t]); the stream is closed after."""
        if self.ended:
            raise BadRequestError("the stream has ended")
        self.ended = True
        if self.seen == 0 or self.channels is None or self.tail is None:
            raise BadRequestError("the stream ended before any sample arrived (an empty signal)", field="signal")
        kernel_size, length = self.kernel_size, self.seen
        if self.mode == "valid" and length < kernel_size:
            raise BadRequestError(f"mode 'valid' needs at least {kernel_size} samples (the kernel size), the stream "
                                  f"had {length}", field="signal", kernel_size=kernel_size, length=length)
        shortest = padding_min_length(self.padding, kernel_size)
        if length < shortest:
            raise BadRequestError(f"{self.padding} padding needs at least {shortest} samples (the kernel size), the "
                                  f"stream had {length}", field="signal", kernel_size=kernel_size, length=length)
        whole = mode_slice(self.mode, length, kernel_size)
        if not self.answering:  # the whole signal was held (circular padding): answer it as one-shot /smooth
            full = full_correlation_of(self.served, self.tail[None], method)[0]
            return np.ascontiguousarray(full[:, whole])
        first, stop = max(length, whole.start), whole.stop  # owed: full[first : stop]
        if stop <= first or kernel_size == 1:
            return np.empty((self.channels, 0), dtype=np.float32)
        history = kernel_size - 1
        right = padding_right(self.tail, kernel_size, self.padding, self.mode)  # the right edge's K-1 samples
        work = np.concatenate((self.tail[:, self.tail.shape[1] - history:], right), axis=1)
        out = self._valid(work, method)  # full[length : length + K-1]
        return np.ascontiguousarray(out[:, first - length : stop - length])

    def step(self, chunk: np.ndarray | None, end: bool = False, method: str = "auto", checked: bool = False) -> np.ndarray:
        """One request's or frame's answer: `push(chunk)` (None: no new samples), and with `end` the
        flushed tail after it, in one array nested as the chunk (as the last chunk when None).
        `checked`: `chunk` is what `check_chunk` returned for this stream (not checked again)."""
        out = self.push(chunk, method, checked) if chunk is not None else None
        if not end:
            if out is None:
                raise BadRequestError("a stream chunk needs a 'signal' unless it ends the stream", field="signal")
            return self.nested(out)
        tail = self.end(method)
        return self.nested(tail if out is None else np.concatenate((out, tail), axis=1))

    def nested(self, rows: np.ndarray) -> np.ndarray:
        """An answer [C, m] in the nesting of the stream's last chunk ([C, m] before any)."""
        lead = self.lead if self.lead is not None else (rows.shape[0],)
        return shapes.nested(rows, lead)

    def _valid(self, work: np.ndarray, method: str) -> np.ndarray:
        """Valid correlation of each row of `work` [C, M] with the kernel: [C, M - K + 1] float32,
        through the convolution path one-shot /smooth takes for such a signal (service.compute.inference)."""
        length = work.shape[1]
        full = full_correlation_of(self.served, work[None], method)[0]  # [C, M + K - 1]
        return full[:, self.kernel_size - 1 : length]

    # -- state ----------------------------------------------------------------------------------
    def header(self, issued: float) -> dict[str, Any]:
        return {"f": STATE_FORMAT, "model": self.model, "version": self.version, "digest": self.served.artifact_digest,
                "mode": self.mode, "channels": self.channels, "seen": self.seen, "issued": round(issued, 3),
                "lead": None if self.lead is None else list(self.lead)}


@dataclass
class StreamState:
    """A verified state's fields (its signature checked), before its version is resolved."""

    model: str
    version: int
    digest: str
    mode: str
    channels: int | None
    seen: int
    issued: float
    tail: bytes
    lead: tuple[int, ...] | None = None  # the last chunk's leading dimensions (the answers' nesting)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateCodec:
    """Seals a stream's state into a signed token and opens one (HMAC-SHA256 with a shared secret)."""

    def __init__(self, secret: bytes, max_age_s: float = 0.0, max_bytes: int = 16 * 1024 * 1024,
                 idle_s: float = 0.0):
        if len(secret) < 16:
            raise ValueError("the stream state secret needs at least 16 bytes")
        self._key = hashlib.sha256(b"monoserve stream state v1\n" + secret).digest()
        self.max_age_s = max_age_s  # 0: states never expire
        # A state is issued with each answer, so its age is the time its stream has been unused: the
        # idle rule of every stream transport (MONOSERVE_STREAM_IDLE_TIMEOUT_S; 0: none).
        self.idle_s = idle_s
        self.max_bytes = max_bytes

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def seal(self, stream: SmoothStream, now: float | None = None) -> str:
        if stream.ended:
            raise ValueError("an ended stream has no state")
        header = orjson.dumps(stream.header(time.time() if now is None else now))
        tail = b"" if stream.tail is None else stream.tail.tobytes()
        body = header + b"\n" + tail
        return _b64encode(body) + "." + _b64encode(self._mac(body))

    def unseal(self, token: Any, now: float | None = None) -> StreamState:
        """The fields of a genuine state; 400 for anything else (forged, altered, truncated, expired)."""
        if not isinstance(token, str) or not token:
            raise BadRequestError("'state' must be the string a previous answer of this stream carried", field="state")
        if len(token) > self.max_bytes * 4 // 3 + 64:
            raise BadRequestError("'state' is longer than any state this service issues", field="state")
        body_text, dot, mac_text = token.partition(".")
        try:
            body, mac = _b64decode(body_text), _b64decode(mac_text)
        except (ValueError, TypeError):
            body, mac = b"", b""
        if not dot or len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(body)):
            raise BadRequestError("'state' is not a stream state issued by this service (forged, altered, or "
                                  "signed with another secret)", field="state")
        header_bytes, newline, tail = body.partition(b"\n")
        try:
            header = orjson.loads(header_bytes)
            state = StreamState(str(header["model"]), int(header["version"]), str(header["digest"]),
                                str(header["mode"]), None if header["channels"] is None else int(header["channels"]),
                                int(header["seen"]), float(header["issued"]), tail,
                                None if header.get("lead") is None else tuple(int(dim) for dim in header["lead"]))
            if header["f"] != STATE_FORMAT or not newline:
                raise ValueError(f"state format {header['f']!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:  # signed by us: another format version
            raise BadRequestError(f"'state' has a format this service does not read ({str(exc)[:80]})",
                                  field="state") from None
        now = time.time() if now is None else now
        if self.idle_s and now - state.issued > self.idle_s:
            raise RequestTimeoutError(f"'state' expired: its stream was unused for {now - state.issued:.0f} s, longer "
                                      f"than the idle timeout of {self.idle_s:g} s (MONOSERVE_STREAM_IDLE_TIMEOUT_S): "
                                      f"start a new stream", field="state", idle_timeout_s=self.idle_s)
        if self.max_age_s and now - state.issued > self.max_age_s:
            raise BadRequestError(f"'state' expired: issued {now - state.issued:.0f} s ago, states live "
                                  f"{self.max_age_s:g} s", field="state")
        return state


def pinned_version(registry: ModelRegistry, model: str, version: int, digest: str | None = None,
                   served: ProvenVersion | None = None) -> ProvenVersion:
    """The version a stream is pinned to, as the registry serves it now; 409 when it no longer does
    (removed, unloaded, refused after a change, or re-published with other files)."""
    entry = registry.models.get(model)
    current = entry.served.get(version) if entry is not None else None
    if current is None:
        raise VersionGoneError(f"model {model!r} version {version}, which this stream is pinned to, is no longer "
                               f"served: start a new stream", model=model, version=version)
    if served is not None and current is not served and digest is None:
        digest = served.artifact_digest  # proved again (e.g. unloaded and loaded): the same files are the same kernel
    if current is not served and digest is not None and current.artifact_digest != digest:
        raise VersionGoneError(f"model {model!r} version {version}, which this stream is pinned to, was replaced by "
                               f"other files: start a new stream", model=model, version=version)
    return current


def check_pinned(registry: ModelRegistry, stream: SmoothStream) -> None:
    """409 when the version `stream` is pinned to no longer serves (the stream must end)."""
    pinned_version(registry, stream.model, stream.version, served=stream.served)


def resume(registry: ModelRegistry, state: StreamState, model: str | None = None, version: int | None = None,
           mode: str | None = None) -> SmoothStream:
    """The stream a verified state continues. `model`, `version`, `mode`: what the request names
    beside the state, if anything; each must be the state's (400 otherwise, never another answer)."""
    for name, asked, held in (("model", model, state.model), ("version", version, state.version),
                              ("mode", mode, state.mode)):
        if asked is not None and asked != held:
            raise BadRequestError(f"the request names {name} {asked!r}, its stream state is for {name} {held!r}",
                                  field=name, state=held, requested=asked)
    served = pinned_version(registry, state.model, state.version, state.digest)
    info = served.manifest.smoother
    if info is None or state.mode not in info.edge_modes:
        raise BadRequestError("'state' does not fit the version it names", field="state")
    lead = state.lead
    if lead is not None and (not 1 <= len(lead) + 1 <= shapes.MAX_SIGNAL_DIMS
                             or shapes.rows_of((*lead, 0)) != (state.channels or 0)):
        raise BadRequestError("'state' does not fit the version it names", field="state")
    stream = SmoothStream(served, state.mode, state.channels, None, state.seen, lead)
    width = stream.tail_width()  # the padded history, or the raw samples held before the left edge is known
    if state.seen:
        channels = state.channels or 0
        if channels < 1 or len(state.tail) != channels * width * 4:
            raise BadRequestError("'state' does not fit the version it names", field="state")
        stream.tail = np.frombuffer(state.tail, dtype=np.float32).reshape(channels, width).copy()
    elif state.tail:
        raise BadRequestError("'state' does not fit the version it names", field="state")
    return stream


def open_stream(registry: ModelRegistry, model: str | None, version: int | None, mode: str | None) -> SmoothStream:
    """A new stream on the version the registry resolves for (model, version) (404/400/503 as /smooth)."""
    return SmoothStream.open(registry.resolve("smoother", model, version), mode)


def service_error_status(exc: BaseException) -> int:
    """The HTTP status an exception of a stream answers with (500 for our own bugs)."""
    return exc.status if isinstance(exc, ServiceError) else 500



class StreamHub:
    """A worker's streams: the cap on open ones, and the state codec (one per Service).

    `secret`: the configured key (MONOSERVE_STREAM_SECRET); None: a random one for this process
    (service.server gives the workers of one server a common one)."""

    def __init__(self, max_open: int, secret: bytes | None = None, max_age_s: float = 0.0, idle_s: float = 0.0):
        import os

        self.max_open = max_open
        self.open = 0
        self.codec = StateCodec(secret if secret else os.urandom(32), max_age_s=max_age_s, idle_s=idle_s)

    @classmethod
    def from_settings(cls, settings: Any) -> StreamHub:
        secret = settings.stream_secret.get_secret_value().encode() if settings.stream_secret is not None else None
        return cls(settings.stream_max_open, secret, settings.stream_state_max_age_s, settings.stream_idle_timeout_s)

    def acquire(self) -> None:
        """Count one more open stream; 503 when this worker already has `max_open`."""
        if self.open >= self.max_open:
            from service.base.errors import OverloadedError

            raise OverloadedError(f"this worker already streams {self.open} streams, its limit "
                                  f"(MONOSERVE_STREAM_MAX_OPEN); retry shortly", limit=self.max_open,
                                  headers={"Retry-After": "1"})
        self.open += 1

    def release(self) -> None:
        self.open -= 1
