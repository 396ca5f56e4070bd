"""service.compute.convolve: engine (ONNX Runtime), direct (blocked GEMM) and FFT full correlation vs a float64 reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.modes import EDGE_MODES, mode_pads, mode_slice, output_length
from service.compute.convolve import choose_method, full_correlation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from graphs import full_correlation_model, session_for  # noqa: E402

KERNEL_SIZES = (1, 3, 7, 31, 63, 127, 255)


def increasing_kernel(kernel_size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kernel = np.sort(rng.random(kernel_size) + 0.01).astype(np.float32)
    return kernel / kernel.sum()


def reference_full(signals: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """float64: replicate-pad K-1 each side, then valid correlation (the exported graph's contract)."""
    kernel_size = kernel.shape[0]
    padded = np.pad(signals.astype(np.float64), ((0, 0), (kernel_size - 1, kernel_size - 1)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel_size, axis=-1)
    return windows @ kernel.astype(np.float64)


def reference_mode(signals: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Each mode computed on its own, the way eager torch does it (mode_pads), not as a slice."""
    left, right = mode_pads(mode, kernel.shape[0])
    padded = np.pad(signals.astype(np.float64), ((0, 0), (left, right)), mode="edge")
    if padded.shape[-1] < kernel.shape[0]:
        return np.zeros((signals.shape[0], 0))
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[0], axis=-1)
    return windows @ kernel.astype(np.float64)


def tolerance(signals: np.ndarray) -> float:
    # float32 rounding grows with the signal's magnitude; 1e-4 relative to it is the export tolerance.
    return 1e-4 * max(1.0, float(np.abs(signals).max()))


@pytest.fixture(scope="module")
def sessions() -> dict[int, object]:
    return {k: session_for(full_correlation_model(increasing_kernel(k))) for k in KERNEL_SIZES}


def lengths_for(kernel_size: int) -> list[int]:
    return sorted({1, 2, max(1, kernel_size - 1), kernel_size, kernel_size + 1, 100, 4099})


CASES = [(k, n) for k in KERNEL_SIZES for n in lengths_for(k)]


@pytest.mark.parametrize(("kernel_size", "length"), CASES)
def test_every_method_equals_the_float64_reference(sessions, kernel_size: int, length: int) -> None:
    rng = np.random.default_rng(kernel_size * 10_007 + length)
    kernel = increasing_kernel(kernel_size)
    signals = (rng.standard_normal((3, length)) * 50 + 20).astype(np.float32)
    expected = reference_full(signals, kernel)
    outputs = {
        "fft": full_correlation(signals, kernel, method="fft"),
        "direct": full_correlation(signals, kernel, method="direct"),
        "engine": full_correlation(signals, kernel, method="engine", session=sessions[kernel_size]),
        "auto": full_correlation(signals, kernel, session=sessions[kernel_size]),
        "auto without a session": full_correlation(signals, kernel),
    }
    for name, out in outputs.items():
        assert out.dtype == np.float32, name
        assert out.shape == (3, length + kernel_size - 1), name
        np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance(signals), err_msg=name)
    # the fast paths and the plain path (the exported graph) agree within the export tolerance
    for name in ("fft", "direct"):
        np.testing.assert_allclose(outputs[name], outputs["engine"], rtol=0, atol=tolerance(signals), err_msg=name)


@pytest.mark.parametrize("mode", EDGE_MODES)
@pytest.mark.parametrize(("kernel_size", "length"), [(1, 1), (7, 1), (7, 3), (31, 30), (31, 500), (255, 100), (255, 3000)])
def test_mode_slices_of_both_methods_equal_each_mode_computed_on_its_own(
    sessions, mode: str, kernel_size: int, length: int
) -> None:
    rng = np.random.default_rng(length)
    kernel = increasing_kernel(kernel_size)
    signals = rng.standard_normal((2, length)).astype(np.float32)
    expected = reference_mode(signals, kernel, mode)
    assert expected.shape[-1] == output_length(mode, length, kernel_size)
    window = mode_slice(mode, length, kernel_size)
    for method in ("engine", "direct", "fft"):
        full = full_correlation(signals, kernel, method=method, session=sessions[kernel_size])
        np.testing.assert_allclose(full[:, window], expected, rtol=0, atol=tolerance(signals), err_msg=method)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("mode", ["same", "causal"])
def test_constant_signal_passes_unchanged_through_a_normalized_kernel(method: str, mode: str) -> None:
    kernel = increasing_kernel(255)
    signals = np.full((2, 5000), 7.25, dtype=np.float32)
    full = full_correlation(signals, kernel, method=method)
    np.testing.assert_allclose(full[:, mode_slice(mode, 5000, 255)], 7.25, rtol=0, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    kernel_size=st.integers(1, 300),
    length=st.integers(1, 3000),
    rows=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_fft_and_direct_agree_on_random_shapes(kernel_size: int, length: int, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    kernel = rng.random(kernel_size).astype(np.float32)
    signals = rng.standard_normal((rows, length)).astype(np.float32)
    fft = full_correlation(signals, kernel, method="fft")
    direct = full_correlation(signals, kernel, method="direct")
    expected = reference_full(signals, kernel)
    atol = 1e-4 * max(1.0, float(np.abs(kernel).sum() * np.abs(signals).max()))
    np.testing.assert_allclose(fft, expected, rtol=0, atol=atol)
    np.testing.assert_allclose(direct, expected, rtol=0, atol=atol)


def test_float64_and_non_contiguous_input_is_computed_as_float32() -> None:
    kernel = increasing_kernel(31)
    signals = np.random.default_rng(1).standard_normal((4, 2000))
    strided = signals[::2, ::2]  # not contiguous
    out = full_correlation(strided, kernel)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference_full(strided.astype(np.float32), kernel), rtol=0, atol=1e-4)


def test_auto_follows_the_measured_rule() -> None:
    # The long-kernel workload goes to FFT, the default 31-tap smoother on long signals to the
    # blocked direct product, tiny problems to the engine.
    assert choose_method(255, 1_000_000) == "fft"
    assert choose_method(31, 125_000) == "direct"
    assert choose_method(31, 256) == "engine"
    assert choose_method(3, 1_000_000) == "engine"
    order = {"engine": 0, "direct": 1, "fft": 2}
    for length in (1, 256, 4096, 10**6):  # a longer kernel never moves back to a cheaper-looking method
        methods = [order[choose_method(k, length)] for k in range(12, 600, 7)]
        assert methods == sorted(methods)
    for kernel_size in range(12, 192, 7):  # a longer signal never moves from direct back to the engine
        methods = [order[choose_method(kernel_size, n)] for n in (1, 16, 256, 4096, 65536, 10**6)]
        assert methods == sorted(methods)


def test_direct_handles_many_short_rows_and_blocks_that_do_not_divide_the_length() -> None:
    rng = np.random.default_rng(9)
    kernel = increasing_kernel(31)
    for rows, length in [(1000, 40), (2, 1), (3, 33), (1, 100_003)]:
        signals = rng.standard_normal((rows, length)).astype(np.float32)
        got = full_correlation(signals, kernel, method="direct")
        np.testing.assert_allclose(got, reference_full(signals, kernel), rtol=0, atol=1e-4 * max(1.0, float(np.abs(signals).max())))


@pytest.mark.parametrize(
    ("signals", "kernel", "method", "message"),
    [
        (np.zeros((2, 5), np.float32), np.ones(3, np.float32), "overlap", "unknown convolution method 'overlap'"),
        (np.zeros((2, 3, 5), np.float32), np.ones(3, np.float32), "auto", r"signals must have shape \[N, L\]"),
        (np.zeros((2, 0), np.float32), np.ones(3, np.float32), "auto", "at least one sample"),
        (np.zeros((2, 5), np.float32), np.ones(0, np.float32), "fft", "at least one tap"),
        (np.zeros((2, 5), np.float32), np.ones(3, np.float32), "engine", "needs the ONNX Runtime session"),
    ],
)
def test_bad_arguments_are_named(signals, kernel, method, message) -> None:
    with pytest.raises(ValueError, match=message):
        full_correlation(signals, kernel, method=method)
