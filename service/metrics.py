"""Prometheus metrics, in a registry of their own per app (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: 50 us .. 10 s, dense where small requests live.
LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("decode", "inference", "encode")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNKNOWN_MODEL = ""  # the model label when no model was resolved (keeps label values bounded)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they double the output and nobody graphs them
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "monoserve_requests", "Requests answered, by route, model and HTTP status",
            ("route", "model", "status"), registry=self.registry)
        self.stage_seconds = Histogram(
            "monoserve_stage_seconds", "Time per request stage: decode (body to array), inference, encode",
            ("route", "stage"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.models_loaded = Gauge(
            "monoserve_models_loaded", "Model versions that passed their proof and serve, by model",
            ("model",), registry=self.registry)
        self.load_refusals = Counter(
            "monoserve_load_refusals", "Model versions refused at load, by model and failed step",
            ("model", "step"), registry=self.registry)
        self.batch_rows = Histogram(
            "monoserve_batch_rows", "Rows per engine call of the dynamic batcher (/classify), by model",
            ("model",), buckets=BATCH_BUCKETS, registry=self.registry)
        self._stage_children: dict[tuple[str, str], Histogram] = {}
        self._request_children: dict[tuple[str, str, int], Counter] = {}

    def observe_stage(self, route: str, stage: str, seconds: float) -> None:
        child = self._stage_children.get((route, stage))
        if child is None:
            child = self._stage_children[(route, stage)] = self.stage_seconds.labels(route, stage)
        child.observe(seconds)

    def count_request(self, route: str, model: str, status: int) -> None:
        key = (route, model, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, model, str(status))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
