"""Batch scoring benchmark (issue 28): `monoserve batch` on generated data, next to raw in-process
ONNX Runtime on the same batches.

    python bench/batch.py [--work bench/work/batch] [--rows 1000000] [--signals 10000] [--length 4096]
                          [--no-ray] [--out bench/results/batch.json]

Workloads: a 32-feature classifier (hidden 32x32, exported with the real export) over `rows` rows
of float64 Parquet; the K=31 smoother over `signals` signals of `length` samples (list<float32>
Parquet, one signal per row). For each:
- raw: ONNX Runtime's session.run on the batches the engine sees (65,536 rows; 256 signals), read
  into float32 beforehand: the compute alone, nothing read or written;
- local: `monoserve batch` (proof, read, convert, infer, write Parquet) end to end, in a child
  process pinned to CPU 0 like raw, with its peak RSS (ru_maxrss) at the full input and at a tenth;
- ray: `--engine ray` on ray.init(num_cpus=2) (one actor of 1 thread + 1 CPU to read), end to end,
  in a child process (not pinned: Ray's workers are separate processes).
rows/s (signals/s) = input rows / wall seconds. The machine is shared: numbers move with its load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("bench.batch")

FEATURES = 32
KERNEL = 31
ROW_BATCH = 65_536
ROW_GROUP = 50_000  # rows per Parquet row group in the generated input (20 row groups at 1M rows)
SIGNAL_BATCH = 256


def build_models(work: Path) -> Path:
    """A 32-feature classifier and a K=31 smoother, exported for real (torch only here)."""
    repo = work / "repo"
    if (repo / "wide" / "1" / "manifest.json").exists() and (repo / "smoother" / "1" / "manifest.json").exists():
        return repo
    import torch

    from export.core import export_checkpoint
    from models.checkpoint import save_checkpoint
    from models.classifier import ClassifierConfig, MonotoneClassifier
    from models.smoother import MonotoneSmoother, SmootherConfig

    torch.manual_seed(0)
    work.mkdir(parents=True, exist_ok=True)
    model = MonotoneClassifier(ClassifierConfig(feature_names=[f"f{i}" for i in range(FEATURES)], labels=["hit"],
                                                hidden=[32, 32]))
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.copy_(torch.randn_like(layer.bias) * 0.1)
    checkpoint = save_checkpoint(work / "wide.pt", model.eval(), metrics={})
    export_checkpoint(checkpoint, repo, name="wide", formats=("onnx",))
    smoother = MonotoneSmoother(SmootherConfig(kernel_size=KERNEL, init_decay=8.0 / KERNEL))
    checkpoint = save_checkpoint(work / "smoother.pt", smoother, metrics={})
    export_checkpoint(checkpoint, repo, name="smoother", formats=("onnx",))
    return repo


def build_data(work: Path, rows: int, signals: int, length: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {}
    for tag, scale in (("full", 1), ("tenth", 10)):
        path = work / f"rows-{rows // scale}-rg{ROW_GROUP}.parquet"
        staged = path.with_suffix(".partial")
        if not path.exists():
            rng = np.random.default_rng(0)
            writer = None
            for start in range(0, rows // scale, ROW_GROUP):  # written in pieces: bounded memory here too
                count = min(ROW_GROUP, rows // scale - start)
                table = pa.table({f"f{i}": rng.normal(size=count) for i in range(FEATURES)}
                                 | {"id": np.arange(start, start + count)})
                writer = writer or pq.ParquetWriter(staged, table.schema)
                writer.write_table(table, row_group_size=ROW_GROUP)
            writer.close()
            os.replace(staged, path)
        paths[f"rows-{tag}"] = path
        path = work / f"signals-{signals // scale}x{length}.parquet"
        staged = path.with_suffix(".partial")
        if not path.exists():
            rng = np.random.default_rng(1)
            writer = None
            for start in range(0, signals // scale, 1000):
                count = min(1000, signals // scale - start)
                flat = np.cumsum(rng.normal(size=(count, length)), axis=1).astype(np.float32).reshape(-1)
                offsets = pa.array(np.arange(count + 1, dtype=np.int32) * length)
                table = pa.table({"sid": np.arange(start, start + count),
                                  "signal": pa.ListArray.from_arrays(offsets, pa.array(flat))})
                writer = writer or pq.ParquetWriter(staged, table.schema)
                writer.write_table(table)
            writer.close()
            os.replace(staged, path)
        paths[f"signals-{tag}"] = path
    return paths


def raw_onnx(model_path: Path, batches: list[np.ndarray]) -> float:
    """Seconds for session.run over every batch (1 intra-op thread, as the pinned engine)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: batches[0][:8]})  # warm
    start = time.perf_counter()
    for batch in batches:
        session.run(None, {name: batch})
    return time.perf_counter() - start


def raw_pipeline(model_path: Path, path: Path, column: str | None, length: int, batch_rows: int, out: Path) -> float:
    """Seconds for the floor of any batch scorer: read the same Parquet batches, convert to float32,
    session.run, write inputs + outputs to Parquet (same writer settings), nothing else: no proof,
    no bad-row checks, no kind post-processing."""
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    writer = None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        if column is None:
            x = np.column_stack([batch.column(f"f{i}").to_numpy() for i in range(FEATURES)]).astype(np.float32)
            y = session.run(None, {name: x})[0][:, 0]
            table = pa.Table.from_batches([batch]).append_column("score", pa.array(y))
        else:
            x = batch.column(column).flatten().to_numpy().reshape(-1, 1, length)
            y = session.run(None, {name: x})[0][:, 0, KERNEL // 2:KERNEL // 2 + length].reshape(-1)  # "same"
            offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32) * length)
            table = pa.table({"sid": batch.column("sid"), "smoothed": pa.ListArray.from_arrays(offsets, pa.array(y))})
        writer = writer or pq.ParquetWriter(out, table.schema, use_dictionary=False)
        writer.write_table(table)
    writer.close()
    return time.perf_counter() - start


def row_batches(path: Path) -> list[np.ndarray]:
    import pyarrow.parquet as pq

    out = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_BATCH, columns=[f"f{i}" for i in range(FEATURES)]):
        out.append(np.column_stack([batch.column(i).to_numpy() for i in range(FEATURES)]).astype(np.float32))
    return out


def signal_batches(path: Path, length: int) -> list[np.ndarray]:
    import pyarrow.parquet as pq

    out = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=SIGNAL_BATCH, columns=["signal"]):
        flat = batch.column(0).flatten().to_numpy()
        out.append(flat.reshape(-1, 1, length))
    return out


def child(argv: list[str], pin: bool) -> dict:
    command = [sys.executable, __file__, "--child", *argv]
    if pin and sys.platform.startswith("linux"):
        command = ["taskset", "-c", "0", *command]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_child(args: argparse.Namespace) -> None:
    """One `run_batch` in this process: its wall time and this process's peak RSS."""
    logging.basicConfig(level="WARNING")
    from batch import BatchJob, run_batch

    options = json.loads(args.child_job)
    if options.get("engine") == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    summary = run_batch(BatchJob(**options))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows": summary.rows_in, "prove_seconds": summary.prove_seconds,
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM). Not ru_maxrss: Linux carries the parent's peak
    across fork + exec into it, so every child would report the benchmark's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "batch")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--signals", type=int, default=10_000)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("child_job", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s: %(message)s")
    repo = build_models(args.work)
    data = build_data(args.work, args.rows, args.signals, args.length)
    results: dict[str, dict] = {}
    workloads = {
        "classifier": ("wide", {}, "rows", row_batches, ROW_BATCH),
        "smoother": ("smoother", {"column": "signal", "keep": ["sid"]}, "signals",
                     lambda path: signal_batches(path, args.length), SIGNAL_BATCH),
    }
    for workload, (model, options, unit, batches_of, batch_rows) in workloads.items():
        full, tenth = data[f"{unit}-full"], data[f"{unit}-tenth"]
        batches = batches_of(full)
        count = sum(len(b) for b in batches)
        raw_s = raw_onnx(repo / model / "1" / "model.onnx", batches)
        del batches
        floor_s = raw_pipeline(repo / model / "1" / "model.onnx", full, options.get("column"), args.length, batch_rows,
                               args.work / f"out-{workload}-raw.parquet")
        job = {"repo": str(repo), "model": model, "threads": 1, "batch_rows": batch_rows, **options}
        local = child([json.dumps({**job, "input": str(full), "output": str(args.work / f"out-{workload}.parquet")})],
                      pin=True)
        small = child([json.dumps({**job, "input": str(tenth), "output": str(args.work / f"out-{workload}-s.parquet")})],
                      pin=True)
        entry = {"unit": unit, "count": count, "raw_onnx_per_s": count / raw_s,
                 "local_per_s": local["rows"] / local["seconds"], "local_seconds": local["seconds"],
                 # the rate once the version is proven (the proof is a fixed cost per run)
                 "local_per_s_after_proof": local["rows"] / (local["seconds"] - local["prove_seconds"]),
                 "peak_rss_mb": {f"{count // 10}": small["peak_rss_mb"], f"{count}": local["peak_rss_mb"]}}
        entry["raw_pipeline_per_s"] = count / floor_s
        entry["local_vs_raw"] = entry["local_per_s"] / entry["raw_onnx_per_s"]
        entry["local_vs_raw_pipeline"] = entry["local_per_s"] / entry["raw_pipeline_per_s"]
        entry["rss_growth_10x"] = local["peak_rss_mb"] / small["peak_rss_mb"] - 1
        if not args.no_ray:
            ray_run = child([json.dumps({**job, "engine": "ray", "input": str(full),
                                         "output": str(args.work / f"out-{workload}-ray")})], pin=False)
            entry["ray_per_s"] = ray_run["rows"] / ray_run["seconds"]
            entry["ray_seconds"] = ray_run["seconds"]
            entry["ray_per_s_after_proof"] = ray_run["rows"] / (ray_run["seconds"] - ray_run["prove_seconds"])
            entry["ray_vs_local"] = entry["ray_per_s"] / entry["local_per_s"]
        results[workload] = entry
        log.info("%s: %s", workload, json.dumps(entry))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
