"""In-process compute of each workload: ONNX Runtime called directly on numpy arrays, no HTTP.

This is the ceiling for samples/s: what the model itself costs on this CPU with the same number
of threads the server gets. For the long kernel it also times service.compute.convolve (direct vs FFT)
against scipy.signal.oaconvolve on the same signal (issue 6: within 1.5x).

    taskset -c 0 .venv/bin/python bench/inprocess.py [--work bench/work] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO_ROOT))  # after PYTHONPATH and the installed project
sys.path.insert(0, str(REPO_ROOT / "bench"))

from prepare import DEFAULT_WORK, onnx_model_path  # noqa: E402
from workloads import WORKLOADS, Workload  # noqa: E402

from contract.modes import mode_slice  # noqa: E402


def timings(fn: Callable[[], object], budget_s: float, max_repeats: int = 200) -> dict[str, float]:
    fn()  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_repeats and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"min_ms": 1e3 * min(times), "median_ms": 1e3 * float(np.median(times)), "repeats": len(times)}


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_workload(work: Path, workload: Workload, threads: int, budget_s: float) -> dict:
    sess = session(onnx_model_path(work, workload.model), threads)
    data = workload.array()
    if workload.kind == "smooth":
        feed = {sess.get_inputs()[0].name: data[None]}  # [1, C, L]
    else:
        feed = {sess.get_inputs()[0].name: data}
    result = {"workload": workload.name, "model_file": str(onnx_model_path(work, workload.model))}
    result["ort"] = timings(lambda: sess.run(None, feed), budget_s)
    result["samples_per_s"] = workload.samples / (result["ort"]["median_ms"] / 1e3)
    result["samples_per_s_best"] = workload.samples / (result["ort"]["min_ms"] / 1e3)
    if workload.kind == "smooth":
        import onnx
        from onnx import numpy_helper

        from service.compute.convolve import choose_method, full_correlation

        model_path = onnx_model_path(work, workload.model)
        kernel_size = sess.run(None, {sess.get_inputs()[0].name: data[:1, :1][None]})[0].shape[-1]  # L=1 -> K
        model = onnx.load(str(model_path))
        kernel = next(
            numpy_helper.to_array(t).reshape(-1) for t in model.graph.initializer if list(t.dims) == [1, 1, kernel_size]
        )
        method = choose_method(kernel_size, workload.length)
        result["kernel_size"] = kernel_size
        result["service_method"] = method  # what monoserve's /smooth runs for this shape (measured rule)
        if method != "engine":
            result["service_compute"] = timings(lambda: full_correlation(data, kernel, method=method), budget_s)
            result["samples_per_s_service_method"] = workload.samples / (result["service_compute"]["median_ms"] / 1e3)
            full_ort = sess.run(None, feed)[0][0]
            full_ours = full_correlation(data, kernel, method=method)
            window = mode_slice("same", workload.length, kernel_size)
            result["service_method_max_abs_diff_vs_ort"] = float(np.abs(full_ort[:, window] - full_ours[:, window]).max())
            result["service_method_max_rel_diff_vs_ort"] = result["service_method_max_abs_diff_vs_ort"] / max(
                1.0, float(np.abs(data).max())
            )
        if method == "fft":
            from scipy.signal import oaconvolve

            result["scipy_oaconvolve"] = timings(lambda: oaconvolve(data, kernel[None, ::-1], axes=-1), budget_s)
            result["fft_vs_oaconvolve"] = result["service_compute"]["median_ms"] / result["scipy_oaconvolve"]["median_ms"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (the server's CPUs)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    parser.add_argument("--workloads", help="comma-separated workload names (default: every format-free one)")
    args = parser.parse_args(argv)
    budget = 0.5 if args.quick else 2.0
    names = [n for n in WORKLOADS if not n.endswith("_json") or n.startswith("classify")]  # compute is format-free
    if args.workloads:
        names = [n for n in args.workloads.split(",") if n in WORKLOADS]
    results = {name: measure_workload(args.work, WORKLOADS[name], args.threads, budget) for name in names}
    text = json.dumps({"threads": args.threads, "results": results}, indent=2)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
