"""The declaration of a user's own model ("spec"): what `monoserve export --module` and `monoserve import` need.

A small TOML file (or the same keys as a dict in Python) with no tensor names, locations, checksums
or probes in it: the export finds those on its own (docs/export.md, "Bring your own model").

    # classifier                                  # smoother
    kind = "classifier"                           kind = "smoother"
    features = ["age", "income"]                  mode = "same"        # valid | same | causal
    labels = ["default"]                          normalized = true
    output = "logits"          # or "probabilities"     padding = "zeros"   # replicate | zeros | reflect | circular
    monotone = "final"         # "all" | "final" | {age = 1, income = -1}
    threshold = 0.5            # optional
    ranges = {age = [18, 90]}  # optional: each feature's range for POST /explain

Unknown keys, missing keys and wrong types raise SpecError naming the key (the CLI exits 2).
pydantic and the stdlib only: no torch, so the service side may read a declaration too.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator


class SpecError(ValueError):
    """The declaration is missing, unreadable or invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Direction = Literal[1, -1, 0]
DIRECTION_WORDS: dict[int, str] = {1: "increasing", -1: "decreasing", 0: "free"}


class ClassifierSpec(_Strict):
    """A classifier [N, F] -> [N, L] whose output layer (or every layer) is nonnegative."""

    kind: Literal["classifier"]
    features: list[str] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    # "logits": the module's outputs are logits (trained with BCEWithLogitsLoss): a Sigmoid is added;
    # "probabilities": the module already ends in a sigmoid.
    output: Literal["logits", "probabilities"]
    # "final": only the output layer is nonnegative (the score rises with that layer's input);
    # "all": every feature is proven non-decreasing; a table: each feature's direction (1, -1, 0 = free).
    monotone: Literal["all", "final"] | dict[str, Direction]
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    # Optional: [low, high] per feature, the range POST /explain searches and bounds over (the
    # manifest's feature_ranges); a trained checkpoint's come from its training data instead.
    ranges: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] | None = None

    @field_validator("features", "labels")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or not name.strip():
                raise ValueError("names must not be empty")
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"names must be unique; repeated: {doubled}")
        return names

    @field_validator("monotone")
    @classmethod
    def _monotone_names_features(cls, monotone: Any, info: ValidationInfo) -> Any:
        features = info.data.get("features")
        if isinstance(monotone, dict) and features is not None:
            unknown = [name for name in monotone if name not in features]
            if unknown:
                raise ValueError(f"names {unknown}, which are not among features {features}")
        return monotone

    @field_validator("ranges")
    @classmethod
    def _ranges_name_features(cls, ranges: Any, info: ValidationInfo) -> Any:
        features = info.data.get("features")
        if ranges is None or features is None:
            return ranges
        unknown = [name for name in ranges if name not in features]
        if unknown:
            raise ValueError(f"names {unknown}, which are not among features {features}")
        for name, (low, high) in ranges.items():
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"the range of {name!r} must be finite with low <= high, got [{low}, {high}]")
        return ranges

    @property
    def scope(self) -> str:
        return "final" if self.monotone == "final" else "all"

    def directions(self) -> list[str]:
        """Each feature's direction word, as the manifest writes it ("free" for every feature in scope final)."""
        if self.monotone == "final":
            return ["free"] * len(self.features)
        if self.monotone == "all":
            return ["increasing"] * len(self.features)
        return [DIRECTION_WORDS[self.monotone.get(name, 0)] for name in self.features]


class RegressorSpec(_Strict):
    """A regressor [N, F] -> [N, 1] (trees, linear, neural), monotone in the features the table names."""

    kind: Literal["regressor"]
    features: list[str] = Field(min_length=1)
    # "all": every feature proven non-decreasing; a table: each feature's direction (1, -1, 0 = free)
    monotone: Literal["all"] | dict[str, Direction]
    nonnegative: bool = False  # every score >= 0, proven from the graph's bounds

    _names = field_validator("features")(ClassifierSpec._names.__func__)
    _monotone_names_features = field_validator("monotone")(ClassifierSpec._monotone_names_features.__func__)

    def directions(self) -> list[str]:
        if self.monotone == "all":
            return ["increasing"] * len(self.features)
        return [DIRECTION_WORDS[self.monotone.get(name, 0)] for name in self.features]


class SmootherSpec(_Strict):
    """A depthwise FIR filter: one shared, positive, non-decreasing kernel applied to every channel."""

    kind: Literal["smoother"]
    # How the module aligns its output: valid (L - K + 1 samples, no padding), same (centred,
    # edges replicated), causal (output[t] from x[<= t], left edge replicated); contract.modes.
    mode: Literal["valid", "same", "causal"]
    normalized: bool  # the kernel sums to 1
    # How the module pads the signal's edges (contract.padding): served exactly as declared.
    padding: Literal["replicate", "zeros", "reflect", "circular"] = "replicate"


Spec = Annotated[Union[ClassifierSpec, RegressorSpec, SmootherSpec], Field(discriminator="kind")]
SPECS = (ClassifierSpec, RegressorSpec, SmootherSpec)
_ADAPTER: TypeAdapter = TypeAdapter(Spec)


def _key(location: tuple) -> str:
    parts = [str(part) for part in location if part not in ("classifier", "regressor", "smoother")]
    # a union member's tag ('literal['all','final']', 'dict[str,...]') is not the user's key
    parts = [p for p in parts if not p.startswith(("literal[", "dict["))]
    return ".".join(parts) or "(top level)"


def _explain(error: ValidationError, source: str) -> str:
    seen: dict[str, str] = {}
    for item in error.errors():
        tags = [str(part) for part in item["loc"]]
        # a union's other member: 'all'/'final' when a table was given, a table when a word was
        if any(t.startswith("literal[") for t in tags) and isinstance(item.get("input"), dict):
            continue
        if tags and tags[-1].startswith("dict[") and not isinstance(item.get("input"), dict):
            continue
        key = _key(item["loc"])
        kind = item["type"]
        if kind == "missing":
            message = "missing (required)"
        elif kind == "extra_forbidden":
            message = "unknown key (not part of the declaration; docs/export.md lists the keys)"
        elif kind == "union_tag_invalid" or kind == "union_tag_not_found":
            message = "must be \"classifier\", \"regressor\" or \"smoother\""
            key = "kind"
        else:
            message = item["msg"]
            if "input" in item and not isinstance(item["input"], (dict, list)):
                message += f" (got {_cut(repr(item['input']))})"
        seen.setdefault(key, message)
    lines = [f"key {_cut(repr(key))}: {message}" for key, message in list(seen.items())[:MAX_KEYS_REPORTED]]
    if len(seen) > MAX_KEYS_REPORTED:
        lines.append(f"and {len(seen) - MAX_KEYS_REPORTED} more key(s)")
    return f"{source}: invalid declaration: " + "; ".join(lines)


MAX_KEYS_REPORTED = 20  # a declaration with 10,000 unknown keys is named by its first 20 and a count
MAX_VALUE_CHARS = 80  # a key or value echoed in a message is cut here (a 50 MB value is not echoed whole)


def _cut(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def parse_spec(data: Mapping[str, Any] | ClassifierSpec | SmootherSpec, source: str = "declaration") -> ClassifierSpec | SmootherSpec:
    """A validated declaration from a dict (or one already validated); SpecError naming the key."""
    if isinstance(data, SPECS):
        return data
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a declaration is a table of keys, got {type(data).__name__}")
    if "kind" not in data:
        raise SpecError(f"{source}: invalid declaration: key 'kind': missing (required): \"classifier\" or \"smoother\"")
    try:
        return _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise SpecError(_explain(exc, source)) from None


def load_spec(spec: str | Path | Mapping[str, Any] | ClassifierSpec | SmootherSpec) -> ClassifierSpec | SmootherSpec:
    """A declaration from a TOML file path, a dict, or a parsed spec."""
    if isinstance(spec, SPECS):
        return spec
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read the declaration {path}: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{path}: not valid TOML: {_cut(str(exc), 300)}") from None
        return parse_spec(data, str(path))
    return parse_spec(spec)
