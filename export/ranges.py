"""Feature ranges for the manifest (`feature_ranges`): where POST /explain searches and bounds.

A checkpoint's training records each feature's [min, max] over its training split in its
provenance (`feature_ranges`); a declaration (contract.spec) may give them for a user's own model.
Checked here, before any work, so a bad range refuses the export instead of a half-made manifest.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from contract.manifest import FeatureRange
from export.errors import ExportInputError


def feature_ranges(raw: Mapping[str, Any] | None, features: Sequence[str], source: str) -> dict[str, FeatureRange] | None:
    """{name: FeatureRange} from {name: [low, high]} (None when nothing is given); ExportInputError
    naming the feature when a name is unknown or a range is not two finite numbers low <= high."""
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise ExportInputError(f"{source}: feature ranges must map feature names to [low, high], got {type(raw).__name__}")
    ranges: dict[str, FeatureRange] = {}
    for name, pair in raw.items():
        if name not in features:
            raise ExportInputError(f"{source}: feature range for unknown feature {name!r}; features are {list(features)}")
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)):
            raise ExportInputError(f"{source}: the range of feature {name!r} must be two finite numbers [low, high], "
                                   f"got {pair!r}"[:300])
        low, high = float(pair[0]), float(pair[1])
        if low > high:
            raise ExportInputError(f"{source}: the range of feature {name!r} has low {low:g} > high {high:g}")
        ranges[name] = FeatureRange(low=low, high=high)
    return ranges
