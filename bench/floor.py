"""Where one request's time goes in the service, per workload: compute, codec and the rest (HTTP).

bench/run.py reads the service's own stage histogram (`monoserve_stage_seconds` on /metrics: decode,
inference, encode per request) before and after each of its cells. Per request, that gives the mean
time in inference (compute) and in decode + encode (codec); the server's time per request is
1 / its req/s. What is left is HTTP (uvicorn, the event loop, the ASGI hand-offs, receiving and
sending the body) and the pipeline's own checks. The in-process ONNX Runtime time for the same
tensor (bench/inprocess.py) over the server's time per request says how far the request is from
the limit (1.0: the request costs no more than the bare model call).

All of these are wall times, so they add up only where requests do not overlap: at one connection.
At more connections the stages of concurrent requests overlap (and with dynamic batching the
inference stage includes the queue wait), so the rest is not given there. The server's CPU time
per request (from /proc) is given beside. Pure functions; tests/test_bench_peers.py tests them.
"""

from __future__ import annotations

from typing import Any

STAGES = ("decode", "inference", "encode")


def stage_totals(metrics_text: str) -> dict[str, tuple[float, float]]:
    """{stage: (sum of seconds, count)} over every route, from a Prometheus text exposition."""
    totals = {stage: [0.0, 0.0] for stage in STAGES}
    for line in metrics_text.splitlines():
        if not line.startswith("monoserve_stage_seconds_"):
            continue
        name, _, value = line.rpartition(" ")
        kind = name.split("{", 1)[0].removeprefix("monoserve_stage_seconds_")
        if kind not in ("sum", "count"):
            continue
        stage = next((s for s in STAGES if f'stage="{s}"' in name), None)
        if stage is not None:
            totals[stage][0 if kind == "sum" else 1] += float(value)
    return {stage: (s, c) for stage, (s, c) in totals.items()}


def stage_ms_per_request(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean ms per request of each stage between two scrapes (stages with no new request left out)."""
    out = {}
    for stage in STAGES:
        seconds = after[stage][0] - before[stage][0]
        count = after[stage][1] - before[stage][1]
        if count > 0:
            out[stage] = 1e3 * seconds / count
    return out


def inprocess_ms(inprocess: dict[str, Any], workload: str, family: str) -> float | None:
    """The in-process ONNX Runtime median ms for this workload's tensor (its own entry, or one of the
    same family: compute does not depend on the body's format)."""
    results = inprocess.get("results", {})
    entry = results.get(workload) or next((v for k, v in results.items() if k.rsplit("_", 1)[0] == family), None)
    return None if entry is None else entry["ort"]["median_ms"]


def split(run: dict[str, Any], compute_ms: float | None) -> dict[str, Any] | None:
    """One service cell's shares of a request: compute, codec and (at one connection) the rest;
    None without stage times or answers."""
    stages = run.get("stage_ms_per_request")
    if not stages or "inference" not in stages or run.get("req_per_s", 0) <= 0 or run.get("requests", 0) <= 0:
        return None
    request_ms = 1e3 / run["req_per_s"]
    cpu_ms = 1e3 * run.get("server_cpu_percent", 0.0) / 100 * run["duration_s"] / run["requests"]
    inference = stages["inference"]
    codec = stages.get("decode", 0.0) + stages.get("encode", 0.0)
    alone = run["concurrency"] == 1  # stage wall times add up only when requests do not overlap
    return {"workload": run["workload"], "concurrency": run["concurrency"], "request_ms": request_ms,
            "cpu_ms_per_request": cpu_ms, "inference_ms": inference, "codec_ms": codec,
            "compute_share": inference / request_ms, "codec_share": codec / request_ms,
            "http_and_rest_share": 1.0 - (inference + codec) / request_ms if alone else None,
            "inprocess_ms": compute_ms,
            "ratio_to_inprocess": None if compute_ms is None else compute_ms / request_ms}


def floor_rows(result: dict[str, Any], server: str = "monoserve") -> list[dict[str, Any]]:
    """One row per cell of `server` that has stage times, in the run's order."""
    from workloads import WORKLOADS

    rows = []
    for entry in result.get("servers", []):
        if entry["name"] != server:
            continue
        for run in entry["runs"]:
            workload = WORKLOADS.get(run["workload"])
            family = workload.family if workload is not None else run["workload"].rsplit("_", 1)[0]
            row = split(run, inprocess_ms(result.get("inprocess", {}), run["workload"], family))
            if row is not None:
                rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| workload | conc | ms/request (1 / req/s) | CPU ms/request | inference ms | codec ms | compute | codec | "
             "HTTP + rest | in-process ORT ms | in-process / request |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        inproc = "-" if r["inprocess_ms"] is None else f"{r['inprocess_ms']:.3f}"
        ratio = "-" if r["ratio_to_inprocess"] is None else f"{r['ratio_to_inprocess']:.2f}"
        rest = "(overlaps)" if r["http_and_rest_share"] is None else f"{r['http_and_rest_share']:.0%}"
        lines.append(f"| {r['workload']} | {r['concurrency']} | {r['request_ms']:.3f} | {r['cpu_ms_per_request']:.3f} | "
                     f"{r['inference_ms']:.3f} | {r['codec_ms']:.3f} | {r['compute_share']:.0%} | "
                     f"{r['codec_share']:.0%} | {rest} | {inproc} | {ratio} |")
    return lines
