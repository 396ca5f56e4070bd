"""Arrow columns -> float32 arrays, with the rows that cannot be scored found and named.

A row is bad when a feature is missing (null), not a number (a string that does not parse, a
boolean, ...) or not finite once in float32 (NaN, Inf, or beyond float32's range): the same values
/classify and /smooth refuse with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# a decimal number as text (what CSV readers write), surrounding blanks allowed
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass
class Bad:
    """Why one row cannot be scored: the first bad column, and what is wrong with it."""

    column: str
    problem: str


def to_float32(column: pa.Array | pa.ChunkedArray, name: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(values float32, bad mask, the problem common to the bad rows or None)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    missing = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else np.zeros(len(column), bool)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        # no nulls (the common case): numpy reads the buffer as it is, no fill, no cast in Arrow
        values = (column if column.null_count == 0 else pc.fill_null(column, 0)).to_numpy(zero_copy_only=False)
        problem = None
    elif pa.types.is_decimal(kind):
        values = pc.cast(pc.fill_null(column, 0), pa.float64()).to_numpy(zero_copy_only=False)
        problem = None
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        numeric = pc.fill_null(pc.match_substring_regex(column, _NUMBER), False).to_numpy(zero_copy_only=False)
        text = pc.if_else(pa.array(numeric), pc.utf8_trim_whitespace(column), pa.scalar("0"))
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        missing = missing | ~numeric
        problem = "not a number"
    else:
        return np.zeros(len(column), np.float32), np.ones(len(column), bool), f"not a number (type {kind})"
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(values, dtype=np.float32)
    bad = missing | ~np.isfinite(out)
    return out, bad, problem


def describe(column: pa.Array, index: int, problem: str | None) -> str:
    """What is wrong with one value, for an error message."""
    value = column[index].as_py() if index < len(column) else None
    if value is None:
        return "missing (null)"
    if problem:
        return f"{problem}: {str(value)[:40]!r}"
    return f"not a finite float32: {value!r}"


@dataclass
class Features:
    """A batch's features as the model takes them, and which rows cannot be scored (and why)."""

    matrix: np.ndarray  # [N, F] float32 in the manifest's feature order
    bad: np.ndarray  # [N] bool
    first_bad_column: np.ndarray  # [N] int: index of the first bad feature of a row, -1 when none
    columns: list[pa.Array]
    names: list[str]
    problems: list[str | None]

    def why(self, row: int) -> Bad:
        j = int(self.first_bad_column[row])
        return Bad(self.names[j], describe(self.columns[j], row, self.problems[j]))


def feature_matrix(table: pa.Table, names: list[str]) -> Features:
    """The named columns of `table` as [N, F] float32 (a KeyError lists the missing ones)."""
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise KeyError(missing)
    rows = table.num_rows
    matrix = np.empty((rows, len(names)), np.float32, order="F")  # column by column: contiguous writes
    first = np.full(rows, -1, np.int64)
    columns, problems = [], []
    for j, name in enumerate(names):
        column = table.column(name).combine_chunks()
        values, column_bad, problem = to_float32(column, name)
        matrix[:, j] = values
        first[column_bad & (first < 0)] = j
        columns.append(column)
        problems.append(problem)
    return Features(np.ascontiguousarray(matrix), first >= 0, first, columns, list(names), problems)
