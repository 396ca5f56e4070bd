"""Measure the smoother's full correlation three ways: the engine (ONNX Runtime Conv), direct
(blocked matrix products in numpy) and FFT overlap-add (scipy).

For each kernel size K and signal length L (8 signals, float32, one CPU thread, the way one server
worker runs), time service.compute.convolve's three methods and record which is fastest. The rule in
service/compute/convolve.py (FFT_MIN_KERNEL, ENGINE_MAX_KERNEL, ENGINE_MAX_WORK) is fitted
to this table.

    .venv/bin/python bench/convolve_crossover.py [--quick] [--out bench/results]

Timings are the minimum over repeats (the machine is shared; the minimum is the least disturbed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO_ROOT))  # after PYTHONPATH and the installed project
sys.path.insert(0, str(REPO_ROOT / "bench"))

from graphs import full_correlation_model, session_for  # noqa: E402

from service.compute.convolve import (  # noqa: E402
    ENGINE_MAX_KERNEL,
    ENGINE_MAX_WORK,
    FFT_MIN_KERNEL,
    choose_method,
    full_correlation,
)  # noqa: E402

log = logging.getLogger("bench.convolve_crossover")

KERNELS = (3, 7, 15, 31, 63, 127, 255, 511, 1023)
LENGTHS = (256, 1024, 4096, 16384, 65536, 262144, 1_000_000)
QUICK_KERNELS = (7, 31, 63, 127, 255)
QUICK_LENGTHS = (256, 4096, 65536, 1_000_000)
N_SIGNALS = 8
# Skip a method in a cell where its estimated cost (multiply-adds) would take many seconds.
MAX_DIRECT_MACS = 4e10
MAX_ENGINE_MACS = 4e10
TIMED = ("engine", "direct", "fft")


def best_time(fn: Callable[[], object], budget_s: float = 0.4, max_repeats: int = 7) -> float:
    """Minimum wall time of `fn` over repeats that fit in about `budget_s` (after one warm-up)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    repeats = int(max(1, min(max_repeats, budget_s / max(first, 1e-6))))
    times = [first]
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(kernels: tuple[int, ...], lengths: tuple[int, ...]) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for kernel_size in kernels:
        kernel = np.sort(rng.random(kernel_size).astype(np.float32))
        kernel /= kernel.sum()
        session = session_for(full_correlation_model(kernel), threads=1)
        for length in lengths:
            signals = rng.standard_normal((N_SIGNALS, length)).astype(np.float32)
            macs = N_SIGNALS * (length + kernel_size - 1) * kernel_size
            row: dict = {"kernel_size": kernel_size, "length": length, "signals": N_SIGNALS}
            row["fft_ms"] = 1e3 * best_time(lambda s=signals, k=kernel: full_correlation(s, k, method="fft"))
            row["engine_ms"] = (
                1e3 * best_time(lambda s=signals, k=kernel, o=session: full_correlation(s, k, session=o, method="engine"))
                if macs <= MAX_ENGINE_MACS
                else None
            )
            row["direct_ms"] = (
                1e3 * best_time(lambda s=signals, k=kernel: full_correlation(s, k, method="direct"))
                if macs <= MAX_DIRECT_MACS
                else None
            )
            timed = {m: row[f"{m}_ms"] for m in TIMED if row[f"{m}_ms"] is not None}
            row["fastest"] = min(timed, key=timed.__getitem__)
            row["rule_choice"] = choose_method(kernel_size, length)
            row["rule_slowdown"] = timed[row["rule_choice"]] / timed[row["fastest"]] if row["rule_choice"] in timed else None
            row["fastest_vs_engine"] = None if row["engine_ms"] is None else row["engine_ms"] / timed[row["fastest"]]
            rows.append(row)
            log.info("K=%d L=%d %s", kernel_size, length, {k: v for k, v in row.items() if k.endswith("_ms")})
    return rows


def rule_regret(rows: list[dict]) -> list[dict]:
    """Cells where the rule's choice is more than 10% slower than the fastest method measured."""
    return [
        {"kernel_size": r["kernel_size"], "length": r["length"], "slowdown": r["rule_slowdown"], "fastest": r["fastest"]}
        for r in rows
        if r["rule_slowdown"] is not None and r["rule_slowdown"] > 1.10
    ]


def to_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "# Engine vs direct vs FFT for the smoother's full correlation",
        "",
        f"Machine: {result['machine']}. {N_SIGNALS} float32 signals, 1 thread (ORT intra-op 1, pinned), minimum of repeats.",
        f"Rule in service/compute/convolve.py: FFT when K >= {FFT_MIN_KERNEL}; else the engine when K <= {ENGINE_MAX_KERNEL} "
        f"or K * L <= {ENGINE_MAX_WORK}; else direct (blocked GEMM).",
        "",
        "Fastest method per cell (E engine, D direct, F fft), its speed-up over the engine, and `*` where the rule",
        "picks something else:",
        "",
    ]
    kernels = sorted({r["kernel_size"] for r in rows})
    lengths = sorted({r["length"] for r in rows})
    by_cell = {(r["kernel_size"], r["length"]): r for r in rows}
    letter = {"engine": "E", "direct": "D", "fft": "F"}
    lines.append("| K \\ L | " + " | ".join(str(n) for n in lengths) + " |")
    lines.append("|---|" + "---|" * len(lengths))
    for k in kernels:
        cells = []
        for n in lengths:
            r = by_cell.get((k, n))
            if r is None:
                cells.append("-")
                continue
            speedup = "" if r["fastest_vs_engine"] is None else f" {r['fastest_vs_engine']:.1f}x"
            other = "" if r["rule_choice"] == r["fastest"] else f" *{letter[r['rule_choice']]}"
            cells.append(f"{letter[r['fastest']]}{speedup}{other}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "Times in ms:", ""]
    lines.append("| K | L | engine | direct | FFT | fastest | rule |")
    lines.append("|---|---|---|---|---|---|---|")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['kernel_size']} | {r['length']} | {fmt(r['engine_ms'])} | {fmt(r['direct_ms'])} | "
            f"{fmt(r['fft_ms'])} | {r['fastest']} | {r['rule_choice']} |"
        )
    regret = result["rule_regret"]
    lines += ["", f"Cells where the rule's choice is >10% slower than the fastest: {len(regret)}"]
    for item in regret:
        lines.append(f"- K={item['kernel_size']} L={item['length']}: {item['slowdown']:.2f}x (fastest: {item['fastest']})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid (about 20 s)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kernels, lengths = (QUICK_KERNELS, QUICK_LENGTHS) if args.quick else (KERNELS, LENGTHS)
    rows = measure(kernels, lengths)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, {platform.python_version()}",
        "signals": N_SIGNALS,
        "rule": {"fft_min_kernel": FFT_MIN_KERNEL, "engine_max_kernel": ENGINE_MAX_KERNEL,
                 "engine_max_work": ENGINE_MAX_WORK},
        "rows": rows,
    }
    result["rule_regret"] = rule_regret(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "convolve_crossover_quick" if args.quick else "convolve_crossover"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"{stem}.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
