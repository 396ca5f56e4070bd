"""The console page, rendered from what the service already holds: the registry's models, versions
and proof reports, each serving version's proven tensors and scores, and the metrics window.

Everything a publisher wrote (names, messages) is escaped; the page has no scripts and fetches
nothing (the route sends a Content-Security-Policy that forbids both). What is drawn per version
depends on what its kind offers, not on its name: a proven kernel is drawn as a kernel; a kind
with an ExplainView (service.explain) gets one response curve per feature and output.
"""

from __future__ import annotations

import logging
from html import escape
from typing import Any

import numpy as np

from service.compute.explain import search
from service.compute.explain.view import CountingScorer, ExplainView
from service.compute.per_version import PerVersion
from service.edge.ui import svg
from service.edge.ui.window import Minute
from service.repository.registry import iso_time

log = logging.getLogger(__name__)

CURVE_POINTS = 41

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 20px}header h1{margin:0;font-size:20px}
main{padding:12px 20px}section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:0 0 16px;padding:10px 16px}
h2{font-size:17px;margin:6px 0}h3{font-size:15px;margin:10px 0 4px}
table{border-collapse:collapse;margin:6px 0}td,th{border-bottom:1px solid #e6e8ec;padding:3px 10px 3px 0;text-align:left;vertical-align:top}
.ok,.serving{color:#147a35;font-weight:600}.failed,.refused{color:#b3261e;font-weight:600}.muted{color:#6b7280}
.charts{display:flex;flex-wrap:wrap;gap:8px}.chart{background:#fbfcfd;border:1px solid #e6e8ec}
.chart .axis{stroke:#6b7280;stroke-width:1}.chart .title{font-size:12px;font-weight:600;fill:#1d2330}
.chart .tick{font-size:10px;fill:#6b7280}.chart .tick.end{text-anchor:end}.chart .tick.mid{text-anchor:middle}
.chart .kernel{fill:none;stroke:#2563eb;stroke-width:2}.chart .tap{fill:#2563eb}
.chart .curve{fill:none;stroke:#7c3aed;stroke-width:2}.chart .threshold{stroke:#b3261e;stroke-dasharray:4 3}
article.version{border-top:1px solid #e6e8ec;padding-top:6px}code{font-size:12px}
"""


# -- per version figures, computed once per served version ------------------------------------
_FIGURES: PerVersion[str] = PerVersion()


def figures(served: Any) -> str:
    return _FIGURES.get(served, _draw)


def _draw(served: Any) -> str:
    try:
        html = _kernel_figure(served) + _curve_figures(served)
    except Exception as exc:  # noqa: BLE001 - one version that cannot be drawn must not take the page down
        log.exception("console: cannot draw %s/%s", served.manifest.name, served.manifest.version)
        html = f'<p class="failed">could not draw this version: {escape(type(exc).__name__)}</p>'
    return html


def _kernel_figure(served: Any) -> str:
    kernel = served.tensors.get("kernel")
    if kernel is None:
        return ""
    taps = np.asarray(kernel, dtype=np.float64).reshape(-1)
    chart = svg.chart(np.arange(taps.size), taps, title=f"kernel, {taps.size} taps",
                      css_class="kernel", x_label="tap (oldest to newest)", y_range=(0.0, float(taps.max()) * 1.05),
                      markers=True, attributes={"data-figure": "kernel"})
    return (f'<div class="charts">{chart}</div><p class="muted">the proven kernel (positive, non-decreasing, as the '
            f'graph\'s Conv consumes it); taps: {escape(", ".join(f"{t:.4g}" for t in taps))}</p>')


def _view(served: Any) -> ExplainView | None:
    from service.compute.kinds import service_kind

    return service_kind(served.kind).explain_view(served)


def _curve_figures(served: Any) -> str:
    view = _view(served)
    if view is None:
        return ""
    ranges = [view.ranges.get(name) for name in view.features]
    if not any(span is not None for span in ranges):
        return '<p class="muted">no feature ranges declared: no response curves (docs/explain.md)</p>'
    reference = _reference(served, view, ranges)
    charts = []
    for output, label in enumerate(view.outputs):
        scorer = CountingScorer(view.score, output, rows_by_instance=np.zeros(1, dtype=np.int64))
        curves = search.curves(scorer, reference, ranges, CURVE_POINTS)[0]
        threshold = view.thresholds[output] if view.thresholds is not None else None
        for f, (values, scores) in curves.items():
            direction = view.directions[f]
            charts.append(svg.chart(
                values, scores, title=f"{label} vs {view.features[f]} ({direction})", css_class="curve",
                x_label=view.features[f], y_range=_score_range(scores, threshold),
                hline=threshold, hline_label=f"threshold {threshold:g}" if threshold is not None else "",
                attributes={"data-figure": "curve", "data-feature": view.features[f], "data-label": label,
                            "data-direction": direction}))
    held = ", ".join(f"{name} = {value:.4g}" for name, value in zip(view.features, reference[0]))
    return (f'<div class="charts">{"".join(charts)}</div><p class="muted">each curve: one feature across its declared '
            f"range, the others held where the score is lowest (the range's low end of an increasing feature, the "
            f"high end of a decreasing one, the middle of a free one): {escape(held)}; {CURVE_POINTS} points</p>")


def _reference(served: Any, view: ExplainView, ranges: list) -> np.ndarray:
    """The point the curves start from: the lowest-scoring corner of the declared ranges (a free
    feature at the middle of its range; one without a range at the probe's first value), so that
    each curve shows its feature's whole effect (the middle of a skewed range can saturate a score)."""
    probe = np.asarray(served.manifest.probe.input, dtype=np.float64).reshape(-1, len(view.features))[0]
    values = []
    for f, span in enumerate(ranges):
        direction = view.directions[f]
        if span is None:
            values.append(probe[f])
        else:
            values.append(span[0] if direction == "increasing" else span[1] if direction == "decreasing"
                          else (span[0] + span[1]) / 2.0)
    return np.asarray(values).astype(np.float32).astype(np.float64)[None, :]


def _score_range(scores: np.ndarray, threshold: float | None) -> tuple[float, float]:
    """The scores' span, with the threshold in view and a little room."""
    low, high = float(scores.min()), float(scores.max())
    if threshold is not None:
        low, high = min(low, threshold), max(high, threshold)
    pad = max(high - low, 1e-3) * 0.08
    return low - pad, high + pad


# -- the page ---------------------------------------------------------------------------------
def _proof_cell(report: Any) -> str:
    if report.ok:
        return '<span class="ok proof-status" data-ok="true">passed</span>'
    return f'<span class="failed proof-status" data-ok="false">refused: {escape(report.reason or "")}</span>'


def _signature(report: Any) -> str:
    signature = report.signature
    signer = f" ({signature['signer']})" if signature.get("signer") else ""
    reason = f": {signature['reason']}" if signature.get("reason") else ""
    return escape(f"{signature.get('status', 'unknown')}{signer}{reason}")


def _thresholds(served: Any) -> str:
    view = _view(served)
    if view is None or view.thresholds is None:
        return ""
    rows = "".join(f"<tr><td>{escape(label)}</td><td>{t:g}</td></tr>" for label, t in zip(view.outputs, view.thresholds))
    return f'<table class="thresholds"><tr><th>label</th><th>threshold</th></tr>{rows}</table>'


def _report_table(report: Any) -> str:
    rows = "".join(f'<tr><td>{escape(s.step)}</td><td class="{"ok" if s.status == "ok" else "failed" if s.status == "failed" else "muted"}">'
                   f"{escape(s.status)}</td><td>{s.seconds * 1e3:.1f} ms</td><td>{escape(s.message)}</td></tr>"
                   for s in report.steps)
    return (f'<details class="report"><summary>proof report ({len(report.steps)} steps)</summary>'
            f'<table><tr><th>step</th><th>status</th><th>time</th><th>message</th></tr>{rows}</table></details>')


def _version(entry: Any, number: int, report: Any) -> str:
    served = entry.served.get(number)
    latest = entry.latest
    state = ("serving" if latest is not None and latest.manifest.version == number else
             "valid" if served is not None else "refused")
    body = [f'<article class="version" data-version="{number}" data-state="{state}">',
            f'<h3>version {number} <span class="{ "refused" if state == "refused" else "serving"}">{state}</span></h3>',
            f"<p>proof: {_proof_cell(report)} · signature: {_signature(report)} · proved "
            f"{escape(iso_time(entry.proved_at.get(number)) or '-')}</p>"]
    if served is not None:
        body.append(_thresholds(served))
        body.append(figures(served))
    body.append(_report_table(report))
    body.append("</article>")
    return "".join(body)


def _model(entry: Any) -> str:
    rows = "".join(f"<tr><td>{number}</td><td>{'serving' if entry.latest is not None and entry.latest.manifest.version == number else 'valid' if number in entry.served else 'refused'}</td>"
                   f"<td>{_proof_cell(report)}</td><td>{_signature(report)}</td></tr>"
                   for number, report in sorted(entry.reports.items(), reverse=True))
    reason = f'<p class="failed">{escape(entry.reason)}</p>' if entry.reason else ""
    versions = "".join(_version(entry, number, report) for number, report in sorted(entry.reports.items(), reverse=True))
    return (f'<section class="model" id="model-{escape(entry.name)}" data-model="{escape(entry.name)}">'
            f'<h2>{escape(entry.name)} <span class="muted">{escape(str(entry.kind or "unknown kind"))}</span></h2>{reason}'
            f'<table class="versions"><tr><th>version</th><th>state</th><th>proof</th><th>signature</th></tr>{rows}</table>'
            f"{versions}</section>")


def _traffic(minute: Minute | None) -> str:
    if minute is None:
        return ""
    span = f"last {minute.seconds:.0f} s" + ("" if minute.seconds >= 59 else " (the service is younger than a minute)")
    if not minute.routes:
        return f'<section id="traffic"><h2>Requests, {span}</h2><p class="muted">none</p></section>'
    rows = []
    for route in minute.routes:
        stages = route.stages
        inference = stages.get("inference")
        total_mean = sum(mean for _, mean, _, _ in stages.values())
        rows.append(f"<tr><td><code>{escape(route.route)}</code></td><td>{route.requests}</td><td>{route.errors}</td>"
                    f"<td>{escape(', '.join(f'{m}: {n}' for m, n in sorted(route.by_model.items())))}</td>"
                    f"<td>{total_mean * 1e3:.3f} ms</td>"
                    f"<td>{'-' if inference is None else f'≤ {inference[2] * 1e3:g} ms / ≤ {inference[3] * 1e3:g} ms'}</td></tr>")
    return (f'<section id="traffic"><h2>Requests, {span}</h2><table class="traffic"><tr><th>route</th><th>requests</th>'
            f"<th>errors</th><th>by model</th><th>mean decode + inference + encode</th><th>inference p50 / p95</th></tr>"
            f'{"".join(rows)}</table><p class="muted">from the service\'s own metrics (GET /metrics): request counter and '
            f"stage histograms; quantiles are bucket upper bounds</p></section>")


def render(registry: Any, minute: Minute | None, version: str) -> str:
    models = "".join(_model(entry) for _, entry in sorted(registry.models.items()))
    ready = "ready" if registry.ready else "not ready: " + "; ".join(registry.not_ready_reasons())
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>monoserve console</title>"
            f"<style>{STYLE}</style></head><body><header><h1>monoserve console</h1>"
            f"<div>monoserve {escape(version)} · engine {escape(str(registry.engine))} on {escape(str(registry.device))} · "
            f'<span class="{"ok" if registry.ready else "failed"}">{escape(ready)}</span> · repository read '
            f"{escape(iso_time(registry.refreshed_at) or '-')}</div></header><main>"
            f"{_traffic(minute)}{models or '<p>no models</p>'}</main></body></html>")
