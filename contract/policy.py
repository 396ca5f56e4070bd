"""The service's policy: what a version must satisfy to be served, whatever its manifest declares.

The manifest is the publisher's word. The policy is the operator's: per kind, the rules the
service checks on the graph itself (contract.certificate, service.repository.prover) are fixed here, and a
manifest that declares less than they require is refused before anything else is trusted.

- smoother: the kernel, as its Conv consumes it, is positive and non-decreasing along the taps
  (and sums to 1 when the manifest says normalized); the output is non-decreasing in every sample;
- classifier: the output layer's weight, as its Gemm/MatMul consumes it, is nonnegative and the
  score is non-decreasing in that layer's input; with scope "all" every score is monotone in each
  non-free feature in its declared direction. A Lipschitz-monotone classifier (proof "lipschitz",
  scope "all") has no output layer rule: each non-free feature is proven by contract.lipschitz.
  Scope "final" promises nothing per feature (every feature counts as free); scope "none" (an unconstrained baseline) promises nothing at all.

Stricter policies are settings (MONOSERVE_ALLOW_FREE_FEATURES, ..._DECREASING_FEATURES,
..._UNCONSTRAINED). Pure Python: export and the service both import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from contract.manifest import Manifest

SMOOTHER_RULES = ("positive", "monotone_nondecreasing")
NORMALIZED_RULE = "sums_to_one"
# The kernel's sum must be 1 within this when normalized (export writes the same tolerance).
SUM_TOLERANCE = 1e-4
CLASSIFIER_RULE = "nonnegative"
SCOPES = ("all", "final", "none")


@dataclass(frozen=True)
class Policy:
    """The defaults are the default policy."""

    allow_free_features: bool = True
    allow_decreasing_features: bool = True
    allow_unconstrained: bool = False  # scope "none" classifiers (export's --allow-unconstrained)

    def shortfalls(self, manifest: "Manifest") -> list[str]:
        """Everything the manifest declares less of than this policy requires (empty: it may be proven)."""
        rule = KIND_RULES.get(manifest.kind)
        if rule is None:
            return [f"kind {manifest.kind!r} has no policy: the service serves only {', '.join(KIND_RULES)}"]
        return rule(self, manifest)

    def _smoother(self, manifest: "Manifest") -> list[str]:
        info = manifest.smoother
        if info is None:
            return ["a smoother manifest needs a 'smoother' section"]
        required = list(SMOOTHER_RULES) + ([NORMALIZED_RULE] if info.normalized else [])
        declared = {c.rule for c in manifest.constraints}
        return [f"the policy requires the smoother's kernel rule {rule!r}, which the manifest's constraints do not declare"
                for rule in required if rule not in declared]

    def _classifier(self, manifest: "Manifest") -> list[str]:
        info = manifest.classifier
        if info is None:
            return ["a classifier manifest needs a 'classifier' section"]
        problems: list[str] = []
        scope = str(info.scope)
        if scope not in SCOPES:
            return [f"classifier scope {scope!r} is not one of {', '.join(SCOPES)}"]
        if scope == "none" and not self.allow_unconstrained:
            problems.append("scope 'none' (an unconstrained classifier) is refused by the policy "
                            "(set MONOSERVE_ALLOW_UNCONSTRAINED=true to serve it)")
        lipschitz = info.proof == "lipschitz"
        if lipschitz and scope != "all":
            problems.append(f"a Lipschitz-monotone classifier is proven per feature: its scope must be 'all', not {scope!r}")
        if scope != "none" and not lipschitz and not any(c.rule == CLASSIFIER_RULE for c in manifest.constraints):
            problems.append(f"the policy requires a {CLASSIFIER_RULE!r} output layer, which the manifest's constraints do not declare")
        names = [f.name for f in info.features]
        directions = {f.name: f.direction for f in info.features}
        unknown = [name for name in info.monotone_features if name not in directions]
        if unknown:
            problems.append(f"monotone_features names unknown feature(s) {unknown}")
        free_claimed = [name for name in info.monotone_features if directions.get(name) == "free"]
        if free_claimed:
            problems.append(f"monotone_features lists free feature(s) {free_claimed}: a free feature has no direction")
        if scope == "all":
            omitted = [n for n in names if directions[n] != "free" and n not in info.monotone_features]
            if omitted:
                problems.append(f"scope 'all' makes feature(s) {omitted} monotone, but monotone_features omits them")
        effective = {n: (directions[n] if scope == "all" or n in info.monotone_features else "free") for n in names}
        free = [n for n in names if effective[n] == "free"]
        if free and not self.allow_free_features:
            why = "" if scope == "all" else f" (scope {scope!r} promises no direction per feature)"
            problems.append(f"feature(s) {free} are free{why}; the policy refuses free features (MONOSERVE_ALLOW_FREE_FEATURES)")
        decreasing = [n for n in names if effective[n] == "decreasing"]
        if decreasing and not self.allow_decreasing_features:
            problems.append(f"feature(s) {decreasing} are decreasing; the policy refuses decreasing features "
                            "(MONOSERVE_ALLOW_DECREASING_FEATURES)")
        return problems

    def _regressor(self, manifest: "Manifest") -> list[str]:
        """Every non-free feature is certified (monotone_features lists exactly those)."""
        info = manifest.regressor
        if info is None:
            return ["a regressor manifest needs a 'regressor' section"]
        directions = {f.name: f.direction for f in info.features}
        problems = []
        unknown = [n for n in info.monotone_features if n not in directions]
        if unknown:
            problems.append(f"monotone_features names unknown feature(s) {unknown}")
        omitted = [n for n, d in directions.items() if d != "free" and n not in info.monotone_features]
        if omitted:
            problems.append(f"feature(s) {omitted} have a direction, but monotone_features omits them")
        free = [n for n, d in directions.items() if d == "free"]
        if free and not self.allow_free_features:
            problems.append(f"feature(s) {free} are free; the policy refuses free features (MONOSERVE_ALLOW_FREE_FEATURES)")
        decreasing = [n for n, d in directions.items() if d == "decreasing"]
        if decreasing and not self.allow_decreasing_features:
            problems.append(f"feature(s) {decreasing} are decreasing; the policy refuses decreasing features "
                            "(MONOSERVE_ALLOW_DECREASING_FEATURES)")
        return problems

    def certified_features(self, manifest: "Manifest") -> list[tuple[int, str, str]]:
        """(column, name, direction) of every feature whose direction the certificate must prove."""
        info = manifest.classifier if manifest.classifier is not None else manifest.regressor
        assert info is not None
        claimed = set(info.monotone_features)
        scope = getattr(info, "scope", None)  # a regressor certifies exactly its monotone_features
        return [(index, f.name, f.direction) for index, f in enumerate(info.features)
                if f.direction != "free" and (scope == "all" or f.name in claimed)]

    def to_dict(self) -> dict[str, bool]:
        return {"allow_free_features": self.allow_free_features,
                "allow_decreasing_features": self.allow_decreasing_features,
                "allow_unconstrained": self.allow_unconstrained}


# What the policy requires of each kind's manifest (empty: it may be proven), by kind. The built-in
# kinds' rules are here; a kind added by service.compute.kinds.register_kind brings its own.
PolicyRule = Callable[[Policy, "Manifest"], list[str]]
KIND_RULES: dict[str, PolicyRule] = {"smoother": Policy._smoother, "classifier": Policy._classifier,
                                     "regressor": Policy._regressor}


def register_rule(kind: str, rule: PolicyRule) -> None:
    known = KIND_RULES.get(kind)
    if known is not None and known is not rule:
        raise ValueError(f"kind {kind!r} has a policy rule already")
    KIND_RULES[kind] = rule
