"""service.pipeline.batching.DynamicBatcher: batched answers equal unbatched ones; the queue is bounded."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.pipeline.batching import DynamicBatcher, QueueFullError

WEIGHTS = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)


def model(features: np.ndarray) -> np.ndarray:
    """A stand-in engine: rows are independent, like a classifier's."""
    return 1.0 / (1.0 + np.exp(-(features @ WEIGHTS)))


class CountingModel:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, features: np.ndarray) -> np.ndarray:
        self.calls.append(int(features.shape[0]))
        return model(features)


def requests(sizes: list[int], seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, 6)).astype(np.float32) for n in sizes]


async def to_thread(run, batch):
    return await asyncio.to_thread(run, batch)


@pytest.mark.parametrize("delay_us", [0, 2000])
def test_concurrent_requests_share_one_engine_call_and_get_their_own_rows(delay_us: int) -> None:
    engine = CountingModel()
    batcher = DynamicBatcher(engine, max_batch_size=64, max_queue_delay_us=delay_us)
    inputs = requests([1] * 10 + [3, 2])

    async def main():
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    outputs = asyncio.run(main())
    assert engine.calls == [15]  # one call for all 12 requests
    for x, y in zip(inputs, outputs):
        np.testing.assert_allclose(y, model(x), rtol=1e-6)  # batched == unbatched


def test_batches_never_exceed_max_batch_size_and_keep_order() -> None:
    engine = CountingModel()
    batcher = DynamicBatcher(engine, max_batch_size=4)
    inputs = requests([1, 2, 1, 3, 1, 1, 4, 1])

    async def main():
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    outputs = asyncio.run(main())
    assert max(engine.calls) <= 4 and sum(engine.calls) == 14
    for x, y in zip(inputs, outputs):
        np.testing.assert_allclose(y, model(x), rtol=1e-6)


def test_a_request_bigger_than_a_batch_runs_alone() -> None:
    engine = CountingModel()
    batcher = DynamicBatcher(engine, max_batch_size=4)
    (x,) = requests([9])
    np.testing.assert_allclose(asyncio.run(batcher.submit(x)), model(x), rtol=1e-6)
    assert engine.calls == [9]


def test_full_queue_is_refused_at_once_with_a_retry_after() -> None:
    engine = CountingModel()
    # A long delay keeps the first requests queued while the next one arrives.
    batcher = DynamicBatcher(engine, max_batch_size=64, max_queue_delay_us=300_000, max_queue_size=3)
    inputs = requests([2, 1, 1])

    async def main():
        waiting = [asyncio.ensure_future(batcher.submit(x)) for x in inputs[:2]]
        await asyncio.sleep(0)  # both are queued now: 3 rows
        assert batcher.queued_rows == 3
        with pytest.raises(QueueFullError) as refused:
            await batcher.submit(inputs[2])
        assert refused.value.retry_after_header == "1"
        assert "queue is full (3 rows waiting, limit 3)" in str(refused.value)
        return await asyncio.gather(*waiting)  # the queued ones are still answered

    outputs = asyncio.run(main())
    for x, y in zip(inputs, outputs):
        np.testing.assert_allclose(y, model(x), rtol=1e-6)
    assert engine.calls == [3]


def test_an_engine_error_reaches_every_request_of_the_batch() -> None:
    def broken(features: np.ndarray) -> np.ndarray:
        raise RuntimeError("engine exploded")

    batcher = DynamicBatcher(broken)

    async def main():
        return await asyncio.gather(*(batcher.submit(x) for x in requests([1, 1, 1])), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_a_cancelled_request_does_not_disturb_the_others() -> None:
    engine = CountingModel()
    batcher = DynamicBatcher(engine, max_queue_delay_us=50_000)
    inputs = requests([1, 1, 1])

    async def main():
        tasks = [asyncio.ensure_future(batcher.submit(x)) for x in inputs]
        await asyncio.sleep(0)
        tasks[1].cancel()
        return await asyncio.gather(tasks[0], tasks[2])

    first, third = asyncio.run(main())
    np.testing.assert_allclose(first, model(inputs[0]), rtol=1e-6)
    np.testing.assert_allclose(third, model(inputs[2]), rtol=1e-6)
    assert engine.calls == [2]


def test_large_batches_go_to_the_offload_and_later_arrivals_wait_for_it() -> None:
    engine = CountingModel()
    batcher = DynamicBatcher(engine, max_batch_size=8, inline_max_rows=2, offload=to_thread)
    inputs = requests([2, 2, 2, 2, 1, 1, 1])

    async def main():
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    outputs = asyncio.run(main())
    assert sum(engine.calls) == 11 and max(engine.calls) <= 8
    for x, y in zip(inputs, outputs):
        np.testing.assert_allclose(y, model(x), rtol=1e-6)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="max_batch_size >= 1"):
        DynamicBatcher(model, max_batch_size=0)


def test_on_batch_reports_the_rows_of_every_engine_call() -> None:
    seen: list[int] = []
    batcher = DynamicBatcher(model, max_batch_size=4, on_batch=seen.append)
    inputs = requests([1, 1, 1, 2, 6])

    async def main():
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    asyncio.run(main())
    assert sum(seen) == 11 and max(seen) == 6  # the 6-row request ran alone
    assert len(seen) == batcher.batches
