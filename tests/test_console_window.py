"""The console's last minute (service.edge.ui.window): what the service's own Prometheus counters
and stage histograms grew by since the snapshot a minute old, per route."""

from __future__ import annotations

from service.base.metrics import Metrics
from service.edge.ui.window import MetricsWindow, snapshot


def test_the_last_minute_is_the_growth_since_the_snapshot_a_minute_old():
    metrics = Metrics()
    window = MetricsWindow(metrics, period_s=5.0, span_s=60.0)
    metrics.count_request("/classify", "spam", 200)  # before the window's base: not counted
    base = snapshot(metrics)
    base.at -= 70.0  # taken 70 s ago: the newest snapshot at least a minute old
    window.snapshots.append(base)
    for _ in range(3):
        metrics.count_request("/classify", "spam", 200)
        metrics.observe_stage("/classify", "inference", 0.0008)  # in the (0.5 ms, 1 ms] bucket
        metrics.observe_stage("/classify", "decode", 0.0002)
    recent = snapshot(metrics)
    recent.at -= 30.0  # 30 s ago: too young to be the base
    window.snapshots.append(recent)
    metrics.count_request("/classify", "spam", 400)
    metrics.count_request("/explain", "spam", 200)
    metrics.observe_stage("/classify", "inference", 0.02)  # in the (10 ms, 25 ms] bucket

    minute = window.last_minute()
    assert 69.0 <= minute.seconds <= 80.0
    routes = {route.route: route for route in minute.routes}
    assert set(routes) == {"/classify", "/explain"}
    classify = routes["/classify"]
    assert (classify.requests, classify.errors, classify.by_model) == (4, 1, {"spam": 4})
    count, mean, p50, p95 = classify.stages["inference"]
    assert count == 4 and abs(mean - (3 * 0.0008 + 0.02) / 4) < 1e-12
    assert p50 == 1e-3 and p95 == 2.5e-2  # bucket upper bounds
    assert classify.stages["decode"][0] == 3
    assert routes["/explain"].requests == 1 and routes["/explain"].stages == {}


def test_a_young_service_compares_with_its_first_snapshot():
    metrics = Metrics()
    window = MetricsWindow(metrics)
    window.sample()
    metrics.count_request("/smooth", "smoother", 200)
    minute = window.last_minute()
    assert minute.seconds < 60.0
    assert [(r.route, r.requests) for r in minute.routes] == [("/smooth", 1)]
