"""The last minute of the service's own Prometheus metrics, for the console.

The counters only grow; the console shows how much they grew in the last minute. A task on the
event loop takes a snapshot of the request counter and the stage histograms every `period_s`
seconds (reading the collectors, as a scrape would: nothing is added to the request path) and
keeps a little over a minute of them; the console compares a fresh snapshot with the one taken a
minute before (or the oldest, when the service is younger than that, and says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from service.base.metrics import LATENCY_BUCKETS, Metrics, multiprocess_dir

log = logging.getLogger(__name__)

REQUESTS = "monoserve_requests"
STAGES = "monoserve_stage_seconds"


@dataclass
class Snapshot:
    at: float  # time.monotonic()
    requests: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (route, model, status) -> count
    # (route, stage) -> cumulative bucket counts in LATENCY_BUCKETS order then +Inf, and the sum
    buckets: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)


def _families(metrics: Metrics) -> Any:
    if multiprocess_dir():  # several workers: their shared files, summed, as /metrics reads them
        from prometheus_client import CollectorRegistry, multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged.collect()
    return metrics.registry.collect()


def snapshot(metrics: Metrics) -> Snapshot:
    # counts and stage times are batched on the event loop (service.base.metrics): fold them in first,
    # as a scrape does (called on the loop: the window's task and the /ui route)
    metrics.fold()
    taken = Snapshot(time.monotonic())
    bounds = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
    for family in _families(metrics):
        if family.name == REQUESTS:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    key = (labels.get("route", ""), labels.get("model", ""), labels.get("status", ""))
                    taken.requests[key] = taken.requests.get(key, 0.0) + sample.value
        elif family.name == STAGES:
            for sample in family.samples:
                labels = sample.labels
                key = (labels.get("route", ""), labels.get("stage", ""))
                if sample.name.endswith("_bucket"):
                    le = labels.get("le", "")
                    position = bounds.index(le) if le in bounds else _bound_index(le, bounds)
                    if position is not None:
                        series = taken.buckets.setdefault(key, [0.0] * len(bounds))
                        series[position] += sample.value
                elif sample.name.endswith("_sum"):
                    taken.sums[key] = taken.sums.get(key, 0.0) + sample.value
    return taken


def _bound_index(le: str, bounds: list[str]) -> int | None:
    try:
        value = float(le)
    except ValueError:
        return None
    for index, bound in enumerate(bounds[:-1]):
        if abs(float(bound) - value) <= 1e-12 * max(1.0, value):
            return index
    return len(bounds) - 1 if value == float("inf") else None


@dataclass
class RouteMinute:
    route: str
    requests: int
    errors: int  # status >= 400
    by_model: dict[str, int]
    # per stage: (observations, mean seconds, p50 and p95 upper bounds in seconds from the buckets)
    stages: dict[str, tuple[int, float, float, float]]


@dataclass
class Minute:
    seconds: float  # how long the window really is (shorter while the service is younger than a minute)
    routes: list[RouteMinute]


def _quantile(counts: list[float], q: float) -> float:
    """The upper bound of the bucket holding quantile q of the observations (counts cumulative)."""
    total = counts[-1]
    if total <= 0:
        return 0.0
    for bound, cumulative in zip((*LATENCY_BUCKETS, float("inf")), counts):
        if cumulative >= q * total:
            return bound
    return float("inf")


def difference(new: Snapshot, old: Snapshot) -> Minute:
    routes: dict[str, RouteMinute] = {}
    for (route, model, status), count in new.requests.items():
        grown = int(round(count - old.requests.get((route, model, status), 0.0)))
        if grown <= 0:
            continue
        entry = routes.setdefault(route, RouteMinute(route, 0, 0, {}, {}))
        entry.requests += grown
        entry.errors += grown if status.isdigit() and int(status) >= 400 else 0
        entry.by_model[model or "(none)"] = entry.by_model.get(model or "(none)", 0) + grown
    for (route, stage), counts in new.buckets.items():
        before = old.buckets.get((route, stage), [0.0] * len(counts))
        grown = [a - b for a, b in zip(counts, before)]
        observations = int(round(grown[-1]))
        if observations <= 0:
            continue
        total = new.sums.get((route, stage), 0.0) - old.sums.get((route, stage), 0.0)
        entry = routes.setdefault(route, RouteMinute(route, 0, 0, {}, {}))
        entry.stages[stage] = (observations, total / observations, _quantile(grown, 0.5), _quantile(grown, 0.95))
    return Minute(new.at - old.at, sorted(routes.values(), key=lambda r: r.route))


class MetricsWindow:
    def __init__(self, metrics: Metrics, period_s: float = 5.0, span_s: float = 60.0):
        self.metrics, self.period_s, self.span_s = metrics, period_s, span_s
        self.snapshots: deque[Snapshot] = deque(maxlen=int(span_s / period_s) + 2)
        self.task: asyncio.Task | None = None

    def sample(self) -> None:
        self.snapshots.append(snapshot(self.metrics))

    def last_minute(self) -> Minute:
        now = snapshot(self.metrics)
        base = next((s for s in reversed(self.snapshots) if now.at - s.at >= self.span_s), None)
        if base is None:
            base = self.snapshots[0] if self.snapshots else Snapshot(now.at)
        return difference(now, base)

    def start(self) -> None:
        self.sample()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="monoserve-ui-metrics-window")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the console's numbers are not worth the server
                log.exception("metrics window: snapshot failed")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
