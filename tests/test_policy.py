"""The service's policy against what manifests declare (no torch, no artifacts)."""

from __future__ import annotations

import pytest

from contract.manifest import Manifest
from contract.policy import Policy

KERNEL_RULES = [{"tensor": "kernel", "rule": r, "locations": {"onnx": "kernel"}}
                for r in ("positive", "monotone_nondecreasing", "sums_to_one")]
OUTPUT_RULE = [{"tensor": "layers.1.weight", "rule": "nonnegative", "locations": {"onnx": "layers.1.weight"}}]


def manifest(kind: str = "classifier", constraints=None, **section) -> Manifest:
    data = {
        "name": "m", "version": 1, "kind": kind, "created": "2026-01-01T00:00:00Z", "monoserve_version": "0",
        "source_checkpoint_sha256": "0" * 64, "source_checkpoint_name": "c.ckpt", "files": [],
        "probe": {"input": [], "expected": [], "atol": 1e-5},
    }
    if kind == "smoother":
        data |= {"inputs": [{"name": "signal", "dtype": "float32", "shape": ["b", "c", "l"]}],
                 "outputs": [{"name": "full", "dtype": "float32", "shape": ["b", "c", "l"]}],
                 "constraints": KERNEL_RULES if constraints is None else constraints,
                 "smoother": {"kernel_size": 5, "param": "exp-cumsum", "normalized": True} | section}
    else:
        info = {"features": [{"name": "a", "direction": "increasing"}, {"name": "b", "direction": "decreasing"},
                             {"name": "c", "direction": "free"}],
                "labels": ["y"], "scope": "all", "method": "reparam", "monotone_features": ["a", "b"]} | section
        data |= {"inputs": [{"name": "features", "dtype": "float32", "shape": ["batch", 3]}],
                 "outputs": [{"name": "scores", "dtype": "float32", "shape": ["batch", 1]}],
                 "constraints": OUTPUT_RULE if constraints is None else constraints, "classifier": info}
    return Manifest.model_validate(data)


def test_the_default_policy_accepts_honest_manifests():
    assert Policy().shortfalls(manifest()) == []
    assert Policy().shortfalls(manifest("smoother")) == []
    assert Policy().shortfalls(manifest("smoother", constraints=KERNEL_RULES[:2], normalized=False)) == []


def test_the_defaults_are_the_default_policy():
    assert Policy() == Policy(allow_free_features=True, allow_decreasing_features=True, allow_unconstrained=False)
    with pytest.raises(AttributeError):
        Policy().allow_unconstrained = True  # frozen: a proof cannot loosen it midway


@pytest.mark.parametrize("constraints, missing", [
    ([], "'positive'"), (KERNEL_RULES[:1], "'monotone_nondecreasing'"), (KERNEL_RULES[:2], "'sums_to_one'"),
])
def test_a_smoother_must_declare_every_kernel_rule(constraints, missing):
    problems = Policy().shortfalls(manifest("smoother", constraints=constraints))
    assert problems and any(missing in p for p in problems)


def test_a_classifier_must_declare_a_nonnegative_output_layer():
    problems = Policy().shortfalls(manifest(constraints=[]))
    assert problems == ["the policy requires a 'nonnegative' output layer, which the manifest's constraints do not declare"]


def test_dropping_monotone_features_under_scope_all_is_refused():
    problems = Policy().shortfalls(manifest(monotone_features=["a"]))
    assert problems == ["scope 'all' makes feature(s) ['b'] monotone, but monotone_features omits them"]


def test_claims_about_unknown_or_free_features_are_refused():
    problems = Policy().shortfalls(manifest(monotone_features=["a", "b", "c", "zzz"]))
    assert any("unknown feature(s) ['zzz']" in p for p in problems)
    assert any("free feature(s) ['c']" in p for p in problems)


def test_stricter_policies_refuse_free_and_decreasing_features():
    strict = Policy(allow_free_features=False, allow_decreasing_features=False)
    problems = strict.shortfalls(manifest())
    assert any("['c'] are free" in p for p in problems) and any("['b'] are decreasing" in p for p in problems)
    # scope final promises no direction per feature: every feature counts as free
    final = manifest(scope="final", monotone_features=[],
                     features=[{"name": n, "direction": "increasing"} for n in "abc"])
    assert Policy().shortfalls(final) == []
    assert any("['a', 'b', 'c'] are free (scope 'final'" in p for p in Policy(allow_free_features=False).shortfalls(final))


def test_certified_features_follow_scope_and_claims():
    assert Policy().certified_features(manifest()) == [(0, "a", "increasing"), (1, "b", "decreasing")]
    final = manifest(scope="final", monotone_features=["a"],
                     features=[{"name": n, "direction": "increasing"} for n in "abc"])
    assert Policy().certified_features(final) == [(0, "a", "increasing")]  # a claim is held to account


def test_unconstrained_scope_needs_the_setting():
    # Scope "none" is issue 12's unconstrained baseline; the manifest schema may not accept it yet,
    # so the policy is asked directly with a manifest whose scope was set after validation.
    unconstrained = manifest(constraints=[], scope="final", monotone_features=[])
    unconstrained.classifier.scope = "none"  # type: ignore[assignment]
    refused = Policy().shortfalls(unconstrained)
    assert any("MONOSERVE_ALLOW_UNCONSTRAINED" in p for p in refused)
    assert Policy(allow_unconstrained=True).shortfalls(unconstrained) == []


def test_settings_build_the_policy(monkeypatch):
    from service.settings import Settings

    assert Settings().policy == Policy()
    monkeypatch.setenv("MONOSERVE_ALLOW_FREE_FEATURES", "false")
    monkeypatch.setenv("MONOSERVE_ALLOW_UNCONSTRAINED", "true")
    assert Settings().policy == Policy(allow_free_features=False, allow_unconstrained=True)
