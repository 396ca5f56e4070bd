"""`run_batch(BatchJob(...))`: prove the version on the driver (the service's prover, policy and
trusted keys), pick the adapter for its kind and the input's layout, run the engine, publish the
output atomically with the run's metadata. `monoserve batch` (batch.cli) is a thin layer over it."""

from __future__ import annotations

import logging
import time

from batch.kinds import batch_kind
from batch.serving import Scorer, available_cpus
from batch.spec import BatchJob, BatchSummary, metadata_for, prove

log = logging.getLogger(__name__)


def run_batch(job: BatchJob) -> BatchSummary:
    """Score `job.input` into `job.output` with the proven version; nothing at the output path unless it succeeds."""
    job.check()
    start = time.perf_counter()
    if job.engine == "ray":
        from batch.ray_engine import run_ray

        summary = run_ray(job)
    else:
        summary = _run_local(job)
    summary.seconds = time.perf_counter() - start
    log.info("%s v%s: %d rows in, %d out, %d bad (%s), %.1f s, %.0f rows/s -> %s", job.model,
             summary.metadata["version"], summary.rows_in, summary.rows_out, summary.bad_rows, job.on_bad_rows,
             summary.seconds, summary.rows_per_second, summary.output)
    return summary


def _run_local(job: BatchJob) -> BatchSummary:
    from batch.local import run_local
    from batch.output import Sink
    from batch.sources import Source

    source = Source.of(job.input)  # bad input paths fail before the proof's cost
    started = time.perf_counter()
    proven = prove(job, job.threads or available_cpus())
    prove_seconds = time.perf_counter() - started
    adapter = batch_kind(Scorer.of(proven), job.layout())
    metadata = metadata_for(proven, job, adapter)
    sink = Sink(job.output, metadata)
    try:
        stats = run_local(adapter, source, sink, job.batch_rows, job.max_buffered_rows)
        metadata.update(rows_in=stats["rows_in"], rows_out=sink.rows, bad_rows=stats["bad_rows"])
        sink.metadata = metadata
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return BatchSummary(str(job.output), stats["rows_in"], sink.rows, stats["bad_rows"], 0.0, metadata, prove_seconds)
