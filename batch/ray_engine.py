"""The Ray Data engine: read_parquet/read_csv -> map_batches (rows, one signal per row) or
groupby(id).map_groups (long format) with a class holding one proven session per actor ->
write_parquet into a temporary folder, published by rename when the whole run succeeded.

Every actor proves the version itself, through the service's prover, policy and trusted keys
(batch.serving.load_version), and checks that it proved the very artifact the driver proved (its
digest) before it scores a row: an actor that cannot prove it fails, and the run with it.
`concurrency` comes from the cluster's CPUs (one CPU left for reading and writing), ONNX Runtime
threads are set per actor (`threads`, its `num_cpus`), not left to Ray's OMP_NUM_THREADS=1.
The repository (and the trusted keys) must be readable at the same paths on every node.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from batch.errors import BadRowError, BatchError, VersionRefusedError
from batch.spec import BatchJob, BatchSummary, metadata_for, prove
from batch.kinds import RAY_PATH_COLUMN, batch_kind
from batch.output import METADATA_KEY
from batch.serving import Scorer
from batch.sources import Source

log = logging.getLogger(__name__)

SIDECAR = "_monoserve.json"  # in the output folder (Ray writes one Parquet file per block)


class RowCounter:
    """A small actor the scoring actors report to: rows in, rows out, bad rows."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]

    def add(self, rows_in: int, rows_out: int, bad: int) -> None:
        for index, value in enumerate((rows_in, rows_out, bad)):
            self.counts[index] += value

    def totals(self) -> list[int]:
        return self.counts


class ScoringActor:
    """One proven session per actor; called with pyarrow tables (a batch, or one id's rows)."""

    def __init__(self, job: BatchJob, threads: int, digest: str, counter: Any, metadata: dict[str, Any]):
        proven = prove(job, threads, expect_digest=digest)  # VersionRefusedError: this actor scores nothing
        self.adapter = batch_kind(Scorer.of(proven), job.layout())
        self.counter = counter
        self.metadata = {METADATA_KEY: json.dumps(metadata).encode()}
        log.info("actor %d proved %s v%d (%s), %d ONNX Runtime thread(s)", os.getpid(), proven.manifest.name,
                 proven.manifest.version, digest, threads)

    def __call__(self, table: pa.Table) -> pa.Table:
        import ray

        scored = self.adapter.score(table)
        # waited for: the driver reads the totals once the last batch is written
        ray.get(self.counter.add.remote(table.num_rows, scored.table.num_rows, scored.bad))
        return scored.table.replace_schema_metadata(self.metadata)


def concurrency_for(job: BatchJob, cpus: float) -> tuple[int, int]:
    """(actors, ONNX Runtime threads per actor) for a cluster of `cpus` CPUs."""
    threads = max(1, job.threads or 1)
    actors = job.actors or max(1, int(cpus // threads) - 1)
    return actors, threads


def _connect(job: BatchJob) -> None:
    import ray

    if ray.is_initialized():
        return
    ray.init(address=job.ray_address, log_to_driver=True)


def _read(source: Source, columns: list[str], numeric: list[str]):
    import ray.data

    if source.format == "parquet":
        return ray.data.read_parquet(source.paths, include_paths=True).select_columns([*columns, RAY_PATH_COLUMN])
    convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in numeric}, include_columns=columns)
    return ray.data.read_csv(source.paths, convert_options=convert, include_paths=True)


def _batch_error(exc: BaseException) -> BaseException | None:
    """The BatchError an actor or task raised, out of Ray's wrappers (None: not one of ours)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, BatchError):
            return item
        stack += [getattr(item, "cause", None), item.__cause__, item.__context__]
    text = str(exc)
    for kind in (VersionRefusedError, BadRowError, BatchError):  # the original, in Ray's text of the traceback
        marker = f"{kind.__name__}: "
        if marker in text:
            return kind(text[text.index(marker) + len(marker):].splitlines()[0])
    return None


def _publish(staged: Path, output: Path) -> None:
    """`staged` becomes `output`; an older output there is removed only after the new one is in place."""
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(output, old)
    os.replace(staged, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def run_ray(job: BatchJob) -> BatchSummary:
    import ray

    source = Source.of(job.input)
    output = Path(job.output)
    if not output.parent.is_dir():
        raise BatchError(f"output folder {str(output.parent)!r} does not exist")
    if output.is_file():
        raise BatchError(f"output {str(output)!r} is a file: the Ray engine writes a folder of Parquet files")
    started = time.perf_counter()
    proven = prove(job, 1)  # on the driver first: a refused version starts no cluster work
    prove_seconds = time.perf_counter() - started
    adapter = batch_kind(Scorer.of(proven), job.layout())
    metadata = metadata_for(proven, job, adapter)
    layout = job.layout()
    numeric = [layout.value] if layout.long else ([] if layout.column else getattr(adapter, "features", []))
    _connect(job)
    actors, threads = concurrency_for(job, ray.cluster_resources().get("CPU", 1.0))
    log.info("Ray: %d actor(s) x %d ONNX Runtime thread(s) on %g CPU(s)", actors, threads,
             ray.cluster_resources().get("CPU", 0))
    counter = ray.remote(num_cpus=0)(RowCounter).remote()
    staged = output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex[:8]}")
    constructor = {"job": job, "threads": threads, "digest": proven.artifact_digest, "counter": counter,
                   "metadata": metadata}
    try:
        dataset = _read(source, adapter.input_columns(), numeric)
        pool = ray.data.ActorPoolStrategy(size=actors)
        if layout.long:
            total = source.rows()
            # a few partitions per actor, each about a batch of rows (Ray's default of 200 is for big data)
            partitions = max(actors, min(200, -(-total // job.batch_rows))) if total is not None else 200
            scored = dataset.groupby(layout.id, num_partitions=partitions).map_groups(
                ScoringActor, batch_format="pyarrow", fn_constructor_kwargs=constructor, compute=pool, num_cpus=threads)
        else:
            scored = dataset.map_batches(
                ScoringActor, batch_format="pyarrow", batch_size=job.batch_rows, fn_constructor_kwargs=constructor,
                compute=pool, num_cpus=threads, zero_copy_batch=True)
        # no dictionary encoding: on floats it fails after costing most of the write (batch.output);
        # the output's schema is known only once the blocks are computed
        scored.write_parquet(str(staged), use_dictionary=False)
        rows_in, written, bad = ray.get(counter.totals.remote())
        metadata.update(rows_in=rows_in, rows_out=written, bad_rows=bad, actors=actors, threads_per_actor=threads)
        staged.mkdir(exist_ok=True)
        (staged / SIDECAR).write_text(json.dumps(metadata, indent=2))
        _publish(staged, output)
    except BaseException as exc:
        shutil.rmtree(staged, ignore_errors=True)
        ours = _batch_error(exc)
        if ours is not None and ours is not exc:
            raise ours from None
        raise
    finally:
        ray.kill(counter)
    return BatchSummary(str(output), rows_in, written, bad, 0.0, metadata, prove_seconds)
