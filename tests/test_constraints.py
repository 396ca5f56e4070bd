"""The parametrizations of models/constraints.py: rules hold for any raw value, right_inverse round-trips."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from contract.checks import check_monotone_nondecreasing, check_nonnegative, check_positive, check_sums_to_one
from models.constraints import (
    NONNEG_KINDS,
    ExpCumsumKernel,
    Nonnegative,
    SoftmaxKernel,
    folded_state_dict,
    monotone_kernel,
    nonnegative,
    project_nonnegative_,
    softmax_kernel,
)


class Holder(nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(value.clone())


@pytest.mark.parametrize("kind", NONNEG_KINDS)
def test_nonnegative_holds_for_adversarial_raw_values(kind):
    raw = torch.linspace(-30.0, 30.0, 101).reshape(1, -1) * torch.tensor([[1.0], [-1.0]])  # [2, 101]
    value = Nonnegative(kind)(raw)
    assert check_nonnegative("w", value.numpy()) == []
    assert torch.isfinite(value).all()


@pytest.mark.parametrize("kind", NONNEG_KINDS)
def test_nonnegative_right_inverse_round_trips(kind):
    value = torch.tensor([[0.01, 0.5, 1.0], [2.0, 7.5, 40.0]], dtype=torch.float64)
    holder = Holder(value)
    nonnegative(holder, "weight", kind=kind)  # registering must keep the current value
    torch.testing.assert_close(holder.weight, value, rtol=1e-6, atol=1e-9)
    # and the raw tensor is what the map inverts to
    torch.testing.assert_close(Nonnegative(kind)(holder.parametrizations.weight.original), value, rtol=1e-6, atol=1e-9)


def test_nonnegative_columns_constrain_only_those_columns():
    value = torch.tensor([[-2.0, 0.5, -3.0], [1.0, 2.0, -0.5]])
    holder = Holder(value)
    nonnegative(holder, "weight", columns=[1])
    torch.testing.assert_close(holder.weight, value)  # column 1 was already positive: kept exactly
    with torch.no_grad():
        holder.parametrizations.weight.original.fill_(-5.0)
    weight = holder.weight
    assert (weight[:, 1] > 0).all()  # constrained column: softplus(-5) > 0
    assert (weight[:, [0, 2]] == -5.0).all()  # free columns pass through unchanged
    assert check_nonnegative("w", weight.detach().numpy(), columns=[1]) == []
    assert len(check_nonnegative("w", weight.detach().numpy())) == 4


def test_unknown_nonnegative_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown nonnegative kind 'relu'"):
        Nonnegative("relu")


@pytest.mark.parametrize("normalize", [True, False])
def test_exp_cumsum_kernel_is_positive_increasing_for_any_logits(normalize):
    torch.manual_seed(0)
    logits = torch.randn(4, 9) * 10.0  # wildly negative and positive logits
    kernel = ExpCumsumKernel(normalize)(logits).numpy()
    assert check_positive("kernel", kernel) == []
    assert check_monotone_nondecreasing("kernel", kernel) == []
    if normalize:
        assert check_sums_to_one("kernel", kernel, tolerance=1e-5) == []


@pytest.mark.parametrize("normalize", [True, False])
def test_exp_cumsum_right_inverse_round_trips(normalize):
    kernel = torch.tensor([0.02, 0.05, 0.1, 0.18, 0.25, 0.4], dtype=torch.float64)
    if normalize:
        kernel = kernel / kernel.sum()
    holder = Holder(kernel)
    monotone_kernel(holder, "weight", normalize=normalize)
    torch.testing.assert_close(holder.weight, kernel, rtol=1e-9, atol=1e-12)


def test_softmax_kernel_right_inverse_round_trips_and_has_one_raw_parameter():
    lin = torch.linspace(-1.0, 1.0, 7).double()  # the module's own (float32) grid
    kernel = torch.softmax(lin * 2.5, dim=-1)
    holder = Holder(kernel)
    softmax_kernel(holder, "weight")
    assert holder.parametrizations.weight.original.shape == (1,)  # alpha only: no dead offset
    torch.testing.assert_close(holder.weight, kernel, rtol=1e-9, atol=1e-12)
    alpha = SoftmaxKernel(7).alpha(holder.parametrizations.weight.original)
    assert float(alpha.detach()) == pytest.approx(2.5, rel=1e-9)


def test_softmax_kernel_increasing_for_any_raw_alpha():
    for raw in (-20.0, -1.0, 0.0, 3.0, 30.0):
        kernel = SoftmaxKernel(11)(torch.tensor([raw])).numpy()
        assert check_positive("kernel", kernel) == []
        assert check_monotone_nondecreasing("kernel", kernel) == []
        assert check_sums_to_one("kernel", kernel, tolerance=1e-5) == []


def test_softmax_right_inverse_names_the_expected_shape():
    with pytest.raises(AssertionError, match="expected a kernel of 5 taps, got shape"):
        SoftmaxKernel(5).right_inverse(torch.ones(3) / 3)


def test_project_clamps_only_the_given_columns():
    weight = torch.tensor([[-1.0, -2.0, 3.0], [4.0, -5.0, -6.0]])
    project_nonnegative_(weight, columns=[0, 2])
    assert weight.tolist() == [[0.0, -2.0, 3.0], [4.0, -5.0, 0.0]]
    project_nonnegative_(weight)
    assert (weight >= 0).all()


def test_parametrized_value_is_recomputed_from_the_raw_tensor_on_every_access():
    holder = Holder(torch.full((3,), 0.5))
    nonnegative(holder, "weight", kind="exp")
    before = holder.weight.detach().clone()
    with torch.no_grad():
        holder.parametrizations.weight.original.add_(1.0)
    torch.testing.assert_close(holder.weight.detach(), before * torch.e)


def test_folded_state_dict_holds_constrained_values_under_plain_names():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    nonnegative(model[0], "weight")
    with torch.no_grad():
        model[0].parametrizations.weight.original.fill_(-3.0)
    folded = folded_state_dict(model)
    assert set(folded) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    torch.testing.assert_close(folded["0.weight"], torch.nn.functional.softplus(torch.full((2, 3), -3.0)))
    assert parametrize.is_parametrized(model[0])  # folding does not change the model
