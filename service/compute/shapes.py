"""The shapes a smoother's signal may take, one rule for every transport.

One-shot /smooth (JSON or .npy), OIP REST and gRPC, and every stream transport (WebSocket frames,
/smooth with a carried state, gRPC sequence chunks) accept the same nestings of a signal:

    [L]        one channel
    [C, L]     C channels
    [B, C, L]  B signals of C channels: the model's declared input shape, [-1, -1, -1] in its OIP
               metadata (what tritonclient users send after reading it)

and answer in the nesting they were sent. A stream treats a chunk's leading dimensions as its rows
(B x C channels, fixed by the first chunk); anything else is refused with the same reason
wherever it arrives (`rank_error`).
"""

from __future__ import annotations

import numpy as np

from service.base.errors import BadRequestError, PayloadTooLargeError

SIGNAL_NESTINGS = "[L], [C, L] or [B, C, L]"
MAX_SIGNAL_DIMS = 3


def rank_error(shape: tuple[int, ...], field: str = "signal") -> BadRequestError:
    """The one refusal of a signal with a rank that no transport accepts."""
    return BadRequestError(f"'{field}' must have 1 to 3 dimensions ({SIGNAL_NESTINGS}), got {len(shape)} "
                           f"(shape {list(shape)})", field=field, shape=list(shape))


def check_rank(array: np.ndarray, field: str = "signal") -> None:
    if not 1 <= array.ndim <= MAX_SIGNAL_DIMS:
        raise rank_error(array.shape, field)


def rows_of(shape: tuple[int, ...]) -> int:
    """The channel rows a signal of `shape` holds (its leading dimensions' product; 1 for [L])."""
    rows = 1
    for dim in shape[:-1]:
        rows *= int(dim)
    return rows


def as_rows(array: np.ndarray) -> np.ndarray:
    """A signal of any accepted nesting as [rows, L] (a view when it can be)."""
    return array.reshape(rows_of(array.shape), array.shape[-1])


def nested(rows: np.ndarray, lead: tuple[int, ...]) -> np.ndarray:
    """An answer [rows, m] in the nesting `lead` (a chunk's leading dimensions) it was asked in."""
    return rows.reshape(*lead, rows.shape[-1])


def check_length(length: int, limit: int, field: str = "signal") -> None:
    """The per-request signal length limit (MONOSERVE_MAX_SIGNAL_LENGTH), for a one-shot signal and
    for each chunk of a stream alike: 413."""
    if length > limit:
        raise PayloadTooLargeError(f"signal length {length} exceeds the limit of {limit} samples",
                                   field=field, limit=limit)
