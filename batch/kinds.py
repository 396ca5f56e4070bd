"""One batch adapter per model kind and input layout: a table of input rows -> a table of answers,
computed by the service's own kind adapter (batch.serving.Scorer: prepare -> infer -> result, as
/classify and /smooth do) on the rows that can be scored.

- `RowsBatch`: any kind whose manifest lists `features` (classifier, regressor, ...): one instance
  per row; every named output becomes a column (one per label for several), and per-instance
  facts too (a classifier's `decision`, the labels whose score reaches the threshold).
- `SignalRowsBatch`: a smoother, one signal per row in a list column.
- `SeriesBatch`: a smoother in long format, one whole series (one id) at a time, sorted by time.

Bad rows (missing, non-numeric, non-finite) follow `on_bad`: "fail" raises BadRowError naming the
file, the row and the column; "skip" leaves them out; "null" keeps them with null answers. Either
way they are counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.columns import describe, feature_matrix, to_float32
from batch.errors import BadRowError, BatchError
from batch.serving import Scorer

FILE_COLUMN = "__monoserve_file"  # where a row came from: added by the local reader, dropped from the output
ROW_COLUMN = "__monoserve_row"
RAY_PATH_COLUMN = "path"  # Ray Data's include_paths column
HIDDEN = (FILE_COLUMN, ROW_COLUMN)
BAD_ROWS = ("fail", "skip", "null")


@dataclass
class Layout:
    """What the user said about the input: which columns, how to treat bad rows."""

    keep: list[str] = field(default_factory=list)
    column: str | None = None  # smoother: the list column holding one signal per row
    id: str | None = None  # smoother, long format: series id, time and value columns
    time: str | None = None
    value: str | None = None
    mode: str | None = None  # smoother edge mode (None: the model's declared default)
    on_bad: str = "fail"

    @property
    def long(self) -> bool:
        return self.id is not None


@dataclass
class Scored:
    table: pa.Table
    bad: int  # rows skipped or answered null


def where(table: pa.Table, row: int) -> str:
    """Where row `row` of `table` came from, for an error message."""
    names = table.column_names
    if FILE_COLUMN in names:
        return f"{table.column(FILE_COLUMN)[row].as_py()}, data row {table.column(ROW_COLUMN)[row].as_py()} (0-based)"
    if RAY_PATH_COLUMN in names:
        return f"{table.column(RAY_PATH_COLUMN)[row].as_py()}"
    return f"row {row}"


def _with_nulls(values: np.ndarray, good: np.ndarray, length: int) -> pa.Array:
    """`values` (one per good row) spread over `length` rows, null where a row was bad."""
    if good.all():
        return pa.array(values)
    full = np.zeros((length, *values.shape[1:]), values.dtype)
    full[good] = values
    return pa.array(full, mask=~good)


class BatchKind(ABC):
    """Scores tables of input rows with one proven version."""

    def __init__(self, scorer: Scorer, layout: Layout):
        self.scorer = scorer
        self.layout = layout
        self.check()

    @property
    def manifest(self) -> Any:
        return self.scorer.proven.manifest

    def check(self) -> None:
        """Options that cannot work with this model: BatchError before any row is read."""

    @abstractmethod
    def input_columns(self) -> list[str]:
        """The columns to read (the model's, the kept ones)."""

    @abstractmethod
    def score(self, table: pa.Table) -> Scored: ...

    def kept(self, table: pa.Table, rows: np.ndarray | None) -> dict[str, pa.Array]:
        out = {}
        for name in self.layout.keep:
            column = table.column(name)
            out[name] = column if rows is None else column.take(pa.array(np.flatnonzero(rows)))
        return out

    def bad_rows(self, table: pa.Table, bad: np.ndarray, why: Any) -> int:
        """Apply --on-bad-rows: raise for "fail", else the number of bad rows."""
        count = int(bad.sum())
        if count and self.layout.on_bad == "fail":
            row = int(np.flatnonzero(bad)[0])
            column, problem = why(row)
            raise BadRowError(f"{where(table, row)}: column {column!r}: {problem} "
                              f"(--on-bad-rows skip or null to score the other rows)")
        return count


class RowsBatch(BatchKind):
    """One instance per row: the kinds whose manifest section lists `features`."""

    # the service's output and fact names -> the column's name (a regressor keeps its own names)
    renames: ClassVar[dict[str, str]] = {}

    def check(self) -> None:
        if self.layout.column or self.layout.long:
            raise BatchError(f"model {self.manifest.name!r} is a {self.manifest.kind}: it scores one row of "
                             "features at a time (drop --column/--id/--time/--value)")
        if self.layout.mode:
            raise BatchError("--mode is a smoother's option")

    @property
    def features(self) -> list[str]:
        return [feature.name for feature in self.scorer.kind.info(self.manifest).features]

    def input_columns(self) -> list[str]:
        return list(dict.fromkeys(self.features + self.layout.keep))

    def score(self, table: pa.Table) -> Scored:
        try:
            features = feature_matrix(table, self.features)
        except KeyError as exc:
            raise BatchError(f"the input has no column(s) {exc.args[0]} (model {self.manifest.name!r} needs "
                             f"{self.features})") from None
        bad = self.bad_rows(table, features.bad, lambda row: (features.why(row).column, features.why(row).problem))
        good = ~features.bad
        skip = self.layout.on_bad == "skip"
        rows = table.num_rows
        columns: dict[str, pa.Array] = {}
        for name in self.features:
            column = table.column(name)
            columns[name] = column.take(pa.array(np.flatnonzero(good))) if skip and bad else column
        columns.update(self.kept(table, good if skip and bad else None))
        answers = self.answers(features.matrix[good] if bad else features.matrix, int(good.sum()))
        for name, values in answers.items():
            if isinstance(values, np.ndarray):
                columns[name] = pa.array(values) if skip or not bad else _with_nulls(values, good, rows)
            else:
                spread = values if skip or not bad else _spread_list(values, good)
                columns[name] = pa.array(spread, type=pa.list_(pa.string())) if _is_labels(values) else pa.array(spread)
        return Scored(pa.table(columns), bad)

    def answers(self, matrix: np.ndarray, count: int) -> dict[str, Any]:
        """Output name -> one value per row (numpy, or a list of per-instance facts)."""
        if count == 0:
            return self.empty_answers()
        result = self.scorer.run(matrix)
        return self.name_answers(result.outputs, result.facts, count)

    def empty_answers(self) -> dict[str, Any]:
        probe = np.zeros((1, len(self.features)), np.float32)
        result = self.scorer.run(probe)
        answers = self.name_answers(result.outputs, result.facts, 1)
        return {name: (values[:0] if isinstance(values, np.ndarray) else []) for name, values in answers.items()}

    def name_answers(self, outputs: dict[str, np.ndarray], facts: dict[str, Any], count: int) -> dict[str, Any]:
        labels = facts.get("labels")
        answers: dict[str, Any] = {}
        for key, values in outputs.items():
            name = self.renames.get(key, key)
            if values.ndim == 1:
                answers[name] = values
            else:
                tags = labels if isinstance(labels, list) and len(labels) == values.shape[1] else range(values.shape[1])
                for j, tag in enumerate(tags):
                    answers[f"{name}_{tag}"] = np.ascontiguousarray(values[:, j])
        for key, values in facts.items():  # per-instance facts (a classifier's decisions)
            if isinstance(values, list) and len(values) == count and key != "labels":
                answers[self.renames.get(key, key)] = values
        return answers


class ClassifierRows(RowsBatch):
    """/classify's answer per row: `score` (one column per label: `score_<label>` for several) and
    `decision` (the labels whose score reaches the model's threshold)."""

    renames = {"scores": "score", "decisions": "decision"}


def _is_labels(values: list) -> bool:
    return any(isinstance(item, list) for item in values)


def _spread_list(values: list, good: np.ndarray) -> list:
    it = iter(values)
    return [next(it) if ok else None for ok in good.tolist()]


class SignalRowsBatch(BatchKind):
    """A smoother, one signal per row in a list column -> `smoothed` (list<float32>), as /smooth
    answers that signal. Consecutive rows of one length go to the service in one [rows, L] call,
    as one /smooth request with those rows would."""

    def check(self) -> None:
        if not self.layout.column:
            raise BatchError(f"model {self.manifest.name!r} is a smoother: name the list column holding one signal "
                             "per row (--column) or the long format's --id, --time and --value")

    def input_columns(self) -> list[str]:
        return list(dict.fromkeys([self.layout.column, *self.layout.keep]))

    def score(self, table: pa.Table) -> Scored:
        name = self.layout.column
        if name not in table.column_names:
            raise BatchError(f"the input has no column {name!r}")
        column = table.column(name).combine_chunks()
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)):
            raise BatchError(f"column {name!r} is {column.type}, not a list of samples (one signal per row)")
        kernel = self.manifest.smoother.kernel_size
        mode = self.layout.mode or self.manifest.smoother.default_mode
        rows = len(column)
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = column.flatten()  # nulls of the list itself contribute nothing
        values, flat_bad, problem = to_float32(flat, name)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        if flat_bad.any():
            running = np.concatenate([[0], np.cumsum(flat_bad, dtype=np.int64)])
            element_bad = running[starts + lengths] - running[starts]  # bad samples per row
        else:
            element_bad = np.zeros(rows, np.int64)
        missing = column.is_null().to_numpy(zero_copy_only=False)
        short = lengths < (kernel if mode == "valid" else 1)
        bad = missing | short | (element_bad > 0)

        def why(row: int) -> tuple[str, str]:
            if missing[row]:
                return name, "missing (null)"
            if short[row]:
                need = f"mode 'valid' needs at least {kernel} samples" if mode == "valid" else "an empty signal"
                return name, f"{lengths[row]} samples: {need}"
            index = int(starts[row] + np.flatnonzero(flat_bad[starts[row]:starts[row] + lengths[row]])[0])
            return name, f"sample {index - starts[row]}: {describe(flat, index, problem)}"

        bad_count = self.bad_rows(table, bad, why)
        good = ~bad
        blocks: list[np.ndarray] = []  # the answers of each run, [rows of the run, L'], in row order
        answer_lengths = np.zeros(rows, np.int64)
        row = 0
        while row < rows:  # runs of consecutive good rows of one length: one service call each
            if bad[row]:
                row += 1
                continue
            end = row + 1
            while end < rows and good[end] and lengths[end] == lengths[row]:
                end += 1
            signal = values[starts[row]:starts[row] + lengths[row] * (end - row)].reshape(end - row, lengths[row])
            out = self.scorer.run(signal, mode=self.layout.mode).outputs["smoothed"]
            blocks.append(out)
            answer_lengths[row:end] = out.shape[-1]
            row = end
        skip = self.layout.on_bad == "skip" and bad_count
        columns = self.kept(table, good if skip else None)
        columns["smoothed"] = _list_column(blocks, answer_lengths[good] if skip else answer_lengths,
                                           None if skip or not bad_count else bad)
        return Scored(pa.table(columns), bad_count)


def _list_column(blocks: list[np.ndarray], lengths: np.ndarray, missing: np.ndarray | None) -> pa.Array:
    """Blocks of float32 answers (one row each) as a list<float> column, null where `missing`:
    one copy of the samples, no Python object per row."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = (np.concatenate([block.reshape(-1) for block in blocks]).astype(np.float32, copy=False) if blocks
            else np.zeros(0, np.float32))
    mask = pa.array(missing) if missing is not None else None
    if offsets[-1] >= 2**31:  # more samples in one batch than 32-bit offsets hold
        return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat), mask=mask)


class SeriesBatch(BatchKind):
    """A smoother in long format: the rows of one id, sorted by time, smoothed as one signal (as
    /smooth answers it) -> the rows with `smoothed` beside `value`. Mode "valid" has no answer for
    a series' first K-1 samples: those rows are left out (each answer sits on the time of its
    window's last sample, as in "causal")."""

    def check(self) -> None:
        layout = self.layout
        if not (layout.id and layout.time and layout.value):
            raise BatchError("the long format needs all of --id, --time and --value")
        if layout.column:
            raise BatchError("give either --column (one signal per row) or --id/--time/--value (long format)")

    def input_columns(self) -> list[str]:
        layout = self.layout
        return list(dict.fromkeys([layout.id, layout.time, layout.value, *layout.keep]))

    def score(self, table: pa.Table) -> Scored:
        """`table`: every row of one series (one id), in any order."""
        layout = self.layout
        kernel = self.manifest.smoother.kernel_size
        mode = layout.mode or self.manifest.smoother.default_mode
        if table.column(layout.id).null_count == table.num_rows:  # Ray's group of the rows with no id
            bad = np.ones(table.num_rows, bool)
            count = self.bad_rows(table, bad, lambda row: (layout.id, "missing (null): the row belongs to no series"))
            if layout.on_bad == "skip":
                return Scored(self._assemble(table, ~bad, np.zeros(0, np.float32), np.zeros(0, bool)), count)
            return Scored(self.null_rows(table), count)
        table = table.sort_by([(layout.time, "ascending")])
        value_column = table.column(layout.value).combine_chunks()
        values, bad, problem = to_float32(value_column, layout.value)
        time_missing = table.column(layout.time).is_null().to_numpy(zero_copy_only=False)
        bad = bad | time_missing

        def why(row: int) -> tuple[str, str]:
            if time_missing[row]:
                return layout.time, "missing (null)"
            return layout.value, describe(value_column, row, problem)

        bad_count = self.bad_rows(table, bad, why)
        good = ~bad
        count = int(good.sum())
        if count < (kernel if mode == "valid" else 1):
            first = table.column(layout.id)[0].as_py()
            if layout.on_bad == "fail":
                raise BadRowError(f"{where(table, 0)}: series {layout.id}={first!r} has {count} usable sample(s): "
                                  f"mode {mode!r} needs at least {kernel if mode == 'valid' else 1}")
            if layout.on_bad == "skip":
                return Scored(self._assemble(table, np.zeros(table.num_rows, bool), np.zeros(0, np.float32),
                                             np.zeros(0, bool)), table.num_rows)
            return Scored(self.null_rows(table), table.num_rows)
        smoothed = self.scorer.run(values[good], mode=layout.mode).outputs["smoothed"]
        answered = good.copy()
        if mode == "valid":  # no answer for the first K-1 good samples: their rows go
            answered[np.flatnonzero(good)[:kernel - 1]] = False
        rows = answered | (bad & (layout.on_bad == "null"))
        return Scored(self._assemble(table, rows, smoothed, answered), bad_count)

    def null_rows(self, table: pa.Table) -> pa.Table:
        """Rows kept with no answer (--on-bad-rows null), e.g. those with no id."""
        rows = np.ones(table.num_rows, bool)
        return self._assemble(table, rows, np.zeros(0, np.float32), np.zeros(table.num_rows, bool))

    def _assemble(self, table: pa.Table, rows: np.ndarray, smoothed: np.ndarray, answered: np.ndarray) -> pa.Table:
        layout = self.layout
        take = pa.array(np.flatnonzero(rows))
        columns = {name: table.column(name).take(take)
                   for name in dict.fromkeys([layout.id, layout.time, layout.value, *layout.keep])}
        columns["smoothed"] = _with_nulls(smoothed.astype(np.float32, copy=False), answered[rows], int(rows.sum()))
        return pa.table(columns)


def _smoother(layout: Layout) -> type[BatchKind]:
    return SeriesBatch if layout.long else SignalRowsBatch


# kind -> the adapter class for an input layout; a kind not listed whose manifest section lists
# `features` (e.g. a regressor) is scored row by row with the service's output names
BATCH_KINDS: dict[str, Callable[[Layout], type[BatchKind]]] = {
    "smoother": _smoother,
    "classifier": lambda layout: ClassifierRows,
}


def batch_kind(scorer: Scorer, layout: Layout) -> BatchKind:
    """The adapter for the version's kind and the input's layout."""
    kind = scorer.proven.kind
    choose = BATCH_KINDS.get(kind)
    if choose is None:
        if not hasattr(scorer.kind.info(scorer.proven.manifest), "features"):
            raise BatchError(f"model {scorer.proven.manifest.name!r} is a {kind}: batch scoring knows no input layout for it")
        return RowsBatch(scorer, layout)
    return choose(layout)(scorer, layout)
