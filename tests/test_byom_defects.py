"""Two defects found while bringing users' models in (issue 16):

(a) an all-ones feature_scale and an all-ones direction_sign are merged into one ONNX initializer by
    the exporter's optimizer; the TorchScript proof must still build its reference from the graph;
(b) a value a parametrization cannot represent is refused, never silently clamped into another model.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from export.core import export_checkpoint
from models.checkpoint import save_checkpoint
from models.classifier import ClassifierConfig, MonotoneClassifier
from models.constraints import UnrepresentableError
from models.smoother import MonotoneSmoother, SmootherConfig
from service.repository.prover import prove_version


def test_equal_tensors_shared_by_the_onnx_exporter_pass_the_torchscript_proof(tmp_path):
    torch.manual_seed(0)
    config = ClassifierConfig(feature_names=["a", "b", "c"], labels=["y"], hidden=[4], scope="all", method="reparam",
                              directions=["increasing"] * 3)
    model = MonotoneClassifier(config).eval()  # never fitted: feature_scale is all ones, like direction_sign
    assert torch.equal(model.feature_scale, model.direction_sign)
    checkpoint = save_checkpoint(tmp_path / "ones.pt", model)
    result = export_checkpoint(checkpoint, tmp_path / "repo", name="ones", formats=("onnx", "torchscript"))
    stored = {init.name for init in onnx.load(str(result.version_dir / "model.onnx")).graph.initializer}
    assert "direction_sign" not in stored and "feature_scale" in stored  # the exporter merged them
    report, proven = prove_version(result.version_dir, engine="torchscript")
    assert report.ok and proven is not None, report.render()
    step = next(s for s in report.steps if s.step == "probe")
    assert step.status == "ok"


def test_a_shared_initializer_does_not_let_a_wrong_sign_through(tmp_path):
    """The alias takes the graph's values: a model.ts whose direction_sign differs is still refused."""
    from service.repository.torchscript_proof import TorchScriptRefused, _with_shared_initializers

    import numpy as np

    onnx_tensors = {"feature_scale": np.ones(3, np.float32)}
    candidate = {"feature_scale": torch.ones(3), "direction_sign": torch.tensor([1.0, -1.0, 1.0])}
    view, aliases = _with_shared_initializers(candidate, onnx_tensors, {"feature_scale"})
    assert aliases == {} and "direction_sign" not in view
    candidate["direction_sign"] = torch.ones(3)
    view, aliases = _with_shared_initializers(candidate, onnx_tensors, {"feature_scale"})
    assert aliases == {"direction_sign": "feature_scale"}
    assert TorchScriptRefused  # the refusal class the prover raises when a name stays missing


@pytest.mark.parametrize("param", ["exp-cumsum", "softmax"])
def test_assigning_a_reversed_kernel_is_an_error_not_a_clamp(param):
    smoother = MonotoneSmoother(SmootherConfig(kernel_size=5, param=param))
    before = smoother.kernel.detach().clone()
    reversed_kernel = before.flip(0)
    with pytest.raises(UnrepresentableError) as refused:
        smoother.kernel = reversed_kernel
    assert "refused rather than clamped" in str(refused.value)
    assert torch.equal(smoother.kernel.detach(), before)  # nothing changed
    representable = torch.softmax(torch.linspace(-1, 1, 5) * 2.0, dim=0)
    smoother.kernel = representable  # a kernel it can represent is still assigned
    torch.testing.assert_close(smoother.kernel.detach(), representable, atol=1e-6, rtol=1e-4)


def test_assigning_an_unnormalized_kernel_to_a_normalized_parametrization_is_an_error():
    smoother = MonotoneSmoother(SmootherConfig(kernel_size=3, param="exp-cumsum", normalize=True))
    with pytest.raises(UnrepresentableError) as refused:
        smoother.kernel = torch.tensor([1.0, 2.0, 3.0])
    assert "sums to 6" in str(refused.value)


def test_assigning_a_negative_weight_to_a_nonnegative_layer_is_an_error():
    config = ClassifierConfig(feature_names=["a", "b"], labels=["y"], hidden=[3], scope="final", method="reparam")
    model = MonotoneClassifier(config)
    layer = model.layers[-1]
    weight = layer.weight.detach().clone()
    weight[0, 1] = -0.25
    with pytest.raises(UnrepresentableError) as refused:
        layer.weight = weight
    assert "-0.25" in str(refused.value)
