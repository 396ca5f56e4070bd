"""Feature ranges: the manifest's optional, validated `feature_ranges`, a declaration's `ranges`
for imported models, and a refused export when a checkpoint's recorded ranges are malformed.
An imported linear ONNX graph (onnx.helper, exact weights) is explained: its contributions sum to
x . w + b computed here in float64."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from contract.manifest import Manifest
from contract.spec import SpecError, parse_spec
from service.app import create_app
from service.settings import Settings
from service_fixtures import reference_repo

WEIGHTS = np.array([[0.75], [1.5], [0.25]], dtype=np.float32)  # nonnegative: every feature increasing
BIAS = np.array([-2.0], dtype=np.float32)
FEATURES = ["age", "income", "debt"]
RANGES = {"age": [18.0, 90.0], "income": [0.0, 5.0], "debt": [0.0, 3.0]}


def linear_graph() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(BIAS, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def declaration(**extra) -> dict:
    return {"kind": "classifier", "features": FEATURES, "labels": ["default"], "output": "logits", "monotone": "all",
            **extra}


def test_an_imported_model_keeps_its_declared_ranges_and_is_explained_exactly(tmp_path):
    from export.byom import import_onnx

    onnx.save(linear_graph(), tmp_path / "linear.onnx")
    result = import_onnx(tmp_path / "linear.onnx", tmp_path / "repo", "linear", declaration(ranges=RANGES))
    ranges = Manifest.read(result.version_dir).feature_ranges
    assert {name: [r.low, r.high] for name, r in ranges.items()} == RANGES
    x = np.array([[30.0, 1.25, 0.5], [18.0, 0.0, 0.0], [90.0, 5.0, 3.0]])
    with TestClient(create_app(Settings(repo=tmp_path / "repo", device="cpu", poll_interval_s=0, cpu_threads=1))) as client:
        answer = client.post("/explain", json={"model": "linear", "instances": x.tolist()}).json()
    assert answer["additive"]["additive"] is True and answer["ranges"] == RANGES
    exact = x @ WEIGHTS.astype(np.float64)[:, 0] + float(BIAS[0])
    for row, item, logit in zip(x, answer["explanations"], exact):
        terms = item["contributions"]["terms"]
        assert [terms[name] for name in FEATURES] == pytest.approx((row * WEIGHTS[:, 0]).tolist(), abs=1e-12)
        assert item["contributions"]["bias"] + sum(terms.values()) == pytest.approx(logit, abs=1e-9)
    # declared ranges and proven directions: every feature of every point is searched
    assert all(set(item["recourse"]) == set(FEATURES) for item in answer["explanations"])


@pytest.mark.parametrize("ranges, words", [
    ({"age": [90.0, 18.0]}, ["ranges", "low <= high"]),
    ({"height": [0.0, 1.0]}, ["ranges", "height"]),
    ({"age": [1.0]}, ["ranges"]),
    ({"age": ["a", 2.0]}, ["ranges"]),
])
def test_bad_declared_ranges_are_refused_naming_the_key(ranges, words):
    with pytest.raises(SpecError) as caught:
        parse_spec(declaration(ranges=ranges))
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_the_manifest_validates_its_ranges_and_old_manifests_stay_valid():
    path = reference_repo() / "classifier" / "1" / "manifest.json"
    old = Manifest.model_validate_json(path.read_text())  # written without ranges
    assert old.feature_ranges is None
    data = old.model_dump(mode="json")
    data["feature_ranges"] = {"clicks": {"low": 0.0, "high": 1.0}}
    assert Manifest.model_validate(data).feature_ranges["clicks"].high == 1.0
    for bad, word in (({"nope": {"low": 0.0, "high": 1.0}}, "nope"), ({"clicks": {"low": 2.0, "high": 1.0}}, "low <= high"),
                      ({"clicks": {"low": "0", "high": 1.0}}, "low"), ({"clicks": {"low": float("nan"), "high": 1.0}}, "low")):
        data["feature_ranges"] = bad
        with pytest.raises(ValidationError) as caught:
            Manifest.model_validate(data)
        assert word in str(caught.value)


def test_a_checkpoint_with_malformed_ranges_publishes_nothing(tmp_path):
    import torch

    from export.core import export_checkpoint
    from export.errors import ExportInputError
    from models.checkpoint import save_checkpoint
    from models.classifier import ClassifierConfig, MonotoneClassifier

    torch.manual_seed(0)
    model = MonotoneClassifier(ClassifierConfig(feature_names=["a", "b"], labels=["y"], hidden=[4], scope="all",
                                                method="reparam", directions=["increasing", "increasing"]))
    for ranges, word in (({"a": [1.0, 0.0]}, "low 1 > high 0"), ({"zz": [0.0, 1.0]}, "unknown feature 'zz'"),
                         ({"a": [0.0, float("inf")]}, "two finite numbers")):
        checkpoint = save_checkpoint(tmp_path / "c.ckpt", model, provenance={"feature_ranges": ranges})
        with pytest.raises(ExportInputError) as caught:
            export_checkpoint(checkpoint, tmp_path / "repo", name="c", formats=("onnx",))
        assert word in str(caught.value)
        assert not (tmp_path / "repo" / "c" / "1").exists()
