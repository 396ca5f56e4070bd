"""One adapter per model kind, service side: the one registry of kinds for the prover, the
registry and the endpoint pipeline.

Each adapter says what the proof checks for its kind (policy rules at the weights' point of use, the
certificate's plan, the reference module's rules, warm-up inputs) and how the pipeline serves it
(`prepare` a decoded request against the version that will serve it, `infer`, name the outputs in
`result`: the pipeline's ModelKind). Adding a kind means one adapter class (here or in a module of its
own) and one `register_kind` line, not a branch in every function (docs/architecture.md, "Where things
plug in"); exporting it takes its adapter in export/kinds.py too. numpy and the manifest only: no torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np

from contract.checks import check_rule
from pydantic import BaseModel

from contract.manifest import KINDS, ClassifierInfo, Manifest, RegressorInfo, SmootherInfo, register_section
from contract.modes import EDGE_MODES
from contract.padding import min_length
from contract.policy import (CLASSIFIER_RULE, KIND_RULES, NORMALIZED_RULE, SMOOTHER_RULES, SUM_TOLERANCE, PolicyRule,
                             register_rule)
from service.base import codec
from service.base.errors import BadRequestError
from service.compute import shapes
from service.compute.explain.view import ExplainView
from service.compute.inference import ClassifyCall, SmoothCall, decisions, infer_classify, infer_smooth, records_to_array
from service.compute.request import InferRequest, InferResult, Limits

# certify()'s features: (column or None for the whole tensor, name, direction), per seed tensor.
Proofs = list[tuple[str, list[tuple[int | None, str, str]]]]


class ServiceKind(ABC):
    kind: ClassVar[str]
    section: ClassVar[str]  # the manifest's section of kind-specific facts ("smoother", "classifier")
    section_model: ClassVar[type[BaseModel]]  # that section's schema (contract.manifest.SECTION_MODELS)
    # What contract.policy requires of the kind's manifests; None: the built-in kind's rule (contract.policy.KIND_RULES).
    policy_rule: ClassVar[PolicyRule | None] = None
    # The request's wire form, which protocols read instead of the kind's name: "signal" ([B, C, L],
    # an edge mode) or "rows" ([N, F] instances, by position or by feature name; the result's one array
    # is named "scores", the OIP output's name).
    wire: ClassVar[str]
    # The native POST route of a kind added by register_kind (wire "rows": service.protocols.native.RowsAdapter);
    # None: the built-in kinds' own routes (/smooth, /classify, /score), or none.
    route: ClassVar[str | None] = None
    # the trusted wrapper class in torchref.modules that the TorchScript proof rebuilds (service/repository/torchscript_proof.py)
    reference_class: ClassVar[str]

    def info(self, manifest: Manifest) -> Any:
        return manifest.section(self.section)

    def manifest_problems(self, manifest: Manifest) -> list[str]:
        return [] if self.info(manifest) is not None else [f"a {self.kind} manifest needs a {self.section!r} section"]

    def describe(self, manifest: Manifest) -> dict[str, Any]:
        """The kind-specific facts a client needs (GET /models/{name})."""
        info = self.info(manifest)
        return {self.section: info.model_dump()} if info is not None else {}

    def summary(self, manifest: Manifest) -> dict[str, Any]:
        """The few kind-specific facts GET /models lists beside each serving model."""
        return {}

    @abstractmethod
    def policy_checks(self, proof: Any, graph: Any, file: str, check: Callable[..., None]) -> None:
        """Apply the policy's rules (contract.policy) to the weights at their point of use in the
        graph, through `check(rule, where, values, **options)`; record on `proof` what the later
        steps use. ValueError when the weight is not where the policy needs it."""

    @abstractmethod
    def certificate_plan(self, proof: Any) -> tuple[Proofs, str] | None:
        """(seed tensors and features to certify, the claim), or None when nothing is to be certified."""

    def uncertified_reason(self, manifest: Manifest) -> str:
        return "nothing to certify"

    def certify(self, proof: Any, seed: str, features: list[tuple[int | None, str, str]], outputs: list[str]) -> Any:
        """The certificate (contract.certificate.Certificate) of `outputs` in `features` of `seed`."""
        from contract.certificate import certify

        return certify(proof.graph_info, seed, features, outputs=outputs)

    def certificate_problem(self, manifest: Manifest, findings: list) -> str | None:
        """A kind-specific reason to refuse a certificate whose failures list is empty."""
        return None

    @abstractmethod
    def reference_rules(self, manifest: Manifest, tensors: dict[str, np.ndarray]) -> list[str]:
        """What breaks the facts that make the kind's reference module (the export wrapper, by its
        state_dict names) monotone as the manifest declares; empty when they all hold."""

    @abstractmethod
    def warmup_inputs(self, manifest: Manifest, rng: np.random.Generator) -> list[np.ndarray]:
        """A few typical inputs, smallest first and largest last (the cost model fits on those two)."""

    @abstractmethod
    def expected_shape(self, manifest: Manifest, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape the graph must give for an input of `shape`."""

    # -- serving (service.pipeline.endpoint.ModelKind) --
    batchable: ClassVar[bool] = False  # small requests may share an engine call through the dynamic batcher

    name: ClassVar[str]  # the pipeline's name for the kind: the manifest's kind

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.kind

    @abstractmethod
    def prepare(self, served: Any, request: InferRequest, limits: Limits) -> Any:
        """The request checked against the version that will serve it (400/413 naming the field)."""

    @abstractmethod
    def work(self, call: Any) -> int:
        """Input elements: with the model's warm-up cost model, what decides whether it may run inline."""

    @abstractmethod
    def infer(self, call: Any, settings: Any) -> np.ndarray: ...

    def batch_input(self, call: Any) -> np.ndarray:
        raise NotImplementedError(f"{self.kind} requests are not batched")

    @abstractmethod
    def result(self, call: Any, output: np.ndarray) -> InferResult: ...

    # -- explaining (service.compute.explain, service.protocols.explain) --
    def explain_view(self, served: Any) -> ExplainView | None:
        """What POST /explain may use: features, proven directions, ranges, decisions, the scorer;
        None: the kind has no features to explain (a smoother)."""
        return None


class SmootherKind(ServiceKind):
    kind = "smoother"
    section = "smoother"
    section_model = SmootherInfo
    wire = "signal"
    reference_class = "FullCorrelation"

    def policy_checks(self, proof: Any, graph: Any, file: str, check: Callable[..., None]) -> None:
        from contract.certificate.uses import smoother_kernel

        manifest = proof.manifest
        smoother = manifest.smoother
        label, weight_name, weight = smoother_kernel(graph, manifest.inputs[0].name, manifest.outputs[0].name,
                                                     smoother.kernel_size, smoother.padding)
        where = f"node {label} weight {file}:{weight_name}"
        for rule in SMOOTHER_RULES:
            check(rule, where, weight, tolerance=0.0, axis=-1)
        if smoother.normalized:
            check(NORMALIZED_RULE, where, weight, tolerance=SUM_TOLERANCE, axis=-1)
        proof.checked_tensors["kernel"] = np.asarray(weight)

    def certificate_plan(self, proof: Any) -> tuple[Proofs, str] | None:
        input_name, output_name = proof.manifest.inputs[0].name, proof.manifest.outputs[0].name
        return ([(input_name, [(None, input_name, "increasing")])],
                f"{output_name!r} is non-decreasing in every sample of {input_name!r}")

    def certificate_problem(self, manifest: Manifest, findings: list) -> str | None:
        if any(f.found == "independent" for f in findings):
            return (f"{manifest.outputs[0].name!r} does not depend on {manifest.inputs[0].name!r}: "
                    "the kernel is never applied to the signal")
        return None

    def reference_rules(self, manifest: Manifest, tensors: dict[str, np.ndarray]) -> list[str]:
        # out = correlate(replicate-pad(x), kernel): non-decreasing in every sample iff kernel >= 0.
        kernel = tensors["kernel"].reshape(-1)
        found = [v for rule in SMOOTHER_RULES for v in check_rule(rule, "kernel", kernel)]
        if manifest.smoother.normalized:
            found += check_rule(NORMALIZED_RULE, "kernel", kernel, tolerance=SUM_TOLERANCE)
        return [str(v) for v in found]

    def warmup_inputs(self, manifest: Manifest, rng: np.random.Generator) -> list[np.ndarray]:
        k = manifest.smoother.kernel_size
        shortest = min_length(manifest.smoother.padding, k)  # reflect padding needs K samples
        return [rng.standard_normal((1, 1, shortest)).astype(np.float32),
                rng.standard_normal((1, 1, k + 7)).astype(np.float32),
                rng.standard_normal((2, 3, 4096)).astype(np.float32)]

    def expected_shape(self, manifest: Manifest, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:2], shape[2] + manifest.smoother.kernel_size - 1)  # the full correlation

    # -- serving --
    def prepare(self, served: Any, request: InferRequest, limits: Limits) -> SmoothCall:
        info = served.manifest.smoother
        assert info is not None
        signal = request.inputs
        if signal is None:
            raise BadRequestError("missing the signal to smooth", field="signal")
        mode = request.params.get("mode") or info.default_mode
        if mode not in EDGE_MODES or mode not in info.edge_modes:
            raise BadRequestError(f"unknown mode {str(mode)[:40]!r}; expected one of {list(info.edge_modes)}", field="mode")
        shapes.check_rank(signal)  # the nestings every transport accepts, refused with one reason
        if signal.size == 0:
            raise BadRequestError(f"'signal' is empty (shape {list(signal.shape)})", field="signal", shape=list(signal.shape))
        length = signal.shape[-1]
        shapes.check_length(length, limits.max_signal_length)
        kernel = info.kernel_size
        if mode == "valid" and length < kernel:
            raise BadRequestError(
                f"mode 'valid' needs at least {kernel} samples (the kernel size), got {length}",
                field="signal", kernel_size=kernel, length=length)
        shortest = min_length(info.padding, kernel)
        if length < shortest:
            raise BadRequestError(
                f"{info.padding} padding needs at least {shortest} samples (the kernel size), got {length}",
                field="signal", kernel_size=kernel, length=length)
        codec.check_finite(signal, "signal")
        rank = signal.ndim
        return SmoothCall(served, signal.reshape((1,) * (3 - rank) + signal.shape), rank, mode)

    def work(self, call: SmoothCall) -> int:
        return int(call.signal.size)

    def infer(self, call: SmoothCall, settings: Any) -> np.ndarray:
        return infer_smooth(call, method=settings.smooth_method)

    def result(self, call: SmoothCall, output: np.ndarray) -> InferResult:
        return InferResult(call.served, {"smoothed": output}, {"mode": call.mode})


class ClassifierKind(ServiceKind):
    kind = "classifier"
    section = "classifier"
    section_model = ClassifierInfo
    wire = "rows"
    reference_class = "ClassifierScores"
    batchable = True

    def summary(self, manifest: Manifest) -> dict[str, Any]:
        info = manifest.classifier
        if info is None:
            return {}
        return {"labels": list(info.labels), "thresholds": dict(zip(info.labels, info.label_thresholds))}

    def policy_checks(self, proof: Any, graph: Any, file: str, check: Callable[..., None]) -> None:
        from contract.certificate.uses import output_layer

        manifest = proof.manifest
        if manifest.classifier.scope == "none":  # an unconstrained baseline: only a policy that allows it gets here
            return
        if manifest.classifier.proof == "lipschitz":  # no output layer: every feature is proven by its rate bound
            return
        layer = output_layer(graph, manifest.outputs[0].name)
        proof.output_layer = layer
        check(CLASSIFIER_RULE, f"output layer node {layer.node} weight {file}:{layer.input_name}",
              layer.values, tolerance=0.0)

    def certificate_plan(self, proof: Any) -> tuple[Proofs, str] | None:
        manifest = proof.manifest
        info = manifest.classifier
        if info.scope == "none":
            return None
        if info.proof == "lipschitz":
            features = proof.policy.certified_features(manifest)
            return ([(manifest.inputs[0].name, features)],
                    f"every score is monotone in {len(features)} feature(s) as declared: g(x) + lambda * sum_i s_i x_i "
                    "with g's rate along each feature bounded by lambda (contract.lipschitz)")
        layer = proof.output_layer
        assert layer is not None
        proofs: Proofs = [(layer.data_input, [(None, f"output layer input {layer.data_input!r}", "increasing")])]
        features = proof.policy.certified_features(manifest)
        if features:
            proofs.append((manifest.inputs[0].name, features))
        return proofs, (f"every score is non-decreasing in the output layer's input and monotone in {len(features)} "
                        f"feature(s) as declared (scope {info.scope!r})")

    def uncertified_reason(self, manifest: Manifest) -> str:
        return "scope 'none': an unconstrained classifier the policy allows; nothing to certify"

    def certify(self, proof: Any, seed: str, features: list[tuple[int | None, str, str]], outputs: list[str]) -> Any:
        info = proof.manifest.classifier  # None for a regressor (RegressorKind inherits this)
        if info is None or info.proof != "lipschitz":
            return super().certify(proof, seed, features, outputs)
        from contract.lipschitz import certify_lipschitz

        certificate, _ = certify_lipschitz(proof.graph_info, seed, features, outputs)
        return certificate

    def reference_rules(self, manifest: Manifest, tensors: dict[str, np.ndarray]) -> list[str]:
        # sigmoid(L_n(relu(...relu(L_0((x - mean) / scale * sign))))): with every L_k for k >= 1
        # nonnegative, column f of L_0 nonnegative, scale[f] > 0 and sign[f] = +1 (-1), the score is
        # non-decreasing (non-increasing) in feature f; the output layer alone nonnegative is scope "final".
        info = manifest.classifier
        scope = str(info.scope)
        if scope == "none":  # an unconstrained baseline: only a policy that allows it gets here
            return []
        count = len([name for name in tensors if name.startswith("layers.") and name.endswith(".weight")])
        found = check_rule("nonnegative", f"layers.{count - 1}.weight", tensors[f"layers.{count - 1}.weight"])
        problems: list[str] = []
        if scope == "all":
            for k in range(1, count - 1):
                found += check_rule("nonnegative", f"layers.{k}.weight", tensors[f"layers.{k}.weight"])
            columns = [i for i, f in enumerate(info.features) if f.direction != "free"]
            if columns:
                if count > 1:
                    found += check_rule("nonnegative", "layers.0.weight", tensors["layers.0.weight"], columns=columns)
                found += check_rule("positive", "feature_scale", tensors["feature_scale"], columns=columns)
            sign = tensors["direction_sign"].reshape(-1)
            for i in columns:
                want = 1.0 if info.features[i].direction == "increasing" else -1.0
                if sign[i] != want:
                    problems.append(f"direction_sign[{i}] is {sign[i]:g}, feature {info.features[i].name!r} is "
                                    f"declared {info.features[i].direction} (needs {want:g})")
        if "calibration_scale" in tensors:  # a calibration keeps monotonicity only with a positive scale
            found += check_rule("positive", "calibration_scale", tensors["calibration_scale"])
        return [str(v) for v in found] + problems

    def warmup_inputs(self, manifest: Manifest, rng: np.random.Generator) -> list[np.ndarray]:
        n = len(manifest.classifier.features)
        return [rng.standard_normal((1, n)).astype(np.float32), rng.standard_normal((64, n)).astype(np.float32),
                rng.standard_normal((1024, n)).astype(np.float32)]

    def expected_shape(self, manifest: Manifest, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], len(manifest.classifier.labels))

    # -- serving --
    def prepare(self, served: Any, request: InferRequest, limits: Limits) -> ClassifyCall:
        info = self.info(served.manifest)
        assert info is not None
        width = len(info.features)  # the names are made only for records and for error messages
        if request.records is not None:
            features = records_to_array(request.records, [f.name for f in info.features])
        else:
            features = request.inputs
        if features is None:
            raise BadRequestError("missing the instances to classify", field="instances")
        if features.size == 0:
            raise BadRequestError(f"'instances' is empty (shape {list(features.shape)})", field="instances")
        if features.ndim != 2:
            raise BadRequestError(
                f"'instances' must be a list of instances, each a list of {width} numbers: got shape {list(features.shape)}",
                field="instances", shape=list(features.shape))
        limits.check_rows(int(features.shape[0]), "instances")
        if features.shape[1] != width:
            names = [f.name for f in info.features]
            raise BadRequestError(
                f"each instance needs {len(names)} features {names}, got {features.shape[1]}",
                field="instances", expected=len(names), got=int(features.shape[1]), features=names)
        codec.check_finite(features, "instances")
        return ClassifyCall(served, features)

    def work(self, call: ClassifyCall) -> int:
        return int(call.features.size)

    def infer(self, call: ClassifyCall, settings: Any) -> np.ndarray:
        return infer_classify(call)

    def batch_input(self, call: ClassifyCall) -> np.ndarray:
        return call.features

    def explain_view(self, served: Any) -> ExplainView:
        manifest = served.manifest
        info = manifest.classifier
        # proven: what the certificate checked (contract.policy.certified_features), nothing in scope "none"
        claimed = set(info.monotone_features)
        directions = [f.direction if info.scope != "none" and (info.scope == "all" or f.name in claimed) else "free"
                      for f in info.features]
        ranges = {name: (r.low, r.high) for name, r in (manifest.feature_ranges or {}).items()}
        return ExplainView([f.name for f in info.features], directions, list(info.labels), info.label_thresholds,
                           ranges, served.engine.run)

    def result(self, call: ClassifyCall, output: np.ndarray) -> InferResult:
        info = call.served.manifest.classifier
        assert info is not None
        # One label: one probability per instance; several labels: one list per instance.
        scores = np.ascontiguousarray(output[:, 0] if len(info.labels) == 1 else output)
        # one threshold for every label (a number), or one per label (a list in `labels` order)
        threshold = info.decision_threshold
        return InferResult(call.served, {"scores": scores},
                           {"labels": info.labels, "threshold": threshold,
                            "decisions": decisions(output, info.labels, threshold)})


class RegressorKind(ClassifierKind):
    """A regressor [N, F] -> [N, 1] (trees, linear or neural): one score per instance, at POST /score.

    Requests are read as a classifier's instances are (rows, or objects keyed by feature name); the
    proof certifies every non-free feature's direction from the graph, and `nonnegative` from its
    interval bounds. There is no TorchScript reference: regressors are imported ONNX graphs."""

    kind = "regressor"
    section = "regressor"
    section_model = RegressorInfo
    reference_class = ""

    def summary(self, manifest: Manifest) -> dict[str, Any]:
        info = manifest.regressor
        return {} if info is None else {"features": [f.name for f in info.features]}

    def policy_checks(self, proof: Any, graph: Any, file: str, check: Callable[..., None]) -> None:
        manifest = proof.manifest
        if manifest.regressor.nonnegative:
            low, high = graph.range_of(manifest.outputs[0].name)
            if not low >= 0.0:
                raise ValueError(f"the regressor is declared nonnegative, but its output {manifest.outputs[0].name!r} "
                                 f"may be negative (bounds [{low:.6g}, {high:.6g}])")

    def certificate_plan(self, proof: Any) -> tuple[Proofs, str] | None:
        manifest = proof.manifest
        features = proof.policy.certified_features(manifest)
        if not features:
            return None
        return ([(manifest.inputs[0].name, features)],
                f"the score is monotone in {len(features)} feature(s) as declared")

    def uncertified_reason(self, manifest: Manifest) -> str:
        return "every feature is free: no direction to certify"

    def reference_rules(self, manifest: Manifest, tensors: dict[str, np.ndarray]) -> list[str]:
        return ["a regressor has no TorchScript reference module: it is served from model.onnx only"]

    def warmup_inputs(self, manifest: Manifest, rng: np.random.Generator) -> list[np.ndarray]:
        n = len(manifest.regressor.features)
        return [rng.standard_normal((1, n)).astype(np.float32), rng.standard_normal((64, n)).astype(np.float32),
                rng.standard_normal((1024, n)).astype(np.float32)]

    def expected_shape(self, manifest: Manifest, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], 1)

    def result(self, call: ClassifyCall, output: np.ndarray) -> InferResult:
        return InferResult(call.served, {"scores": np.ascontiguousarray(output[:, 0])}, {})

    def explain_view(self, served: Any) -> ExplainView:
        """POST /explain on a regressor: one score, no threshold of its own (a request may give one);
        the proven directions are every non-free feature's (each certified, contract.policy)."""
        manifest = served.manifest
        info = manifest.regressor
        claimed = set(info.monotone_features)
        directions = [f.direction if f.name in claimed else "free" for f in info.features]
        ranges = {name: (r.low, r.high) for name, r in (manifest.feature_ranges or {}).items()}
        return ExplainView([f.name for f in info.features], directions, ["score"], None, ranges, served.engine.run,
                           score_name="score")


# The one table of kinds the prover, the registry, the pipeline and the protocols read. A new kind is
# one adapter module and one `register_kind(MyKind())` line in code the operator runs (tests/kind_launcher.py
# shows one); never loaded from a file or the environment, which a hostile publisher could write.
SERVICE_KINDS: dict[str, ServiceKind] = {}


def register_kind(adapter: ServiceKind) -> ServiceKind:
    """Serve `adapter.kind`: its manifest section (contract.manifest), its policy rule (contract.policy)
    and its adapter here. Registering before the app is built (service.app) serves it on every
    protocol: OIP over REST and gRPC by its `wire` form."""
    kind = adapter.kind
    if kind in SERVICE_KINDS:
        raise ValueError(f"kind {kind!r} is registered already ({type(SERVICE_KINDS[kind]).__name__})")
    rule = adapter.policy_rule if adapter.policy_rule is not None else KIND_RULES.get(kind)
    if rule is None:
        raise ValueError(f"kind {kind!r} needs a policy_rule: the policy refuses a kind it has no rule for")
    if adapter.wire not in WIRES:
        raise ValueError(f"kind {kind!r} has wire {adapter.wire!r}; expected one of {', '.join(WIRES)}")
    if adapter.route is not None and (adapter.wire != "rows" or not adapter.route.startswith("/")):
        raise ValueError(f"kind {kind!r} declares route {adapter.route!r}: a route is a path, for a 'rows' kind")
    register_section(adapter.section, adapter.section_model)
    register_rule(kind, rule)
    SERVICE_KINDS[kind] = adapter
    return adapter


WIRES = ("signal", "rows")  # the request forms the protocols know (ServiceKind.wire)

for _builtin in (SmootherKind(), ClassifierKind(), RegressorKind()):
    register_kind(_builtin)
assert tuple(SERVICE_KINDS)[:len(KINDS)] == KINDS, "every built-in manifest kind needs a service adapter"


def service_kind(kind: str) -> ServiceKind:
    try:
        return SERVICE_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(SERVICE_KINDS)}") from None
