"""CSV loading and validation for training (stdlib csv + numpy; no torch, no pandas).

Every problem raises `DataError` with a message naming the file, the column and the offending rows,
so the CLI can print it and exit 2 before anything is trained or written.
Rows are reported as 1-based line numbers of the file (the header is line 1).
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# Shown per problem; the count is always exact.
MAX_ROWS_SHOWN = 10

# Columns that index a series rather than measure it: left out when no --column is given.
INDEX_COLUMN_NAMES = frozenset({"time", "date", "year", "index", "t", "timestamp"})

# Cells that mark a gap in a series when gaps are allowed (--fill); compared lower-cased.
GAP_CELLS = frozenset({"", "na", "nan", "null", "none"})


class DataError(ValueError):
    """Bad training data or arguments that refer to it (missing file/column, bad values, ...)."""


@dataclass
class Table:
    path: Path
    columns: list[str]  # header, in file order
    rows: list[list[str]]  # raw cells; rows[i] is on line i + 2 of the file
    sha256: str

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    def require_columns(self, names: Sequence[str], what: str = "column") -> None:
        missing = [name for name in names if name not in self.columns]
        if missing:
            raise DataError(
                f"{self.path}: unknown {what}{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(m) for m in missing)}; the file has columns {', '.join(self.columns)}"
            )

    def numeric(self, name: str, gaps: bool = False) -> np.ndarray:
        """Column `name` as float64; every cell must be a finite number. With `gaps`, empty, NA and
        NaN cells are accepted and come back as NaN (for the caller to fill or drop)."""
        self.require_columns([name])
        index = self.columns.index(name)
        values = np.empty(self.n_rows, dtype=np.float64)
        bad_cells: list[tuple[int, str]] = []
        for row_number, row in enumerate(self.rows):
            cell = row[index].strip()
            if gaps and cell.lower() in GAP_CELLS:
                values[row_number] = math.nan
                continue
            try:
                values[row_number] = float(cell)
            except ValueError:
                bad_cells.append((row_number + 2, cell))
                values[row_number] = math.nan
        if bad_cells:
            shown = ", ".join(f"line {line} ({cell!r})" for line, cell in bad_cells[:MAX_ROWS_SHOWN])
            raise DataError(
                f"{self.path}: column {name!r} has {len(bad_cells)} non-numeric value(s): {shown}"
                + (" ..." if len(bad_cells) > MAX_ROWS_SHOWN else "")
            )
        not_finite = np.flatnonzero(np.isinf(values) if gaps else ~np.isfinite(values))
        if not_finite.size:
            shown = ", ".join(f"line {i + 2} ({self.rows[i][index].strip()})" for i in not_finite[:MAX_ROWS_SHOWN])
            raise DataError(
                f"{self.path}: column {name!r} has {not_finite.size} NaN/Inf value(s): {shown}"
                + (" ..." if not_finite.size > MAX_ROWS_SHOWN else "")
            )
        return values

    def matrix(self, names: Sequence[str], gaps: bool = False) -> np.ndarray:
        """Columns `names` as a float64 array [n_rows, len(names)] (NaN for gaps when `gaps`)."""
        self.require_columns(names)
        if not names:
            return np.empty((self.n_rows, 0))
        return np.stack([self.numeric(name, gaps) for name in names], axis=1)

    def provenance(self) -> dict:
        return {"data_file": self.path.name, "data_path": str(self.path), "sha256": self.sha256, "n_rows": self.n_rows}


def read_table(path: str | Path) -> Table:
    """Read a CSV file with a header row. Raises DataError for a missing, empty or ragged file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from exc
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty (expected a header row and data rows)") from None
    header = [name.strip() for name in header]
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate column name(s) in the header: {', '.join(duplicates)}")
    rows: list[list[str]] = []
    ragged: list[int] = []
    for line_number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            ragged.append(line_number)
        rows.append(row)
    if ragged:
        shown = ", ".join(str(line) for line in ragged[:MAX_ROWS_SHOWN])
        raise DataError(
            f"{path}: {len(ragged)} row(s) do not have {len(header)} fields like the header: line(s) {shown}"
            + (" ..." if len(ragged) > MAX_ROWS_SHOWN else "")
        )
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return Table(path=path, columns=header, rows=rows, sha256=hashlib.sha256(raw).hexdigest())


def binary_labels(table: Table, names: Sequence[str]) -> np.ndarray:
    """Label columns as float32 [n_rows, n_labels] of 0/1; each must hold both classes."""
    columns = []
    for name in names:
        values = table.numeric(name)
        not_binary = np.flatnonzero((values != 0.0) & (values != 1.0))
        if not_binary.size:
            shown = ", ".join(f"line {i + 2} ({values[i]:g})" for i in not_binary[:MAX_ROWS_SHOWN])
            raise DataError(f"{table.path}: label column {name!r} must hold 0 or 1, got {not_binary.size} other value(s): {shown}")
        classes = np.unique(values)
        if classes.size < 2:
            raise DataError(
                f"{table.path}: label column {name!r} has a single class ({classes[0]:g} in all {table.n_rows} rows); "
                "a classifier needs both 0 and 1"
            )
        columns.append(values)
    return np.stack(columns, axis=1).astype(np.float32)


def default_series_columns(table: Table, exclude: Sequence[str] = ()) -> list[str]:
    """Every column but index-like ones (time, date, year, ...) and `exclude`."""
    names = [c for c in table.columns if c.lower() not in INDEX_COLUMN_NAMES and c not in exclude]
    if not names:
        raise DataError(f"{table.path}: no series column left (columns: {', '.join(table.columns)}); pass --column NAME")
    return names


def split_indices(n_rows: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A seeded random partition of row indices into train / val / test (each sorted)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = max(1, int(round(n_rows * test_fraction)))
    n_val = max(1, int(round(n_rows * val_fraction)))
    assert n_rows - n_test - n_val >= 1, f"{n_rows} rows are too few for a train/val/test split"
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


def fill_gaps(values: np.ndarray, how: str, path: Path, names: Sequence[str]) -> tuple[np.ndarray, dict]:
    """values [L, C] with NaN gaps -> (filled values, what was done).

    interpolate: linear in the row index, per column (gaps at either end take the nearest value);
    drop: remove every row with a gap in any column. A column with no value at all is an error.
    """
    missing = np.isnan(values)
    rows_with_gaps = np.flatnonzero(missing.any(axis=1))
    info = {"fill": how, "rows_with_gaps": int(rows_with_gaps.size),
            "lines": [int(i + 2) for i in rows_with_gaps[:MAX_ROWS_SHOWN]]}
    if not rows_with_gaps.size:
        return values, info
    empty = [name for name, column in zip(names, missing.T) if column.all()]
    if empty:
        raise DataError(f"{path}: column(s) {', '.join(repr(n) for n in empty)} have no value at all")
    if how == "drop":
        return values[~missing.any(axis=1)], info
    filled = values.copy()
    positions = np.arange(values.shape[0])
    for column in range(values.shape[1]):
        known = ~missing[:, column]
        filled[:, column] = np.interp(positions, positions[known], values[known, column])
    return filled, info
