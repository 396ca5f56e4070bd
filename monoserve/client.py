"""A small Python client for a monoserve service: `Client` (sync) and `AsyncClient` (asyncio).

    from monoserve.client import Client
    with Client("http://127.0.0.1:8000") as client:
        result = client.smooth(np.random.randn(8, 4096), mode="causal")   # result.smoothed: np.ndarray
        scores = client.classify(rows).scores                              # [N] or [N, labels]

Arrays travel as `.npy` both ways by default (no text conversion of the numbers); `json=True`
sends and receives JSON instead (and is the only way to send instances as {feature: value}
objects). A 503 (no valid model yet, or a full batching queue) is retried up to `retries` times,
waiting what its `Retry-After` header says (capped at `max_retry_wait` seconds; a short backoff
when the header is absent). Every other error raises a `MonoserveError` subclass carrying the
service's {"error": ...} message, its HTTP status and the whole body.

Streaming (`client.stream_smooth(signal_or_chunks)`, sync and async): yields the smoothed chunks
as they are answered, over a WebSocket (the `websockets` library) or over HTTP with a carried state.

Needs numpy, httpx and websockets only (`pip install monoserve[client]`): no torch, no service code.

Over 500 lines on purpose: this is the whole public client, sync and async, one-shot and streamed,
in the one module users import (`from monoserve.client import Client`); the two clients share
every request, answer and error helper above them.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import io
import json as jsonlib
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping, Sequence

import httpx
import numpy as np

NPY_MEDIA_TYPE = "application/x-npy"
JSON_MEDIA_TYPE = "application/json"
DEFAULT_URL = "http://127.0.0.1:8000"


# -- errors -----------------------------------------------------------------------------------
class MonoserveError(Exception):
    """An error answer of the service: `status`, `message` (its "error" field) and `body`."""

    def __init__(self, status: int, message: str, body: Mapping[str, Any] | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = dict(body or {})


class BadRequestError(MonoserveError):
    """400: malformed input, wrong shape, NaN/Inf, unknown feature or mode, ..."""


class UnauthorizedError(MonoserveError):
    """401: missing or wrong API token."""


class NotFoundError(MonoserveError):
    """404: unknown model or version."""


class VersionGoneError(MonoserveError):
    """409: the model version a stream is pinned to no longer serves: start a new stream."""


class PayloadTooLargeError(MonoserveError):
    """413: body or signal over the service's limits."""


class UnsupportedMediaTypeError(MonoserveError):
    """415."""


class UnavailableError(MonoserveError):
    """503 after every retry: no valid model version, models still loading, or overloaded."""


class ServerError(MonoserveError):
    """Any other status (500, ...)."""


ERRORS_BY_STATUS: dict[int, type[MonoserveError]] = {
    400: BadRequestError, 401: UnauthorizedError, 404: NotFoundError, 409: VersionGoneError, 413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError, 503: UnavailableError,
}


def error_from(response: httpx.Response) -> MonoserveError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    else:
        body, message = None, (response.text[:500] or response.reason_phrase)
    return ERRORS_BY_STATUS.get(response.status_code, ServerError)(response.status_code, message, body)


# -- results ----------------------------------------------------------------------------------
@dataclass
class SmoothResult:
    smoothed: np.ndarray  # float32, the input's nesting ([L], [C, L] or [B, C, L])
    model: str
    version: int
    mode: str


@dataclass
class ClassifyResult:
    scores: np.ndarray  # float32: [N] with one label, [N, labels] with several
    labels: list[str]
    # The decision threshold: a float when every label shares one; a float64 array [labels] (in
    # `labels` order) when each label has its own. Either way `scores >= threshold` decides.
    threshold: float | np.ndarray
    model: str
    version: int
    # Per instance, the labels whose score reaches the threshold, as the service decided them
    # (JSON answers of services that send them; None otherwise: compare scores with threshold).
    decisions: list[list[str]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # any other field of a JSON answer

    @property
    def thresholds(self) -> dict[str, float]:
        """Each label's decision threshold, by label name."""
        values = np.broadcast_to(np.asarray(self.threshold, dtype=np.float64), (len(self.labels),))
        return {label: float(value) for label, value in zip(self.labels, values)}


# -- requests and answers (shared by both clients) --------------------------------------------
@dataclass
class _Request:
    path: str
    content: bytes
    headers: dict[str, str]
    params: dict[str, Any]


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _as_array(data: Any, name: str) -> np.ndarray:
    array = np.asarray(data)
    if array.dtype not in (np.float32, np.float64):
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
        array = array.astype(np.float32)
    return np.ascontiguousarray(array)


def _query(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _smooth_request(signal: Any, model: str | None, version: int | None, mode: str | None, json: bool) -> _Request:
    params = _query(model=model, version=version, mode=mode)
    array = _as_array(signal, "signal")
    if json:
        return _Request("/smooth", _dumps({"signal": array.tolist(), **params}), {"content-type": JSON_MEDIA_TYPE}, {})
    return _Request("/smooth", _npy_bytes(array), {"content-type": NPY_MEDIA_TYPE, "accept": NPY_MEDIA_TYPE}, params)


def _classify_request(instances: Any, model: str | None, version: int | None, json: bool) -> _Request:
    params = _query(model=model, version=version)
    is_objects = isinstance(instances, Sequence) and bool(instances) and all(isinstance(i, Mapping) for i in instances)
    if is_objects and not json:
        raise ValueError("instances as {feature: value} objects need json=True (.npy carries arrays only)")
    if json:
        payload = [dict(i) for i in instances] if is_objects else _as_array(instances, "instances").tolist()
        return _Request("/classify", _dumps({"instances": payload, **params}), {"content-type": JSON_MEDIA_TYPE}, {})
    array = _as_array(instances, "instances")
    return _Request("/classify", _npy_bytes(array), {"content-type": NPY_MEDIA_TYPE, "accept": NPY_MEDIA_TYPE}, params)


def _dumps(payload: dict[str, Any]) -> bytes:
    return jsonlib.dumps(payload, allow_nan=False).encode()  # NaN is not JSON: refused here, clearly


def _load_npy(response: httpx.Response) -> np.ndarray:
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def _smooth_result(response: httpx.Response) -> SmoothResult:
    if response.headers.get("content-type", "").startswith(NPY_MEDIA_TYPE):
        headers = response.headers
        return SmoothResult(_load_npy(response), headers["x-model"], int(headers["x-model-version"]), headers["x-mode"])
    body = response.json()
    return SmoothResult(np.asarray(body["smoothed"], dtype=np.float32), body["model"], int(body["version"]), body["mode"])


def _threshold(value: Any) -> float | np.ndarray:
    """An answer's threshold: one number, or one per label (a list) -> a float64 array."""
    return np.asarray(value, dtype=np.float64) if isinstance(value, list) else float(value)


def _classify_result(response: httpx.Response) -> ClassifyResult:
    if response.headers.get("content-type", "").startswith(NPY_MEDIA_TYPE):
        headers = response.headers
        return ClassifyResult(_load_npy(response), jsonlib.loads(headers["x-labels"]),
                              _threshold(jsonlib.loads(headers["x-threshold"])),
                              headers["x-model"], int(headers["x-model-version"]))
    body = dict(response.json())
    known = {key: body.pop(key) for key in ("scores", "labels", "threshold", "model", "version")}
    decisions = body.pop("decisions", None)
    return ClassifyResult(np.asarray(known["scores"], dtype=np.float32), list(known["labels"]), _threshold(known["threshold"]),
                          known["model"], int(known["version"]), decisions=decisions, extra=body)


def retry_after_seconds(header: str | None, attempt: int, cap: float) -> float:
    """Seconds to wait before retry `attempt` (1-based): Retry-After as seconds or an HTTP date,
    else an exponential backoff from 0.1 s; never more than `cap`, never negative."""
    wait: float | None = None
    if header:
        text = header.strip()
        try:
            wait = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
                wait = when.timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                wait = None
    if wait is None or wait != wait:  # absent, unreadable or NaN
        wait = 0.1 * 2 ** (attempt - 1)
    return max(0.0, min(wait, cap))


class _Base:
    def __init__(self, base_url: str, token: str | None, retries: int, max_retry_wait: float):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_retry_wait < 0:
            raise ValueError(f"max_retry_wait must be >= 0, got {max_retry_wait}")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.headers = {"authorization": f"Bearer {token}"} if token else {}

    def _wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying `response`, or None when it is final."""
        if response.status_code != 503 or attempt > self.retries:
            return None
        return retry_after_seconds(response.headers.get("retry-after"), attempt, self.max_retry_wait)


# -- sync -------------------------------------------------------------------------------------
class Client(_Base):
    """Blocking client (httpx.Client). Use as a context manager, or call close()."""

    def __init__(self, base_url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 60.0,
                 retries: int = 3, max_retry_wait: float = 10.0, transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, token, retries, max_retry_wait)
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=self.headers, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            response = self._http.request(method, path, **kwargs)
            if response.is_success:
                return response
            wait = self._wait(response, attempt)
            if wait is None:
                raise error_from(response)
            time.sleep(wait)

    def _post(self, request: _Request) -> httpx.Response:
        return self._send("POST", request.path, content=request.content, headers=request.headers, params=request.params)

    def smooth(self, signal: Any, *, model: str | None = None, version: int | None = None, mode: str | None = None,
               json: bool = False) -> SmoothResult:
        """Smooth [L], [C, L] or [B, C, L]; the answer keeps the nesting."""
        return _smooth_result(self._post(_smooth_request(signal, model, version, mode, json)))

    def classify(self, instances: Any, *, model: str | None = None, version: int | None = None,
                 json: bool = False) -> ClassifyResult:
        """Score [N, features] rows (or, with json=True, a list of {feature: value} objects)."""
        return _classify_result(self._post(_classify_request(instances, model, version, json)))

    def stream_smooth(self, signal: Any, *, model: str | None = None, version: int | None = None,
                      mode: str | None = None, transport: str = "websocket", json: bool = False,
                      chunk_samples: int = 4096, window: int = 8) -> Iterator[np.ndarray]:
        """Stream a signal chunk by chunk and yield the smoothed chunks as they are answered (see
        `_stream_smooth` below: WebSocket by default, transport="http" for requests with a state)."""
        return _stream_smooth(self, signal, model, version, mode, transport, json, chunk_samples, window)

    def ready(self) -> bool:
        """True when every model of the service has a valid version (GET /readyz)."""
        return self._http.get("/readyz").status_code == 200

    def models(self) -> dict[str, Any]:
        return self._send("GET", "/models").json()


# -- async ------------------------------------------------------------------------------------
class AsyncClient(_Base):
    """asyncio client (httpx.AsyncClient). Use `async with`, or await aclose()."""

    def __init__(self, base_url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 60.0,
                 retries: int = 3, max_retry_wait: float = 10.0, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, token, retries, max_retry_wait)
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=self.headers, transport=transport)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            response = await self._http.request(method, path, **kwargs)
            if response.is_success:
                return response
            wait = self._wait(response, attempt)
            if wait is None:
                raise error_from(response)
            await asyncio.sleep(wait)

    async def _post(self, request: _Request) -> httpx.Response:
        return await self._send("POST", request.path, content=request.content, headers=request.headers,
                                params=request.params)

    async def smooth(self, signal: Any, *, model: str | None = None, version: int | None = None,
                     mode: str | None = None, json: bool = False) -> SmoothResult:
        return _smooth_result(await self._post(_smooth_request(signal, model, version, mode, json)))

    async def classify(self, instances: Any, *, model: str | None = None, version: int | None = None,
                       json: bool = False) -> ClassifyResult:
        return _classify_result(await self._post(_classify_request(instances, model, version, json)))

    def stream_smooth(self, signal: Any, *, model: str | None = None, version: int | None = None,
                      mode: str | None = None, transport: str = "websocket", json: bool = False,
                      chunk_samples: int = 4096, window: int = 8) -> AsyncIterator[np.ndarray]:
        """`Client.stream_smooth` as an async iterator: `async for out in client.stream_smooth(...)`."""
        return _astream_smooth(self, signal, model, version, mode, transport, json, chunk_samples, window)

    async def ready(self) -> bool:
        return (await self._http.get("/readyz")).status_code == 200

    async def models(self) -> dict[str, Any]:
        return (await self._send("GET", "/models")).json()


# -- streaming (docs/service.md, "Streaming") ---------------------------------------------------
# The service answers every chunk of a stream as it arrives; the concatenation of the answers
# equals `smooth()` of the whole signal with the same version and mode. Over a WebSocket
# (GET /smooth/stream, the default) or over plain HTTP requests carrying the stream's state.
DEFAULT_CHUNK_SAMPLES = 4096
DEFAULT_WINDOW = 8  # chunks sent ahead of the answers read (the server answers them in order)


def _chunks(signal: Any, chunk_samples: int) -> Iterator[np.ndarray]:
    """An array [C, L] (or [L]) cut along time, or an iterable of chunks, as it is."""
    if isinstance(signal, np.ndarray) or (isinstance(signal, (list, tuple)) and signal and not isinstance(signal[0], np.ndarray)):
        array = np.asarray(signal)
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples}")
        for start in range(0, array.shape[-1], chunk_samples):
            yield array[..., start : start + chunk_samples]
        return
    yield from signal


def _chunk_array(chunk: Any) -> tuple[np.ndarray, bool]:
    """(float32 [C, n], whether the caller's chunk was 1-D and wants 1-D answers)."""
    array = _as_array(chunk, "chunk")
    if array.ndim == 1:
        return np.ascontiguousarray(array[None, :], dtype=np.float32), True
    if array.ndim != 2:
        raise ValueError(f"a stream chunk must be [channels, samples] or [samples], got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32), False


def _ws_url(base_url: str, model: str | None, version: int | None, mode: str | None) -> str:
    scheme, _, rest = base_url.partition("://")
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    query = "&".join(f"{key}={value}" for key, value in _query(model=model, version=version, mode=mode).items())
    return f"{ws_scheme}://{rest}/smooth/stream" + (f"?{query}" if query else "")


def _ws_error(exc: Exception) -> MonoserveError:
    """A closed stream's code and reason as the error the same problem raises over HTTP."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return ERRORS_BY_STATUS.get(status, ServerError)(status, exc.response.body.decode("utf-8", "replace")[:500])
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
        code, reason = exc.rcvd.code, exc.rcvd.reason
        status = code - 4000 if 4000 <= code < 5000 else 413 if code == 1009 else 500
        return ERRORS_BY_STATUS.get(status, ServerError)(status, reason or f"the stream was closed with code {code}",
                                                         {"close_code": code})
    return ServerError(500, f"the stream broke: {exc}")


def _ws_frame(array: np.ndarray, json: bool) -> bytes | str:
    return _dumps({"signal": array.tolist()}).decode() if json else _npy_bytes(array)


def _ws_check_size(frame: bytes | str, limit: int | None) -> bytes | str:
    """A frame over the server's limit (its handshake says it) is refused here: sent, it would end the
    stream with close 1009, or a reset that loses even that."""
    if limit is not None and len(frame) > limit:
        raise PayloadTooLargeError(413, f"a stream frame of {len(frame)} bytes exceeds the server's limit of {limit} "
                                        f"bytes (MONOSERVE_STREAM_MAX_FRAME_BYTES): send smaller chunks")
    return frame


def _ws_limit(ws: Any) -> int | None:
    value = ws.response.headers.get("x-max-frame-bytes") if ws.response is not None else None
    return int(value) if value and value.isdigit() else None


def _ws_answer(data: bytes | str) -> np.ndarray:
    if isinstance(data, str):
        body = jsonlib.loads(data)
        return np.asarray(body["smoothed"], dtype=np.float32).reshape(len(body["smoothed"]), -1)
    return np.load(io.BytesIO(data), allow_pickle=False)


def _shape_answer(answer: np.ndarray, flat: bool) -> np.ndarray:
    return answer[0] if flat else answer


class _HttpStream:
    """The requests of one stream over HTTP with a carried state (shared by both clients)."""

    def __init__(self, model: str | None, version: int | None, mode: str | None, json: bool):
        self.model, self.version, self.mode, self.json = model, version, mode, json
        self.state: str | None = None

    def request(self, array: np.ndarray | None, end: bool) -> _Request:
        if self.json:
            payload: dict[str, Any] = {}
            if array is not None:
                payload["signal"] = array.tolist()
            if self.state is None:
                payload.update(stream=True, **_query(model=self.model, version=self.version, mode=self.mode))
            else:
                payload["state"] = self.state
            if end:
                payload["end"] = True
            return _Request("/smooth", _dumps(payload), {"content-type": JSON_MEDIA_TYPE}, {})
        params: dict[str, Any] = {"end": "true"} if end else {}
        headers = {"content-type": NPY_MEDIA_TYPE, "accept": NPY_MEDIA_TYPE}
        if self.state is None:
            params.update(stream="true", **_query(model=self.model, version=self.version, mode=self.mode))
        else:
            headers["x-stream-state"] = self.state
        body = _npy_bytes(array if array is not None else np.zeros((self.channels, 0), np.float32))
        return _Request("/smooth", body, headers, params)

    channels = 1

    def answer(self, response: httpx.Response) -> np.ndarray:
        if response.headers.get("content-type", "").startswith(NPY_MEDIA_TYPE):
            self.state = response.headers.get("x-stream-state")
            return _load_npy(response)
        body = response.json()
        self.state = body.get("state")
        return np.asarray(body["smoothed"], dtype=np.float32).reshape(len(body["smoothed"]), -1)


def _stream_http_sync(client: "Client", chunks: Iterable[Any], model, version, mode, json) -> Iterator[np.ndarray]:
    stream = _HttpStream(model, version, mode, json)
    flat = False
    for chunk in chunks:
        array, flat = _chunk_array(chunk)
        stream.channels = array.shape[0]
        yield _shape_answer(stream.answer(client._post(stream.request(array, False))), flat)
    if stream.state is None:
        raise ValueError("a stream needs at least one chunk")
    yield _shape_answer(stream.answer(client._post(stream.request(None, True))), flat)


async def _stream_http_async(client: "AsyncClient", chunks: Any, model, version, mode, json) -> AsyncIterator[np.ndarray]:
    stream = _HttpStream(model, version, mode, json)
    flat = False
    async for chunk in _aiter(chunks):
        array, flat = _chunk_array(chunk)
        stream.channels = array.shape[0]
        yield _shape_answer(stream.answer(await client._post(stream.request(array, False))), flat)
    if stream.state is None:
        raise ValueError("a stream needs at least one chunk")
    yield _shape_answer(stream.answer(await client._post(stream.request(None, True))), flat)


async def _aiter(chunks: Any) -> AsyncIterator[Any]:
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def _stream_ws_sync(client: "Client", chunks: Iterable[Any], model, version, mode, json, window) -> Iterator[np.ndarray]:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = _ws_url(client.base_url, model, version, mode)
    flats: collections.deque[bool] = collections.deque()
    try:
        with connect(url, additional_headers=client.headers, max_size=None, open_timeout=client.timeout,
                     compression=None) as ws:
            flat, limit = False, _ws_limit(ws)
            for chunk in chunks:
                array, flat = _chunk_array(chunk)
                ws.send(_ws_check_size(_ws_frame(array, json), limit))
                flats.append(flat)
                if len(flats) >= window:
                    yield _shape_answer(_ws_answer(ws.recv(timeout=client.timeout)), flats.popleft())
            ws.send(_dumps({"end": True}).decode())
            flats.append(flat)
            while flats:
                yield _shape_answer(_ws_answer(ws.recv(timeout=client.timeout)), flats.popleft())
    except (ConnectionClosed, InvalidStatus) as exc:
        raise _ws_error(exc) from exc


async def _stream_ws_async(client: "AsyncClient", chunks: Any, model, version, mode, json, window) -> AsyncIterator[np.ndarray]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    url = _ws_url(client.base_url, model, version, mode)
    flats: collections.deque[bool] = collections.deque()
    try:
        async with connect(url, additional_headers=client.headers, max_size=None, open_timeout=client.timeout,
                           compression=None) as ws:
            flat, limit = False, _ws_limit(ws)
            async for chunk in _aiter(chunks):
                array, flat = _chunk_array(chunk)
                await ws.send(_ws_check_size(_ws_frame(array, json), limit))
                flats.append(flat)
                if len(flats) >= window:
                    yield _shape_answer(_ws_answer(await asyncio.wait_for(ws.recv(), client.timeout)), flats.popleft())
            await ws.send(_dumps({"end": True}).decode())
            flats.append(flat)
            while flats:
                yield _shape_answer(_ws_answer(await asyncio.wait_for(ws.recv(), client.timeout)), flats.popleft())
    except (ConnectionClosed, InvalidStatus) as exc:
        raise _ws_error(exc) from exc


def _check_transport(transport: str, window: int) -> None:
    if transport not in ("websocket", "http"):
        raise ValueError(f"transport must be 'websocket' or 'http', got {transport!r}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")


def _stream_smooth(self: Client, signal: Any, model: str | None, version: int | None, mode: str | None,
                   transport: str, json: bool, chunk_samples: int, window: int) -> Iterator[np.ndarray]:
    """Stream `signal` (an array [C, L] or [L], cut into `chunk_samples`, or an iterable of [C, n]
    or [n] chunks) and yield the smoothed chunks as they come: one per chunk sent (possibly with
    no samples while `same`/`valid` wait for more), then the flushed tail. Their concatenation
    equals `smooth()` of the whole signal with the same version and mode.

    `transport`: "websocket" (one connection, up to `window` chunks in flight) or "http" (one
    request per chunk carrying the stream's state; any replica sharing the secret answers).
    `json`: JSON frames/bodies instead of .npy. Errors raise the `MonoserveError` of the status
    (a WebSocket close 4000 + status), e.g. VersionGoneError (409) when the pinned version is gone."""
    _check_transport(transport, window)
    chunks = _chunks(signal, chunk_samples)
    if transport == "http":
        return _stream_http_sync(self, chunks, model, version, mode, json)
    return _stream_ws_sync(self, chunks, model, version, mode, json, window)


def _astream_smooth(self: AsyncClient, signal: Any, model: str | None, version: int | None, mode: str | None,
                    transport: str, json: bool, chunk_samples: int, window: int) -> AsyncIterator[np.ndarray]:
    """`Client.stream_smooth`, as an async iterator (`signal` may also be an async iterable)."""
    _check_transport(transport, window)
    chunks = signal if hasattr(signal, "__aiter__") else _chunks(signal, chunk_samples)
    if transport == "http":
        return _stream_http_async(self, chunks, model, version, mode, json)
    return _stream_ws_async(self, chunks, model, version, mode, json, window)

