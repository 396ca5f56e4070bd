"""Prometheus metrics, in a registry of their own per app (several apps can live in one process).

With several uvicorn workers, each worker is a process with its own counters: a scrape reaches one
of them. The serving process (service.server) with N > 1 workers therefore runs prometheus_client's
multiprocess mode: it creates a fresh directory, passes it to the workers as PROMETHEUS_MULTIPROC_DIR
(`multiprocess_mode`), every worker writes its values there (mmap files), and /metrics sums
them across workers (`MultiProcessCollector`). The mode is chosen when prometheus_client is first
imported, from that variable: it must be in the environment before a worker starts.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: 50 us .. 10 s, dense where small requests live.
LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("decode", "inference", "encode")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNKNOWN_MODEL = ""  # the model label when no model was resolved (keeps label values bounded)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger(__name__)


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process runs in multiprocess mode (else None).

    The mode is fixed when prometheus_client is imported (its value class); a variable set later
    (e.g. by `monoserve serve` run in-process, as tests do) must not switch /metrics to reading a
    directory this process never writes to.
    """
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def multiprocess_environment(workers: int) -> tuple[dict[str, str], Path | None]:
    """The environment the worker processes need for /metrics to count across workers, and the
    directory created for it (the caller removes it when the server stops; None when none was made).

    One worker needs nothing. A PROMETHEUS_MULTIPROC_DIR already set (e.g. a volume in a pod) is
    used as it is; otherwise a fresh temporary directory, so that a restart never adds the counts
    of a previous run.
    """
    if workers <= 1:
        return {}, None
    existing = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    if existing:
        Path(existing).mkdir(parents=True, exist_ok=True)
        return {MULTIPROC_ENV: existing}, None
    created = Path(tempfile.mkdtemp(prefix="monoserve-metrics-"))
    return {MULTIPROC_ENV: str(created)}, created


def remove_multiprocess_dir(created: Path | None) -> None:
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)


@contextlib.contextmanager
def multiprocess_mode(workers: int) -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR in this process's environment while the server runs (uvicorn's
    worker processes inherit it), then the variable restored and a directory made for the run removed."""
    environment, created = multiprocess_environment(workers)
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        remove_multiprocess_dir(created)


def mark_worker_dead() -> None:
    """A worker that stops: its live gauges (models loaded, serving version) leave the sums."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


FOLD_EVERY = 128  # stage observations kept before they are folded into the histogram


class LoopHistogram:
    """A labelled histogram observed from the event loop thread only, exposed as a Prometheus histogram.

    Three stages are timed on every request: prometheus_client's `Histogram.observe` takes two
    locks and walks the buckets (about 2.3 us, 7 us a request, as much as decoding a small body);
    here an observation is a bisect and two additions. Single event loop thread: no lock (the
    pipeline observes after its worker-thread calls return). With several worker processes the
    values must be in prometheus_client's shared files instead: `Metrics` uses a `Histogram` then.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]):
        if list(buckets) != sorted(buckets):
            raise ValueError(f"buckets must be increasing, got {buckets}")
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.bounds = tuple(float(b) for b in buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}  # labels -> [count per bucket..., +Inf count, sum]

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self.bounds) + 2)
        series[bisect.bisect_left(self.bounds, value)] += 1  # le: a value equal to a bound counts in it
        series[-1] += value

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, series in list(self._series.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self.bounds, float("inf")), series[:-1]):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(labels), buckets, series[-1])
        return [family]


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they double the output and nobody graphs them
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "monoserve_requests", "Requests answered, by route, model and HTTP status",
            ("route", "model", "status"), registry=self.registry)
        stage_help = "Time per request stage: decode (body to array), inference, encode"
        if multiprocess_dir():  # values shared across worker processes: prometheus_client's own
            self._stage_histogram = Histogram("monoserve_stage_seconds", stage_help, ("route", "stage"),
                                              buckets=LATENCY_BUCKETS, registry=self.registry)
            self._stage_fast = None
        else:
            self._stage_fast = LoopHistogram("monoserve_stage_seconds", stage_help, ("route", "stage"), LATENCY_BUCKETS)
            self.registry.register(self._stage_fast)
        # Gauges across workers: the least any live worker has (all workers equal once they converged).
        self.models_loaded = Gauge(
            "monoserve_models_loaded", "Model versions that passed their proof and serve, by model",
            ("model",), registry=self.registry, multiprocess_mode="livemin")
        # Per worker (a `pid` label in multiprocess mode): shows whether every worker converged.
        self.serving_version = Gauge(
            "monoserve_serving_version", "The version that serves requests naming no version, by model (0: none)",
            ("model",), registry=self.registry, multiprocess_mode="liveall")
        self.load_refusals = Counter(
            "monoserve_load_refusals", "Model version proofs refused (at start or on reload), by model and failed "
            "step; with several workers each worker proves, and counts, for itself",
            ("model", "step"), registry=self.registry)
        self.version_events = Counter(
            "monoserve_model_version_events", "Repository changes applied without a restart, by model and event "
            "(proved: a new or changed version passed its proof; refused: it failed; removed: it vanished or "
            "was unloaded)", ("model", "event"), registry=self.registry)
        self.repository_polls = Counter(
            "monoserve_repository_polls", "Refreshes of the model repository (polls and control API loads)",
            registry=self.registry)
        self.batch_rows = Histogram(
            "monoserve_batch_rows", "Rows per engine call of the dynamic batcher (/classify), by model",
            ("model",), buckets=BATCH_BUCKETS, registry=self.registry)
        # Streaming smoothing (service.protocols.stream_ws, service.protocols.stream_http), by transport ("websocket", "http").
        self.streams_open = Gauge(
            "monoserve_streams_open", "Streams open now, by transport (websocket: connections streaming; grpc: "
            "sequences open in ModelStreamInfer calls)",
            ("transport",), registry=self.registry, multiprocess_mode="livesum")
        self.stream_frames = Counter(
            "monoserve_stream_frames", "Stream chunks answered, by transport and model", ("transport", "model"),
            registry=self.registry)
        self.stream_samples = Counter(
            "monoserve_stream_samples", "Samples per channel received by streams, by transport and model",
            ("transport", "model"), registry=self.registry)
        self.streams_closed = Counter(
            "monoserve_streams_closed", "Streams ended, by transport and outcome (ended, a close code, error status)",
            ("transport", "outcome"), registry=self.registry)
        self._stage_children: dict[tuple[str, str], Histogram] = {}
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        # counted and observed on the event loop, folded into the series in batches (one process only)
        self._pending_stages: list[tuple[str, float, float, float]] = []
        self._pending_counts: dict[tuple[str, str, int], int] | None = None if multiprocess_dir() else {}

    def observe_stage(self, route: str, stage: str, seconds: float) -> None:
        """On the event loop thread (LoopHistogram has no lock)."""
        if self._stage_fast is not None:
            self._stage_fast.observe((route, stage), seconds)
            return
        child = self._stage_children.get((route, stage))
        if child is None:
            child = self._stage_children[(route, stage)] = self._stage_histogram.labels(route, stage)
        child.observe(seconds)

    def observe_stages(self, route: str, decode_s: float, inference_s: float, encode_s: float) -> None:
        """One request's three stage times (-1: the stage did not complete), on the event loop thread.

        In one process they are kept as one tuple and folded into the histogram by the hundred (and
        before every scrape): one append per request instead of three observations (issue 30: the
        per-request work of a 1-sample request). With several workers they go to the shared files at once."""
        if self._stage_fast is None:
            self._observe_now(route, decode_s, inference_s, encode_s)
            return
        pending = self._pending_stages
        pending.append((route, decode_s, inference_s, encode_s))
        if len(pending) >= FOLD_EVERY:
            self._fold_stages()

    def _observe_now(self, route: str, decode_s: float, inference_s: float, encode_s: float) -> None:
        if decode_s >= 0:
            self.observe_stage(route, "decode", decode_s)
        if inference_s >= 0:
            self.observe_stage(route, "inference", inference_s)
        if encode_s >= 0:
            self.observe_stage(route, "encode", encode_s)

    def _fold_stages(self) -> None:
        pending, self._pending_stages = self._pending_stages, []
        if self._stage_fast is None:
            for route, decode_s, inference_s, encode_s in pending:
                self._observe_now(route, decode_s, inference_s, encode_s)
            return
        observe = self._stage_fast.observe  # the loop of _observe_now, without its two calls per value
        for route, decode_s, inference_s, encode_s in pending:
            if decode_s >= 0:
                observe((route, "decode"), decode_s)
            if inference_s >= 0:
                observe((route, "inference"), inference_s)
            if encode_s >= 0:
                observe((route, "encode"), encode_s)

    def count_request(self, route: str, model: str, status: int) -> None:
        """One request answered. In one process a plain dict counts it, folded into the Prometheus
        counter before every scrape (its `inc` takes a lock); with several workers, at once."""
        key = (route, model, status)
        if self._pending_counts is None:
            self._inc_request(key, 1)
            return
        counts = self._pending_counts
        counts[key] = counts.get(key, 0) + 1

    def _inc_request(self, key: tuple[str, str, int], amount: int) -> None:
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(key[0], key[1], str(key[2]))
        child.inc(amount)

    def fold(self) -> None:
        """Everything counted or observed so far into the Prometheus series (before reading them)."""
        self._fold_stages()
        if self._pending_counts:
            counts, self._pending_counts = self._pending_counts, {}
            for key, amount in counts.items():
                self._inc_request(key, amount)

    def render(self) -> bytes:
        self.fold()
        if multiprocess_dir():
            from prometheus_client import multiprocess

            merged = CollectorRegistry()  # a fresh one per scrape: the files change all the time
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
