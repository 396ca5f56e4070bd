"""The per-request bookkeeping that replaced costlier library calls on the hot path: coarse
deadlines (service.base.deadlines, for the body and header timeouts), the stage histogram kept on the
event loop (service.base.metrics.LoopHistogram) and the body deadline as the pipeline uses it."""

from __future__ import annotations

import asyncio
import gc
import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from service.base import deadlines
from service.compute import request
from service.pipeline import endpoint as pipeline
from service.base.errors import RequestTimeoutError
from service.base.metrics import LATENCY_BUCKETS, LoopHistogram, Metrics


# -- deadlines ----------------------------------------------------------------------------------
def test_a_deadline_fires_early_by_at_most_a_tick_and_never_late():
    async def main():
        loop = asyncio.get_running_loop()
        sweeper = deadlines.DeadlineSweeper(loop, tick_s=0.05)
        fired: dict[str, float] = {}
        start = loop.time()
        for delay in (0.2, 0.35, 0.5):
            sweeper.add(delay, lambda delay=delay: fired.setdefault(str(delay), loop.time() - start))
        await asyncio.sleep(0.8)
        return fired, len(sweeper), sweeper._timer

    fired, pending, timer = asyncio.run(main())
    assert sorted(fired) == ["0.2", "0.35", "0.5"]
    for delay, when in fired.items():
        assert float(delay) - 0.05 - 1e-3 <= when <= float(delay) + 0.02, (delay, when)  # 0.02: scheduling slack
    assert pending == 0 and timer is None  # no timer left running once nothing is pending


def test_a_cancelled_deadline_never_fires_and_a_failing_callback_spares_the_others():
    async def main():
        sweeper = deadlines.DeadlineSweeper(asyncio.get_running_loop(), tick_s=0.02)
        calls: list[str] = []
        cancelled = sweeper.add(0.05, lambda: calls.append("cancelled"))

        def broken():
            raise RuntimeError("boom")

        sweeper.add(0.05, broken)
        sweeper.add(0.05, lambda: calls.append("kept"))
        cancelled.cancel()
        await asyncio.sleep(0.2)
        return calls, cancelled.fired

    calls, fired = asyncio.run(main())
    assert calls == ["kept"] and not fired


def test_the_sweeper_is_one_per_event_loop():
    async def get():
        return deadlines.sweeper()

    loop_a, loop_b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        first, again = loop_a.run_until_complete(get()), loop_a.run_until_complete(get())
        other = loop_b.run_until_complete(get())
    finally:
        loop_a.close()
        loop_b.close()
    assert first is again and first is not other


# -- the body deadline in the pipeline ------------------------------------------------------------
def _limits() -> pipeline.Limits:
    return request.Limits(request.MemoryBudget(2**20), 2**20, 1000, 1000)


def test_a_body_that_stops_arriving_is_a_408_and_the_task_can_go_on():
    async def main():
        async def stalled():
            await asyncio.sleep(3600)

        limits = _limits()
        with pytest.raises(RequestTimeoutError) as caught:
            await pipeline.read_body(stalled, "10", 1000, 0.15, limits)
        limits.close()
        await asyncio.sleep(0.01)  # no cancellation left pending on this task
        return caught.value, asyncio.current_task().cancelling()

    error, cancelling = asyncio.run(main())
    assert error.status == 408 and "0.15 s" in error.message
    assert cancelling == 0


def test_a_body_that_arrives_in_time_is_returned_and_leaves_no_deadline():
    async def main():
        chunks = [{"type": "http.request", "body": b"12345", "more_body": True},
                  {"type": "http.request", "body": b"67890", "more_body": False}]

        async def receive():
            await asyncio.sleep(0.01)
            return chunks.pop(0)

        body = await pipeline.read_body(receive, "10", 1000, 5.0, _limits())
        return bytes(body), len(deadlines.sweeper())

    body, pending = asyncio.run(main())
    assert body == b"1234567890" and pending == 0


def _paced(chunk: bytes, count: int, interval_s: float):
    left = [count]

    async def receive():
        await asyncio.sleep(interval_s)
        left[0] -= 1
        return {"type": "http.request", "body": chunk, "more_body": left[0] > 0}

    return receive


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_above_the_minimum_rate_may_take_longer_than_the_timeout(declared):
    # 100 bytes every 20 ms (5 kB/s) for 0.6 s, against a 0.2 s timeout and a 1 kB/s minimum rate
    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        body = await pipeline.read_body(_paced(b"x" * 100, 30, 0.02), "3000" if declared else None, 10_000, 0.2,
                                        _limits(), min_rate=1000)
        return len(body), loop.time() - start

    size, elapsed = asyncio.run(main())
    assert size == 3000 and elapsed > 0.4


@pytest.mark.parametrize("min_rate", [0, 1000])
def test_a_body_below_the_minimum_rate_is_cut_off(min_rate):
    # 10 bytes every 20 ms (500 B/s) against a 0.5 s timeout. Below a 1 kB/s minimum rate its deadline,
    # 0.5 + t/2, is crossed at 1 s (fired up to a tick early, when it is within a tick: from 0.8 s);
    # with no minimum rate, at the timeout (fired from 0.4 s)
    timeout_s, tick_s = 0.5, deadlines.TICK_S

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(RequestTimeoutError):
            await pipeline.read_body(_paced(b"y" * 10, 1000, 0.02), "10000", 100_000, timeout_s, _limits(),
                                     min_rate=min_rate)
        return loop.time() - start

    elapsed = asyncio.run(main())
    slowdown = 1 / (1 - 500 / min_rate) if min_rate else 1.0
    earliest, latest = (timeout_s - tick_s) * slowdown, timeout_s * slowdown
    assert earliest - 0.02 <= elapsed <= latest + 0.15, (elapsed, earliest, latest)  # slack for the machine


def test_the_in_flight_budget_is_shared_out_between_workers(tmp_path):
    from service.settings import Settings

    one = Settings(repo=tmp_path, memory_limit_bytes=2**31)
    four = Settings(repo=tmp_path, memory_limit_bytes=2**31, workers=4, cpu_threads=4)
    assert one.inflight_budget_per_worker == 2**30
    assert four.inflight_budget_per_worker == 2**28
    assert Settings(repo=tmp_path, inflight_budget_bytes=1000, workers=3).inflight_budget_per_worker == 333


def test_cancelling_a_request_from_outside_is_not_mistaken_for_a_timeout():
    async def main():
        async def stalled():
            await asyncio.sleep(3600)

        task = asyncio.ensure_future(pipeline.read_body(stalled, "10", 1000, 30.0, _limits()))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(deadlines.sweeper())

    assert asyncio.run(main()) == 0


# -- the stage histogram --------------------------------------------------------------------------
def _series(text: bytes) -> dict[str, float]:
    lines = [line for line in text.decode().splitlines() if line and not line.startswith("#")]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def test_the_loop_histogram_exposes_what_prometheus_clients_histogram_would():
    rng = random.Random(7)
    values = [rng.choice(LATENCY_BUCKETS) for _ in range(50)] + [rng.uniform(0, 12) for _ in range(200)]
    values += [rng.expovariate(2000) for _ in range(200)]  # bounds themselves, beyond the last, small ones

    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = LoopHistogram("stage_seconds", "help", ("route", "stage"), LATENCY_BUCKETS)
    ours_registry.register(ours)
    theirs = Histogram("stage_seconds", "help", ("route", "stage"), buckets=LATENCY_BUCKETS, registry=theirs_registry)
    for index, value in enumerate(values):
        labels = ("/smooth", "decode") if index % 3 else ("/classify", "encode")
        ours.observe(labels, value)
        theirs.labels(*labels).observe(value)

    ours_series = _series(generate_latest(ours_registry))
    theirs_series = {k: v for k, v in _series(generate_latest(theirs_registry)).items() if "_created" not in k}
    assert ours_series.keys() == theirs_series.keys()
    for key, value in theirs_series.items():
        assert ours_series[key] == pytest.approx(value, rel=1e-12), key


def test_loop_histogram_refuses_unsorted_buckets():
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("x", "help", ("a",), (1.0, 0.5))


def test_metrics_render_the_stage_histogram_in_one_process():
    metrics = Metrics()
    metrics.observe_stage("/classify", "decode", 3e-5)
    metrics.observe_stage("/classify", "decode", 0.2)
    series = _series(metrics.render())
    assert series['monoserve_stage_seconds_bucket{le="5e-05",route="/classify",stage="decode"}'] == 1
    assert series['monoserve_stage_seconds_bucket{le="+Inf",route="/classify",stage="decode"}'] == 2
    assert series['monoserve_stage_seconds_sum{route="/classify",stage="decode"}'] == pytest.approx(0.20003)


# -- the collector after startup -----------------------------------------------------------------
def test_startup_objects_are_frozen_while_serving_and_released_at_shutdown(tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(repo=tmp_path))
    with TestClient(app) as client:
        client.get("/healthz")
        frozen_while_serving = gc.get_freeze_count()
    assert frozen_while_serving > 1000
    assert gc.get_freeze_count() == 0
