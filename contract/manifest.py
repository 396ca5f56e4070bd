"""manifest.json: the one schema shared by export (writes it) and the service (reads it).

Only pydantic here: the service imports this module without torch.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_serializer, model_validator

from contract.files import DEFAULT_MAX_FILE_BYTES, read_checked

MANIFEST_SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

Kind = Literal["smoother", "classifier", "regressor"]
Format = Literal["onnx", "torchscript", "pt2"]
Rule = Literal["nonnegative", "positive", "monotone_nondecreasing", "sums_to_one"]
Direction = Literal["increasing", "decreasing", "free"]
EdgeMode = Literal["same", "causal", "valid"]

# Default file name of each format inside a version directory.
FORMAT_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}
# The same names as tuples, for messages and argument checks (one definition: the Literals above).
# KINDS: the built-in kinds (every one has an exporter); `registered_kinds()`: those a manifest may name now.
KINDS: tuple[str, ...] = get_args(Kind)
FORMATS: tuple[str, ...] = get_args(Format)


# A decision threshold on a probability: a JSON number (not a string or a boolean), finite, in [0, 1].
Threshold = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Strict):
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: list[int | str]  # a str is a named dynamic dimension ("batch", "channels", "length", ...)


class FileEntry(_Strict):
    path: str  # relative to the version directory
    format: Format
    sha256: str
    size: int


class ConstraintEntry(_Strict):
    """A rule on one folded tensor, and where that tensor lives inside each artifact."""

    tensor: str  # the model-level name (state_dict name after folding), e.g. "kernel", "layers.0.weight"
    rule: Rule
    tolerance: float = 0.0
    axis: int = -1
    columns: list[int] | None = None  # nonnegative/positive on these last-axis indices only
    locations: dict[str, str] = Field(default_factory=dict)  # format -> tensor name in that artifact


class FeatureSpec(_Strict):
    name: str
    direction: Direction = "increasing"


class ClassifierInfo(_Strict):
    features: list[FeatureSpec]
    labels: list[str]
    # Every label's decision threshold (score >= threshold), unless `thresholds` gives one per label.
    threshold: Threshold = 0.5
    # One threshold per label, in `labels` order (multi-label models trained with a criterion):
    # absent in single-label models and in manifests written before per-label thresholds.
    thresholds: list[Threshold] | None = None
    scope: Literal["all", "final", "none"]  # "none": an unconstrained baseline (contract.policy)
    # "declared": a user's own model (export_module / monoserve import); how it was trained is not known
    method: Literal["reparam", "project", "declared"]
    # Features whose monotonicity the service must certify from the graph (scope "all", not free).
    monotone_features: list[str] = Field(default_factory=list)
    output: Literal["probabilities"] = "probabilities"  # the graphs end in a sigmoid
    # How the graph computes the scores (models.classifier): the hidden activation (non-decreasing),
    # the feature transform before standardization, and whether a positive scale and a bias act on
    # the logits (the `calibration_scale` / `calibration_bias` tensors). Defaults: the original model.
    # "graph": a user's own model; the ONNX graph is its only definition (ONNX engine only)
    activation: Literal["relu", "leaky_relu", "tanh", "sigmoid", "softplus", "elu", "graph"] = "relu"
    transform: Literal["none", "log1p"] = "none"
    calibrated: bool = False
    # How the monotonicity is proven: "signs" (the output layer nonnegative, and every certified
    # feature's path of one sign: contract.certificate) or "lipschitz" (g(x) + lambda * sum_i s_i x_i
    # with g's rate along each feature bounded by lambda: contract.lipschitz; scope "all" only).
    proof: Literal["signs", "lipschitz"] = "signs"

    @model_validator(mode="after")
    def _one_threshold_per_label(self) -> "ClassifierInfo":
        if self.thresholds is not None and len(self.thresholds) != len(self.labels):
            raise ValueError(f"thresholds has {len(self.thresholds)} value(s) for {len(self.labels)} label(s) "
                             f"{self.labels}: give one per label, in the labels' order")
        return self

    @property
    def label_thresholds(self) -> list[float]:
        """The decision threshold of each label, in `labels` order."""
        return list(self.thresholds) if self.thresholds is not None else [self.threshold] * len(self.labels)

    @property
    def per_label(self) -> bool:
        """Whether the labels have thresholds of their own (several labels and `thresholds` given)."""
        return self.thresholds is not None and len(self.labels) > 1

    @property
    def decision_threshold(self) -> float | list[float]:
        """What answers carry: one number when every label shares it (a single-label model's is its
        label's), else a list with one per label in `labels` order."""
        thresholds = self.label_thresholds
        if self.per_label:
            return thresholds
        return thresholds[0] if thresholds else self.threshold


class RegressorInfo(_Strict):
    """A regressor [N, F] -> [N, 1]: one score per instance, monotone in `monotone_features` as declared."""

    features: list[FeatureSpec]
    # Features whose direction the service certifies from the graph (every non-free one).
    monotone_features: list[str] = Field(default_factory=list)
    nonnegative: bool = False  # every score >= 0, from the graph's interval bounds
    method: Literal["declared"] = "declared"
    output: Literal["scores"] = "scores"


class SmootherInfo(_Strict):
    kernel_size: int
    param: Literal["exp-cumsum", "softmax", "declared"]  # "declared": a user's own module, kernel found by probing
    normalized: bool
    edge_modes: list[EdgeMode] = Field(default_factory=lambda: ["same", "causal", "valid"])
    default_mode: EdgeMode = "same"
    # The graphs output the full correlation (L + K - 1 samples); each mode is a slice of it
    # (contract.modes.mode_slice).
    output: Literal["full"] = "full"
    # How the signal's edges are padded before the correlation (contract.padding); the graph's Pad
    # node must pad this way (contract.certificate.smoother_kernel).
    padding: Literal["replicate", "zeros", "reflect", "circular"] = "replicate"


class FeatureRange(_Strict):
    """The interval a feature's values are explained over (POST /explain: recourse, bounds, curves):
    the training data's minimum and maximum at export, or a declaration's own for imported models."""

    low: float = Field(allow_inf_nan=False, strict=True)
    high: float = Field(allow_inf_nan=False, strict=True)

    @model_validator(mode="after")
    def _ordered(self) -> "FeatureRange":
        if not self.low <= self.high:
            raise ValueError(f"a feature range needs low <= high, got [{self.low}, {self.high}]")
        return self


class Probe(_Strict):
    """A small input and the output eager torch gave for it: checked again at load time."""

    input: list  # nested lists, shaped as `inputs[0]`
    expected: list  # nested lists, shaped as `outputs[0]`
    atol: float
    rtol: float = 0.0


# The kind-specific section of each kind a manifest may name, by kind (the section's key is the kind's
# name). The built-in kinds' sections are Manifest's own fields (the published schema lists them); a kind
# added by `register_section` (service.compute.kinds.register_kind, code the operator runs: never from a
# file or the environment) has its section kept beside them and written back at the top level.
SECTION_MODELS: dict[str, type[BaseModel]] = {"smoother": SmootherInfo, "classifier": ClassifierInfo,
                                              "regressor": RegressorInfo}


def register_section(kind: str, model: type[BaseModel]) -> None:
    """Let manifests name `kind`, with its section (under the key `kind`) parsed as `model`."""
    if not kind.isidentifier() or kind in Manifest.model_fields and kind not in SECTION_MODELS:
        raise ValueError(f"{kind!r} cannot name a kind: it is not an identifier or is a manifest field")
    known = SECTION_MODELS.get(kind)
    if known is not None and known is not model:
        raise ValueError(f"kind {kind!r} is registered already, with section {known.__name__}")
    SECTION_MODELS[kind] = model


def registered_kinds() -> tuple[str, ...]:
    return tuple(SECTION_MODELS)


class Manifest(_Strict):
    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    version: int
    # one of registered_kinds(): the built-in smoother, classifier, regressor, and any registered since
    # (the published schema lists the built-in ones: what a stock server accepts)
    kind: str = Field(json_schema_extra={"enum": list(KINDS)})
    created: datetime
    monoserve_version: str
    source_checkpoint_sha256: str
    source_checkpoint_name: str
    training_metrics: dict = Field(default_factory=dict)
    provenance: dict = Field(default_factory=dict)  # data file, sha256, columns, scaling ...
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: list[FileEntry]
    constraints: list[ConstraintEntry]
    classifier: ClassifierInfo | None = None
    smoother: SmootherInfo | None = None
    regressor: RegressorInfo | None = None
    probe: Probe
    parity: dict = Field(default_factory=dict)  # max abs error per format, measured at export
    opset: int | None = None
    # Per feature of the kind's section, by name: the range its explanations use (absent in manifests
    # written before ranges, and for models whose declaration gives none).
    feature_ranges: dict[str, FeatureRange] | None = None
    # the sections of registered (not built-in) kinds, by kind: see SECTION_MODELS
    _added_sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        if kind not in SECTION_MODELS:
            raise ValueError(f"unknown kind {kind[:40]!r}; expected one of {', '.join(SECTION_MODELS)}")
        return kind

    @model_validator(mode="wrap")
    @classmethod
    def _added_kind_sections(cls, data: Any, handler: Any) -> "Manifest":
        added: dict[str, BaseModel] = {}
        if isinstance(data, dict):
            keys = [key for key in data if key in SECTION_MODELS and key not in cls.model_fields]
            foreign = [key for key in keys if key != data.get("kind")]
            if foreign:  # as the built-in kinds' sections would be refused by manifest_problems: one section, its kind's
                raise ValueError(f"section(s) {foreign} belong to another kind than {str(data.get('kind'))[:40]!r}")
            if keys:
                data = dict(data)
                added = {key: SECTION_MODELS[key].model_validate(data.pop(key)) for key in keys}
        manifest = handler(data)
        if added:
            manifest._added_sections = added
        if manifest.kind not in cls.model_fields:  # an added kind's ranges: checked once its section is attached
            manifest._check_ranges()
        return manifest

    @model_serializer(mode="wrap")
    def _write_added_sections(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key, section in self._added_sections.items():
            data[key] = section.model_dump()
        return data

    def section(self, name: str) -> BaseModel | None:
        """The kind-specific section `name` ("smoother", "classifier", ... or a registered kind's)."""
        if name in _FIELD_NAMES:  # not type(self).model_fields: pydantic builds that answer on each access
            return getattr(self, name)
        return self._added_sections.get(name)

    @model_validator(mode="after")
    def _ranges_name_features(self) -> "Manifest":
        if self.kind in type(self).model_fields:  # a built-in kind (an added one's: _added_kind_sections)
            self._check_ranges()
        return self

    def _check_ranges(self) -> None:
        if self.feature_ranges is None:
            return
        # the kind's section ("classifier", or any later kind with features) names the features
        section = self.section(self.kind)
        features = getattr(section, "features", None)
        if features is None:
            raise ValueError(f"feature_ranges is given, but a {self.kind} has no features")
        names = [getattr(f, "name", f) for f in features]
        unknown = sorted(set(self.feature_ranges) - set(names))
        if unknown:
            raise ValueError(f"feature_ranges names unknown feature(s) {unknown}; features are {names}")

    def file_for(self, fmt: str) -> FileEntry | None:
        return next((f for f in self.files if f.format == fmt), None)

    @classmethod
    def read(cls, version_dir: str | Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> "Manifest":
        """Parse VERSION_DIR/manifest.json, read as every artifact is (inside the directory, capped)."""
        data, _, _ = read_checked(Path(version_dir), MANIFEST_NAME, size=None, sha256=None, max_bytes=max_bytes)
        return cls.model_validate_json(data)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


_FIELD_NAMES = frozenset(Manifest.model_fields)  # Manifest has no subclasses: its fields are fixed

SCHEMA_DOC = "docs/manifest.schema.json"  # the published JSON Schema (tests/test_manifest_schema.py keeps it current)


def json_schema() -> str:
    """manifest.json's JSON Schema, as published in docs/manifest.schema.json (`python -m contract.manifest`)."""
    import json

    schema = Manifest.model_json_schema()
    schema["$id"] = "https://monoserve.invalid/manifest.schema.json"
    schema["title"] = f"monoserve manifest.json (schema_version {MANIFEST_SCHEMA_VERSION})"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(json_schema(), end="")
