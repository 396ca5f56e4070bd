"""service.compute.per_version: one value per live version object, computed once, dropped with it."""

from __future__ import annotations

import gc

from service.compute.per_version import PerVersion


class Version:  # any object a weak reference can point at, as ProvenVersion
    pass


def test_a_value_is_computed_once_per_version_and_dropped_with_it():
    cache: PerVersion[int] = PerVersion()
    calls: list[int] = []

    def compute(version: Version) -> int:
        calls.append(id(version))
        return len(calls)

    first, second = Version(), Version()
    assert cache.get(first, compute) == 1 and cache.get(first, compute) == 1
    assert cache.get(second, compute) == 2 and len(calls) == 2
    del first
    gc.collect()
    assert len(cache._values) == 1  # the dead version's value went with it
    assert cache.get(second, compute) == 2 and len(calls) == 2
