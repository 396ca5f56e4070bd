"""The numpy checkers: the single definition of each rule (no torch)."""

import subprocess
import sys

import numpy as np
import pytest

from contract.checks import (
    ConstraintViolationError,
    check_all,
    check_monotone_nondecreasing,
    check_nonnegative,
    check_positive,
    check_rule,
    check_sums_to_one,
)
from contract.modes import EDGE_MODES, mode_pads, mode_slice, output_length


def test_nonnegative_reports_every_violation_with_index_and_value():
    weights = np.array([[0.5, -0.1], [0.0, -2.0]])
    found = check_nonnegative("layers.0.weight", weights)
    assert [(v.index, v.value) for v in found] == [((0, 1), -0.1), ((1, 1), -2.0)]
    assert all(v.tensor == "layers.0.weight" and v.rule == "nonnegative" for v in found)
    assert ">= 0" in str(found[0]) and "-0.1" in str(found[0])


def test_nonnegative_columns_only_checks_those_columns():
    weights = np.array([[-1.0, 2.0, -3.0]])
    assert [v.index for v in check_nonnegative("w", weights, columns=[1, 2])] == [(0, 2)]
    assert check_nonnegative("w", weights, columns=[1]) == []


def test_tolerance_and_non_finite_values():
    assert check_nonnegative("w", np.array([-1e-9]), tolerance=1e-6) == []
    found = check_nonnegative("w", np.array([1.0, np.nan, np.inf]))
    assert [v.index for v in found] == [(1,), (2,)]
    assert all("finite" in v.expected for v in found)


def test_positive_rejects_zero():
    assert [v.index for v in check_positive("scale", np.array([1.0, 0.0, 2.0]))] == [(1,)]


def test_monotone_names_the_later_element_and_the_step():
    kernel = np.array([0.1, 0.2, 0.15, 0.3])
    (violation,) = check_monotone_nondecreasing("kernel", kernel)
    assert violation.index == (2,)
    assert violation.value == pytest.approx(-0.05)
    assert check_monotone_nondecreasing("kernel", np.sort(kernel)) == []
    # along another axis
    grid = np.array([[0.0, 1.0], [1.0, 0.5]])
    assert [v.index for v in check_monotone_nondecreasing("g", grid, axis=0)] == [(1, 1)]


def test_sums_to_one_per_slice():
    rows = np.array([[0.5, 0.5], [0.2, 0.3]])
    (violation,) = check_sums_to_one("k", rows, tolerance=1e-6)
    assert violation.index == (1,) and violation.value == pytest.approx(0.5)


def test_dispatch_by_rule_name_and_error_lists_all():
    specs = [
        ({"tensor": "a", "rule": "nonnegative"}, np.array([-1.0, -2.0])),
        ({"tensor": "b", "rule": "monotone_nondecreasing"}, np.array([2.0, 1.0])),
    ]
    violations = check_all(specs)
    assert [(v.tensor, v.index) for v in violations] == [("a", (0,)), ("a", (1,)), ("b", (1,))]
    error = ConstraintViolationError(violations)
    assert "3 violation(s)" in str(error) and "b[1]" in str(error)
    with pytest.raises(ValueError, match="unknown rule"):
        check_rule("bogus", "x", np.zeros(1))


def test_checkers_import_no_torch():
    code = "import sys, contract.checks, contract.modes, contract.manifest; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mode", EDGE_MODES)
@pytest.mark.parametrize("length", [1, 3, 7, 20])
def test_mode_slices_match_explicit_padding(mode, length):
    """Slicing the full correlation equals padding for the mode and correlating (numpy reference)."""
    rng = np.random.default_rng(length)
    kernel_size = 5
    kernel = rng.random(kernel_size)
    signal = rng.standard_normal(length)
    pad = kernel_size - 1
    full = np.correlate(np.pad(signal, (pad, pad), mode="edge"), kernel, mode="valid")
    left, right = mode_pads(mode, kernel_size)
    direct = np.correlate(np.pad(signal, (left, right), mode="edge"), kernel, mode="valid") if (
        length + left + right >= kernel_size) else np.zeros(0)
    sliced = full[mode_slice(mode, length, kernel_size)]
    assert sliced.shape == (output_length(mode, length, kernel_size),)
    np.testing.assert_allclose(sliced, direct, atol=1e-12)
