"""Where one request's time goes in the service, per workload: compute, codec and the rest (HTTP).

bench/run.py reads the service's own stage histogram (`monoserve_stage_seconds` on /metrics: decode,
inference, encode per route) before and after each of its cells, and the server's CPU time from
/proc. Per request, that gives the mean time in inference (compute), in decode + encode (codec), and
the server's whole CPU time; what is left is HTTP (uvicorn, the event loop, the ASGI hand-offs, the
body's receive and send) and the pipeline's own checks. The in-process ONNX Runtime time for the
same tensor (bench/inprocess.py) says how far the request is from the limit: in-process ms / CPU ms
per request.

The stage times are wall time on the server (a stage preempted by another tenant of the shared
cores counts the wait), the CPU time is what the server received: on a loaded machine the shares
lean towards the stages. Pure functions here; tests/test_bench_peers.py tests them.
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
    """One service cell's shares of a request: compute, codec, HTTP and the rest; None without stages."""
    stages = run.get("stage_ms_per_request")
    requests = run.get("requests") or 0
    if not stages or "inference" not in stages or requests <= 0 or run.get("server_cpu_percent", 0) <= 0:
        return None
    cpu_ms = 1e3 * run["server_cpu_percent"] / 100 * run["duration_s"] / requests
    inference = stages["inference"]
    codec = stages.get("decode", 0.0) + stages.get("encode", 0.0)
    return {"workload": run["workload"], "concurrency": run["concurrency"], "cpu_ms_per_request": cpu_ms,
            "inference_ms": inference, "codec_ms": codec, "compute_share": inference / cpu_ms,
            "codec_share": codec / cpu_ms, "http_and_rest_share": 1.0 - (inference + codec) / cpu_ms,
            "inprocess_ms": compute_ms,
            "ratio_to_inprocess": None if compute_ms is None else compute_ms / cpu_ms}


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
    lines = ["| workload | conc | CPU ms/request | inference ms | codec ms | compute | codec | HTTP + rest | "
             "in-process ORT ms | in-process / request |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        inproc = "-" if r["inprocess_ms"] is None else f"{r['inprocess_ms']:.3f}"
        ratio = "-" if r["ratio_to_inprocess"] is None else f"{r['ratio_to_inprocess']:.2f}"
        lines.append(f"| {r['workload']} | {r['concurrency']} | {r['cpu_ms_per_request']:.3f} | {r['inference_ms']:.3f} | "
                     f"{r['codec_ms']:.3f} | {r['compute_share']:.0%} | {r['codec_share']:.0%} | "
                     f"{r['http_and_rest_share']:.0%} | {inproc} | {ratio} |")
    return lines
