"""The service against every peer, per cell, over one or several runs of bench/run.py (HTTP and gRPC).

    .venv/bin/python bench/tables.py bench/results/bench_quick_run1.json bench/results/bench_quick_run2.json ...

A cell is (transport, workload, concurrency). For each cell of each run: every peer's req/s, the best
peer, the service's req/s and its ratio to the best peer (> 1: the service is ahead). Over several
runs: each server's median req/s, the ratio's min / median / max, and in how many runs the service
was ahead. Prints Markdown (docs/performance.md carries it); pure functions, tested by
tests/test_bench_peers.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

SERVICE = "monoserve"
# Every peer a run may hold, in the order of the table's columns (PyTriton: Triton's Python backend).
PEERS = ("mlserver", "litserve", "kserve", "pytriton", "bentoml", "rayserve")
LABELS = {"mlserver": "MLServer", "litserve": "LitServe", "kserve": "KServe",
          "pytriton": "PyTriton (Triton, Python backend)", "bentoml": "BentoML", "rayserve": "Ray Serve"}

Cell = tuple[str, str, int]  # transport, workload, concurrency


def cells_of(result: dict) -> dict[Cell, dict[str, float]]:
    """req/s of the service and every peer per cell of one run (HTTP runs and the run's gRPC rows)."""
    cells: dict[Cell, dict[str, float]] = {}
    for server in result.get("servers", []):
        if server["name"] not in (SERVICE, *PEERS):
            continue
        for run in server["runs"]:
            cells.setdefault(("http", run["workload"], run["concurrency"]), {})[server["name"]] = run["req_per_s"]
    for row in (result.get("grpc") or {}).get("rows", []):
        if row["server"] in (SERVICE, *PEERS):
            cells.setdefault(("grpc", row["workload"], row["concurrency"]), {})[row["server"]] = row["req_per_s"]
    return cells


def against_best_peer(cells: dict[Cell, dict[str, float]]) -> dict[Cell, dict]:
    """Per cell that the service and at least one peer ran: the best peer, its req/s, the service's ratio."""
    out = {}
    for cell, values in cells.items():
        peers = {name: value for name, value in values.items() if name in PEERS}
        if SERVICE not in values or not peers:
            continue
        best = max(peers, key=lambda name: peers[name])
        ratio = values[SERVICE] / peers[best] if peers[best] > 0 else None
        out[cell] = {"best_peer": best, "best_peer_req_per_s": peers[best], "service_req_per_s": values[SERVICE],
                     "ratio": ratio}
    return out


def over_runs(results: list[dict]) -> list[dict]:
    """One row per cell over the runs: median req/s per server, the ratio to the best peer in each run
    (min, median, max) and how many runs had the service ahead."""
    per_run = [cells_of(result) for result in results]
    versus = [against_best_peer(cells) for cells in per_run]
    rows = []
    for cell in sorted({cell for cells in per_run for cell in cells}):
        servers = {}
        for name in (SERVICE, *PEERS):
            values = [cells[cell][name] for cells in per_run if name in cells.get(cell, {})]
            if values:
                servers[name] = statistics.median(values)
        ratios = [v[cell]["ratio"] for v in versus if cell in v and v[cell]["ratio"] is not None]
        rows.append({"transport": cell[0], "workload": cell[1], "concurrency": cell[2], "median_req_per_s": servers,
                     "ratios": ratios, "ahead_in": sum(1 for r in ratios if r > 1.0), "runs": len(ratios),
                     "best_peers": sorted({v[cell]["best_peer"] for v in versus if cell in v})})
    return rows


def target_values(results: list[dict]) -> dict[str, list[float | None]]:
    """Each run's targets (bench/run.py summarize) by name, in run order."""
    names = sorted({name for result in results for name in result.get("targets", {})})
    return {name: [result.get("targets", {}).get(name, {}).get("value") for result in results] for name in names}


def _num(value: float) -> str:
    return f"{value / 1e3:.1f} k" if value >= 1e4 else (f"{value:.0f}" if value >= 10 else f"{value:.2f}")


def markdown(results: list[dict]) -> str:
    rows = over_runs(results)
    used = [name for name in PEERS if any(name in row["median_req_per_s"] for row in rows)]
    lines = [f"Median req/s over {len(results)} run(s); `ratio`: the service's req/s over the best peer's in the "
             "same run (min / median / max over the runs); `ahead`: runs in which the service was ahead.", "",
             "| transport | workload | conc | monoserve | " + " | ".join(LABELS[n] for n in used)
             + " | ratio to best peer | ahead |", "|---|---|---:|---:|" + "---:|" * len(used) + "---|---|"]
    for row in rows:
        if not row["ratios"]:
            continue  # no peer ran this cell
        values = row["median_req_per_s"]
        ratios = sorted(row["ratios"])
        spread = f"{ratios[0]:.2f} / {statistics.median(ratios):.2f} / {ratios[-1]:.2f}"
        lines.append(f"| {row['transport']} | {row['workload']} | {row['concurrency']} | "
                     f"{_num(values[SERVICE]) if SERVICE in values else '-'} | "
                     + " | ".join(_num(values[n]) if n in values else "" for n in used)
                     + f" | {spread} | {row['ahead_in']}/{row['runs']} |")
    lines += ["", "| target (bench/run.py) | " + " | ".join(f"run {i + 1}" for i in range(len(results))) + " |",
              "|---|" + "---:|" * len(results)]
    for name, values in target_values(results).items():
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench/run.py result files (json)")
    args = parser.parse_args(argv)
    print(markdown([json.loads(path.read_text()) for path in args.results]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
