"""The output, never half-written: rows go to a temporary file beside the output path, which is
renamed onto it only when the whole run succeeded; a failed or interrupted run removes it.

Parquet carries the run's metadata (model, version, artifact digest, proof) in its schema metadata
under b"monoserve"; CSV cannot, so a sidecar `OUTPUT.monoserve.json` is published with it (before
it: the data file appearing is the sign that the run completed).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batch.errors import BatchError

log = logging.getLogger(__name__)

METADATA_KEY = b"monoserve"
SIDECAR_SUFFIX = ".monoserve.json"


def temporary_beside(path: Path) -> Path:
    """A hidden name in the output's folder: the final rename stays on one filesystem (atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def output_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise BatchError(f"output {str(path)!r}: name a .parquet or .csv file")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The run's metadata from an output written by batch (Parquet file or folder, or CSV)."""
    path = Path(path)
    if path.is_dir():
        return json.loads((path / "_monoserve.json").read_text())
    if output_format(path) == "csv":
        return json.loads(Path(str(path) + SIDECAR_SUFFIX).read_text())
    # the file's key-value metadata: the schema's, completed with the run's counts at the end
    return json.loads(pq.read_metadata(path).metadata[METADATA_KEY])


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Dictionary-encode text columns only: on floats (scores, features) Parquet's dictionary attempt
    fails after costing most of the write (measured: 5x slower writes, docs/performance.md)."""
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            or pa.types.is_dictionary(f.type)]


def _lists_as_json(table: pa.Table) -> pa.Table:
    """CSV has no lists: a list column (a classifier's decisions) is written as JSON text, e.g. ["spam"]."""
    for index, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            text = [None if item is None else json.dumps(item) for item in table.column(index).to_pylist()]
            table = table.set_column(index, field.name, pa.array(text, pa.string()))
    return table


class Sink:
    """Writes tables to the temporary file; `commit` publishes it, `abort` removes it."""

    def __init__(self, path: str | Path, metadata: dict[str, Any]):
        self.path = Path(path)
        self.format = output_format(self.path)
        if not self.path.parent.is_dir():
            raise BatchError(f"output folder {str(self.path.parent)!r} does not exist")
        if self.path.is_dir():
            raise BatchError(f"output {str(self.path)!r} is a folder: name a file")
        self.metadata = metadata
        self.temporary = temporary_beside(self.path)
        self.writer: Any = None
        self.schema: pa.Schema | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self._open(table.schema)
        assert self.schema is not None
        if table.schema != self.schema:
            try:
                table = table.cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise BatchError(f"the input's columns change type between batches or files: {exc}") from None
        if self.format == "csv":
            table = _lists_as_json(table)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def _open(self, schema: pa.Schema) -> None:
        if self.format == "parquet":
            self.schema = schema.with_metadata({METADATA_KEY: json.dumps(self.metadata).encode()})
            self.writer = pq.ParquetWriter(self.temporary, self.schema, use_dictionary=dictionary_columns(schema))
        else:
            self.schema = schema
            self.writer = pacsv.CSVWriter(str(self.temporary), _lists_as_json(schema.empty_table()).schema)

    def commit(self, empty_schema: pa.Schema | None = None) -> None:
        if self.writer is None:
            if empty_schema is None:
                raise BatchError("nothing to write: the input holds no rows")
            self._open(empty_schema)
        if self.format == "parquet":
            self.writer.add_key_value_metadata({METADATA_KEY.decode(): json.dumps(self.metadata)})
        self.writer.close()
        if self.format == "csv":
            sidecar = Path(str(self.path) + SIDECAR_SUFFIX)
            staged = temporary_beside(sidecar)
            staged.write_text(json.dumps(self.metadata, indent=2))
            os.replace(staged, sidecar)
        os.replace(self.temporary, self.path)
        log.info("wrote %d rows to %s", self.rows, self.path)

    def abort(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        except Exception:  # noqa: BLE001 - removing the file is what matters
            pass
        self.temporary.unlink(missing_ok=True)
