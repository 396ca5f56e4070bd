"""Batch scoring: the service's proven models over files and folders of Parquet or CSV, on one
machine (the local engine, streaming in bounded batches) or on a Ray cluster (Ray Data).

Depends on contract and service (the service's prover, policy, signature check and kind adapters,
through batch.serving only); the service never imports this package. `run_batch(BatchJob(...))` is
the Python entry point beside `monoserve batch`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Loaded on first use (PEP 562): `monoserve --help` imports batch.cli, which must not need pyarrow,
# so that the console script works where the `batch` extra is not installed (the serving image).
_EXPORTS = {"BatchError": "batch.errors", "run_batch": "batch.job", "BatchJob": "batch.spec",
            "BatchSummary": "batch.spec"}

__all__ = ["BatchError", "BatchJob", "BatchSummary", "run_batch"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'batch' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
