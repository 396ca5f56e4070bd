"""A value computed once per served version and dropped with it (the console's figures, the
explainer's additive form): keyed by the version object's identity, held only while it lives."""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class PerVersion(Generic[T]):
    def __init__(self) -> None:
        self._values: dict[int, tuple[weakref.ref, T]] = {}
        self._lock = threading.Lock()

    def get(self, served: Any, compute: Callable[[Any], T]) -> T:
        """The value for `served`, computed by `compute(served)` the first time (outside the lock:
        two threads may both compute it once; either answer is kept)."""
        key = id(served)
        with self._lock:
            cached = self._values.get(key)
            if cached is not None and cached[0]() is served:
                return cached[1]
        value = compute(served)
        with self._lock:
            self._values[key] = (weakref.ref(served, lambda _ref, key=key: self._drop(key)), value)
        return value

    def _drop(self, key: int) -> None:
        with self._lock:
            self._values.pop(key, None)
