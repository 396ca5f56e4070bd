"""One adapter per model kind, service side: what the prover and the registry do differently per kind.

Adding a kind means adding one class here (and one in export/kinds.py), not a branch in every
function. numpy and the manifest only: no torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from contract.checks import check_rule
from contract.manifest import KINDS, Manifest
from contract.policy import NORMALIZED_RULE, SMOOTHER_RULES, SUM_TOLERANCE


class ServiceKind(ABC):
    kind: ClassVar[str]
    section: ClassVar[str]  # the manifest's section of kind-specific facts ("smoother", "classifier")

    def info(self, manifest: Manifest) -> Any:
        return getattr(manifest, self.section)

    def manifest_problems(self, manifest: Manifest) -> list[str]:
        return [] if self.info(manifest) is not None else [f"a {self.kind} manifest needs a {self.section!r} section"]

    def describe(self, manifest: Manifest) -> dict[str, Any]:
        """The kind-specific facts a client needs (GET /models/{name})."""
        info = self.info(manifest)
        return {self.section: info.model_dump()} if info is not None else {}

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


class SmootherKind(ServiceKind):
    kind = "smoother"
    section = "smoother"

    def reference_rules(self, manifest: Manifest, tensors: dict[str, np.ndarray]) -> list[str]:
        # out = correlate(replicate-pad(x), kernel): non-decreasing in every sample iff kernel >= 0.
        kernel = tensors["kernel"].reshape(-1)
        found = [v for rule in SMOOTHER_RULES for v in check_rule(rule, "kernel", kernel)]
        if manifest.smoother.normalized:
            found += check_rule(NORMALIZED_RULE, "kernel", kernel, tolerance=SUM_TOLERANCE)
        return [str(v) for v in found]

    def warmup_inputs(self, manifest: Manifest, rng: np.random.Generator) -> list[np.ndarray]:
        k = manifest.smoother.kernel_size
        return [rng.standard_normal((1, 1, 1)).astype(np.float32),
                rng.standard_normal((1, 1, k + 7)).astype(np.float32),
                rng.standard_normal((2, 3, 4096)).astype(np.float32)]

    def expected_shape(self, manifest: Manifest, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:2], shape[2] + manifest.smoother.kernel_size - 1)  # the full correlation


class ClassifierKind(ServiceKind):
    kind = "classifier"
    section = "classifier"

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
        return [str(v) for v in found] + problems

    def warmup_inputs(self, manifest: Manifest, rng: np.random.Generator) -> list[np.ndarray]:
        n = len(manifest.classifier.features)
        return [rng.standard_normal((1, n)).astype(np.float32), rng.standard_normal((64, n)).astype(np.float32),
                rng.standard_normal((1024, n)).astype(np.float32)]

    def expected_shape(self, manifest: Manifest, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], len(manifest.classifier.labels))


SERVICE_KINDS: dict[str, ServiceKind] = {adapter.kind: adapter for adapter in (SmootherKind(), ClassifierKind())}
assert tuple(SERVICE_KINDS) == KINDS, "every manifest kind needs a service adapter"


def service_kind(kind: str) -> ServiceKind:
    try:
        return SERVICE_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(SERVICE_KINDS)}") from None
