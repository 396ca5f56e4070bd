"""Dynamic batching: concurrent small requests to one model run as one engine call.

A request's rows join a bounded queue; the queue is flushed `max_queue_delay_us` after its first
request arrived (0: on the event loop's next iteration, which already collects every request
that arrived in the same burst), or at once when `max_batch_size` rows are waiting. One flush
concatenates up to `max_batch_size` rows, runs the engine once, and hands each request its rows of
the output. A full queue answers at once with QueueFullError (the service sends 503 with
Retry-After) instead of letting latency grow without bound.

The engine call runs inline when the batch is small (a worker-thread hop costs more than the
work), otherwise through `offload` (a worker thread), one batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

log = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray], np.ndarray]
OffloadFn = Callable[[RunFn, np.ndarray], Awaitable[np.ndarray]]


class QueueFullError(RuntimeError):
    """The batch queue holds `max_queue_size` rows already: come back after `retry_after_s`."""

    def __init__(self, queued_rows: int, limit: int, retry_after_s: float):
        super().__init__(f"the batch queue is full ({queued_rows} rows waiting, limit {limit}); retry shortly")
        self.queued_rows = queued_rows
        self.limit = limit
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Retry-After takes whole seconds (RFC 9110); never 0."""
        return str(max(1, math.ceil(self.retry_after_s)))


class DynamicBatcher:
    """Batches `[n, F]` float32 requests to one `run([N, F]) -> [N, ...]` function (one model version)."""

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int = 64,
        max_queue_delay_us: int = 0,
        max_queue_size: int = 1024,
        inline_max_rows: int = 1024,
        offload: OffloadFn | None = None,
        on_batch: Callable[[int], None] | None = None,
    ):
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_us < 0:
            raise ValueError(
                f"need max_batch_size >= 1, max_queue_size >= 1, max_queue_delay_us >= 0; got {max_batch_size}, "
                f"{max_queue_size}, {max_queue_delay_us}"
            )
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self.inline_max_rows = inline_max_rows
        self.offload = offload
        self.on_batch = on_batch  # called with the rows of each engine call (metrics)
        self._pending: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._pending_rows = 0
        self._flush_handle: asyncio.Handle | None = None
        self._busy = False  # an offloaded batch is running; the next flush waits for it
        self.batches = 0  # engine calls made (for tests and metrics)
        self.rows = 0

    @property
    def queued_rows(self) -> int:
        return self._pending_rows

    async def submit(self, features: np.ndarray) -> np.ndarray:
        """The engine's output rows for `features` [n, F]; raises QueueFullError when the queue is full."""
        rows = int(features.shape[0])
        if rows > self.max_batch_size:  # bigger than any batch: it is a batch of its own
            return await self._run_alone(features)
        if self._pending_rows + rows > self.max_queue_size:
            raise QueueFullError(self._pending_rows, self.max_queue_size, self._retry_after_s())
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((features, future))
        self._pending_rows += rows
        if not self._busy:
            if self._pending_rows >= self.max_batch_size:
                self._cancel_scheduled_flush()
                self._flush_handle = loop.call_soon(self._flush)
            elif self._flush_handle is None:
                if self.max_queue_delay_s > 0:
                    self._flush_handle = loop.call_later(self.max_queue_delay_s, self._flush)
                else:
                    self._flush_handle = loop.call_soon(self._flush)
        return await future

    def _retry_after_s(self) -> float:
        # The queue drains a batch per flush; a client may retry about when that has happened.
        return self.max_queue_delay_s + 0.05

    def _cancel_scheduled_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def _take_batch(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        taken, rows = [], 0
        while self._pending:
            features, future = self._pending[0]
            if taken and rows + features.shape[0] > self.max_batch_size:
                break
            self._pending.popleft()
            self._pending_rows -= features.shape[0]
            if future.cancelled():  # the client went away while it waited
                continue
            taken.append((features, future))
            rows += features.shape[0]
        return taken

    def _flush(self) -> None:
        self._flush_handle = None
        if self._busy:
            return
        taken = self._take_batch()
        if taken:
            batch = taken[0][0] if len(taken) == 1 else np.concatenate([f for f, _ in taken], axis=0)
            if self.offload is None or batch.shape[0] <= self.inline_max_rows:
                self._deliver(taken, self._call(batch))
            else:
                self._busy = True
                asyncio.get_running_loop().create_task(self._offloaded(taken, batch))
                return
        if self._pending:  # more than one batch arrived: the rest goes on the next iteration
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    async def _offloaded(self, taken: list[tuple[np.ndarray, asyncio.Future]], batch: np.ndarray) -> None:
        try:
            assert self.offload is not None
            try:
                output: np.ndarray | BaseException = await self.offload(self.run, batch)
            except Exception as exc:  # delivered to every request of the batch
                output = exc
            self._count(batch.shape[0])
            self._deliver(taken, output)
        finally:
            self._busy = False
            if self._pending and self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _count(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        if self.on_batch is not None:
            self.on_batch(rows)

    def _call(self, batch: np.ndarray) -> np.ndarray | BaseException:
        try:
            output = self.run(batch)
        except Exception as exc:  # delivered to every request of the batch
            return exc
        finally:
            self._count(batch.shape[0])
        return output

    @staticmethod
    def _deliver(taken: list[tuple[np.ndarray, asyncio.Future]], output: np.ndarray | BaseException) -> None:
        start = 0
        for features, future in taken:
            stop = start + features.shape[0]
            if not future.done():
                if isinstance(output, BaseException):
                    future.set_exception(output)
                else:
                    future.set_result(output[start:stop])
            start = stop

    async def _run_alone(self, features: np.ndarray) -> np.ndarray:
        self._count(features.shape[0])
        if self.offload is None or features.shape[0] <= self.inline_max_rows:
            return self.run(features)
        return await self.offload(self.run, features)
