"""What the layers above hand a model kind and get back: the decoded request (`InferRequest`), the
kind's answer (`InferResult`), and the request's limits and share of the in-flight budget (`Limits`,
`MemoryBudget`), which a kind's `prepare` counts its allocations against.

They live in the compute room because it is the lowest that needs them (service.compute.kinds);
the pipeline (service.pipeline.endpoint) and every protocol adapter use them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from service.base.errors import OverloadedError, PayloadTooLargeError

if TYPE_CHECKING:
    from service.compute.version import ProvenVersion


@dataclass
class InferRequest:
    """A decoded request: what to run (kind, model, version), on what (float32 arrays), how (params)."""

    kind: str | None  # the kind the route serves; None: whatever kind the named model is
    model: str | None = None
    version: int | None = None
    inputs: np.ndarray | None = None  # float32, as sent (the kind checks its rank and shape)
    records: list[dict[str, Any]] | None = None  # classifier instances keyed by feature name
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {"mode": "causal"}
    context: dict[str, Any] = field(default_factory=dict)  # the adapter's own (e.g. the answer's format)


@dataclass
class InferResult:
    """What a model kind answers: named output arrays and the facts a client needs beside them."""

    served: ProvenVersion
    outputs: dict[str, np.ndarray]
    facts: dict[str, Any] = field(default_factory=dict)  # e.g. {"mode": "same"}, {"labels": [...], "threshold": t}


# -- limits -----------------------------------------------------------------------------------
class MemoryBudget:
    """Bytes held by requests in flight, across all of them (one per worker process).

    A request reserves its body before reading it and its estimated working memory before
    allocating arrays; it gives both back when it is answered. Single event loop: no lock needed.
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.used = 0
        self.peak = 0

    def try_reserve(self, amount: int) -> bool:
        if self.used + amount > self.capacity:
            return False
        self.used += amount
        self.peak = max(self.peak, self.used)
        return True

    def release(self, amount: int) -> None:
        self.used -= amount


RETRY_AFTER_S = "1"


class Limits:
    """One request's limits and its share of the in-flight budget (released by `close`)."""

    def __init__(self, budget: MemoryBudget, max_elements: int, max_rows: int, max_signal_length: int):
        self.budget = budget
        self.max_elements = max_elements
        self.max_rows = max_rows
        self.max_signal_length = max_signal_length
        self.reserved = 0
        self.prepaid = 0  # working memory reserved with the body, counted against later `admit`s

    def reserve(self, amount: int, what: str | tuple[str, int]) -> None:
        """Reserve `amount` bytes: 413 if it could never fit, 503 + Retry-After if not now.

        Both keep the connection: uvicorn discards the unread rest of the body after the answer
        (bounded memory), so the client reads a clear answer instead of a reset mid-upload. Only a
        declared length over max_body_bytes and a body timeout close the connection."""
        if amount <= 0:
            return
        if amount <= self.budget.capacity and self.budget.try_reserve(amount):
            self.reserved += amount
            return
        if isinstance(what, tuple):  # (field, values): the message is built only for a refusal
            what = f"'{what[0]}' ({what[1]} values)"
        if amount > self.budget.capacity:
            raise PayloadTooLargeError(
                f"{what} needs about {amount / 2**20:.0f} MiB, more than the service's in-flight memory budget "
                f"of {self.budget.capacity / 2**20:.0f} MiB: send a smaller request (or .npy instead of JSON)",
                limit=self.budget.capacity)
        raise OverloadedError(
            f"the service is busy: {self.budget.used / 2**20:.0f} of {self.budget.capacity / 2**20:.0f} MiB "
            f"of its in-flight memory budget are in use; retry shortly",
            headers={"Retry-After": RETRY_AFTER_S})

    def admit(self, elements: int, bytes_per_element: int, field_name: str, extra_bytes: int = 0) -> None:
        """Before allocating `elements` values: the per-request element limit (413), then the budget."""
        if elements > self.max_elements:
            raise PayloadTooLargeError(
                f"'{field_name}' holds {elements} values, more than the limit of {self.max_elements} per request",
                field=field_name, limit=self.max_elements)
        self.spend(elements * bytes_per_element + extra_bytes, (field_name, elements))

    def spend(self, amount: int, what: str | tuple[str, int]) -> None:
        """Reserve `amount` bytes, drawing first on the working memory reserved with the body."""
        covered = min(amount, self.prepaid)
        self.prepaid -= covered
        self.reserve(amount - covered, what)

    def check_rows(self, rows: int, field_name: str) -> None:
        if rows > self.max_rows:
            raise PayloadTooLargeError(f"'{field_name}' has {rows} rows, more than the limit of {self.max_rows} per request",
                                       field=field_name, limit=self.max_rows)

    def close(self) -> None:
        self.budget.release(self.reserved)
        self.reserved = 0
