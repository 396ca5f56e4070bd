"""Batch scoring: the service's proven models over files and folders of Parquet or CSV, on one
machine (the local engine, streaming in bounded batches) or on a Ray cluster (Ray Data).

Depends on contract and service (the service's prover, policy, signature check and kind adapters,
through batch.serving only); the service never imports this package. `run_batch(BatchJob(...))` is
the Python entry point beside `monoserve batch`.
"""

from batch.errors import BatchError
from batch.job import run_batch
from batch.spec import BatchJob, BatchSummary

__all__ = ["BatchError", "BatchJob", "BatchSummary", "run_batch"]
