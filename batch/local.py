"""The local engine: one process, one proven session, the input streamed in bounded batches.

Rows and one-signal-per-row inputs are scored batch by batch: memory holds one input batch and its
answers, whatever the input's size. The long format needs each id's rows together: a first pass
over the id column alone counts the rows of every id (memory: one count per id), the second
buffers rows until an id has all of its rows, then smooths that series and lets it go. Input whose
rows are grouped by id (any order inside a group) keeps the buffer to about one series; input whose
ids are interleaved buffers more, up to `max_buffered_rows` (then a clear error: sort it by id, or
use the Ray engine, which groups with a shuffle).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.errors import BadRowError, BatchError
from batch.kinds import FILE_COLUMN, ROW_COLUMN, BatchKind, Layout, where
from batch.output import Sink
from batch.sources import Source

log = logging.getLogger(__name__)


def located(path: Path, offset: int, table: pa.Table) -> pa.Table:
    """The batch with where each row came from (file, row index in it), for error messages."""
    rows = table.num_rows
    files = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array([str(path)]))
    return table.append_column(FILE_COLUMN, files).append_column(ROW_COLUMN, pa.array(np.arange(offset, offset + rows)))


class Progress:
    """rows, rows/s and ETA on stderr (tqdm when the terminal shows it, a log line per ~10 s otherwise)."""

    def __init__(self, total: int | None, label: str):
        self.total, self.label, self.done = total, label, 0
        self.start = self.last_log = time.perf_counter()
        try:
            from tqdm import tqdm

            self.bar: Any = tqdm(total=total, unit=" rows", unit_scale=True, desc=label, disable=None, mininterval=0.5)
            if self.bar.disable:
                self.bar = None
        except ImportError:
            self.bar = None

    def update(self, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
            return
        now = time.perf_counter()
        if now - self.last_log >= 10:
            self.last_log = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = f", ETA {(self.total - self.done) / rate:.0f} s" if self.total and rate > 0 else ""
            log.info("%s: %d%s rows, %.0f rows/s%s", self.label, self.done,
                     f" of {self.total}" if self.total else "", rate, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Pending:
    """Answer tables gathered until they make one batch (or MAX_PENDING_BYTES, for long signals):
    few, large row groups in the output, and bounded memory."""

    MAX_PENDING_BYTES = 64 * 2**20

    def __init__(self, sink: Sink, rows: int):
        self.sink, self.rows, self.tables, self.count, self.bytes = sink, rows, [], 0, 0

    def add(self, table: pa.Table) -> None:
        self.tables.append(table)
        self.count += table.num_rows
        self.bytes += table.nbytes
        if self.count >= self.rows or self.bytes >= self.MAX_PENDING_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.tables:
            self.sink.write(pa.concat_tables(self.tables, promote_options="permissive") if len(self.tables) > 1
                            else self.tables[0])
            self.tables, self.count, self.bytes = [], 0, 0


def run_local(adapter: BatchKind, source: Source, sink: Sink, batch_rows: int, max_buffered_rows: int) -> dict[str, int]:
    """Score the whole input into `sink` (not committed here). Returns rows read, written, bad."""
    progress = Progress(source.rows(), "batch")
    pending = Pending(sink, batch_rows)
    stats = {"rows_in": 0, "bad_rows": 0}
    try:
        scored_tables = (_series(adapter, source, batch_rows, max_buffered_rows, stats, progress) if adapter.layout.long
                         else _rows(adapter, source, batch_rows, stats, progress))
        for table in scored_tables:
            pending.add(table)
        pending.flush()
    finally:
        progress.close()
    return stats


def _numeric(adapter: BatchKind) -> list[str]:
    layout: Layout = adapter.layout
    if layout.long:
        return [layout.value]
    if layout.column:
        return []
    return getattr(adapter, "features", [])


def _rows(adapter: BatchKind, source: Source, batch_rows: int, stats: dict[str, int], progress: Progress) -> Iterator[pa.Table]:
    for path, offset, table in source.batches(adapter.input_columns(), _numeric(adapter), batch_rows):
        scored = adapter.score(located(path, offset, table))
        stats["rows_in"] += table.num_rows
        stats["bad_rows"] += scored.bad
        progress.update(table.num_rows)
        yield scored.table


def _id_counts(adapter: BatchKind, source: Source, batch_rows: int, stats: dict[str, int]) -> dict[Any, int]:
    """Pass one: the number of rows of every id (nulls: bad rows, handled here)."""
    name = adapter.layout.id
    counts: dict[Any, int] = {}
    for path, offset, table in source.batches([name], [], batch_rows):
        column = table.column(name)
        nulls = column.null_count
        if nulls:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            if adapter.layout.on_bad == "fail":
                raise BadRowError(f"{where(located(path, offset, table), row)}: column {name!r}: missing (null): "
                                  "the row belongs to no series (--on-bad-rows skip to leave it out)")
            stats["bad_rows"] += nulls
        for item in column.value_counts().to_pylist():
            if item["values"] is not None:
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    return counts


def _series(adapter: BatchKind, source: Source, batch_rows: int, max_buffered_rows: int, stats: dict[str, int],
            progress: Progress) -> Iterator[pa.Table]:
    name = adapter.layout.id
    expected = _id_counts(adapter, source, batch_rows, stats)
    buffers: dict[Any, list[pa.Table]] = {}
    held: dict[Any, int] = {}
    buffered = 0
    for path, offset, table in source.batches(adapter.input_columns(), _numeric(adapter), batch_rows):
        table = located(path, offset, table)
        stats["rows_in"] += table.num_rows
        progress.update(table.num_rows)
        ids = table.column(name)
        if ids.null_count:  # counted in pass one; "null" keeps them with no answer
            if adapter.layout.on_bad == "null":
                orphans = table.filter(ids.is_null())
                yield adapter.null_rows(orphans) if hasattr(adapter, "null_rows") else orphans.slice(0, 0)
            table = table.filter(pc.is_valid(ids))
            ids = table.column(name)
        codes = pc.dictionary_encode(ids).combine_chunks()
        order = np.argsort(codes.indices.to_numpy(zero_copy_only=False), kind="stable")
        sorted_codes = codes.indices.to_numpy(zero_copy_only=False)[order]
        starts = np.flatnonzero(np.diff(sorted_codes, prepend=-1))
        ends = np.append(starts[1:], len(order))
        dictionary = codes.dictionary.to_pylist()
        for start, end in zip(starts, ends):
            key = dictionary[sorted_codes[start]]
            part = table.take(pa.array(order[start:end]))
            buffers.setdefault(key, []).append(part)
            held[key] = held.get(key, 0) + part.num_rows
            buffered += part.num_rows
            if held[key] == expected[key]:
                series = pa.concat_tables(buffers.pop(key))
                buffered -= held.pop(key)
                scored = adapter.score(series)
                stats["bad_rows"] += scored.bad
                yield scored.table
        if buffered > max_buffered_rows:
            raise BatchError(f"the long-format input interleaves its ids: {buffered} rows of {len(buffers)} unfinished "
                             f"series are held, more than --max-buffered-rows {max_buffered_rows}; sort the input by "
                             f"{name!r} (or group each id's rows together), or use --engine ray")
    if buffers:  # the input changed between the passes
        raise BatchError(f"the input changed while it was read: series {list(buffers)[:5]} are incomplete")
