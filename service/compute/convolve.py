"""The smoother's full correlation, three ways (numpy/scipy, no torch).

The contract (contract.modes): pad each signal by replicating its first and last sample K-1 times,
then take the valid correlation with the K-tap kernel, so a signal of L samples gives L + K - 1.
Every edge mode is a slice of that (contract.modes.mode_slice).

- ``engine``: the exported ONNX graph run by ONNX Runtime (needs its session). ORT's Conv
  unrolls each signal into a K x L matrix first (im2col), so it moves K times the signal through
  memory: about 3 multiply-adds per nanosecond here.
- ``direct``: direct correlation as one matrix product per block of P outputs: the padded signal
  is cut into overlapping windows of P + K - 1 samples (a strided view) and multiplied by a
  [P + K - 1, P] banded (Toeplitz) matrix holding the kernel, by BLAS. More multiply-adds than K
  per output (P + K - 1), but at BLAS speed and cache-resident: about 3x faster than the engine
  for the 31-tap smoother.
- ``fft``: overlap-add FFT convolution (scipy.signal.oaconvolve) of the edge-padded signal with
  the reversed kernel: cost nearly flat in K, the fastest for long kernels.

`choose_method(K, L)` picks the fastest from a rule fitted to measurements on this machine
(bench/convolve_crossover.py writes bench/results/convolve_crossover.{json,md}; the constants
below come from that table). All three agree within float32 rounding (tests/test_convolve.py).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from contract.padding import pad as pad_signal

Method = Literal["auto", "engine", "direct", "fft"]
METHODS: tuple[str, ...] = ("auto", "engine", "direct", "fft")

# Crossover rule, fitted to bench/results/convolve_crossover.md (8 signals, one CPU thread):
# - from FFT_MIN_KERNEL taps FFT won at (nearly) every length, 256 samples included;
# - up to ENGINE_MAX_KERNEL taps, or up to ENGINE_MAX_WORK multiply-adds per signal (K * L), the
#   engine won: its one call beats numpy's per-call overheads, and for a few taps im2col is cheap;
# - in between the blocked direct product won, 1.4-4x faster than the engine (2.2x for the
#   31-tap smoother on 125,000 samples), and faster than FFT up to 127 taps.
FFT_MIN_KERNEL = 192
ENGINE_MAX_KERNEL = 11
ENGINE_MAX_WORK = 40_000
DIRECT_BLOCK_ELEMENTS = 1 << 19  # window samples per matmul call: bounds the copy numpy makes of them


def choose_method(kernel_size: int, length: int) -> Literal["engine", "direct", "fft"]:
    """The fastest method for a K-tap kernel over signals of `length` samples (measured rule)."""
    if kernel_size >= FFT_MIN_KERNEL:
        return "fft"
    if kernel_size <= ENGINE_MAX_KERNEL or kernel_size * length <= ENGINE_MAX_WORK:
        return "engine"
    return "direct"


def edge_pad(signals: np.ndarray, left: int, right: int | None = None, padding: str = "replicate") -> np.ndarray:
    """[N, L] -> [N, left + L + right] (float32, C order), padded as the smoother's `padding` says
    (contract.padding: replicate, by default, repeats the first and last sample)."""
    right = left if right is None else right
    return pad_signal(signals, left, right, padding)


def block_size(kernel_size: int) -> int:
    """Outputs per window: large enough to amortize the K - 1 overlap, small enough to stay in cache."""
    return 32 if kernel_size <= 48 else 64 if kernel_size <= 128 else 128


def full_correlation_direct(signals: np.ndarray, kernel: np.ndarray, padding: str = "replicate") -> np.ndarray:
    """Direct correlation as blocked matrix products (see the module docstring)."""
    n, length = signals.shape
    kernel_size = kernel.shape[0]
    out_length = length + kernel_size - 1
    block = block_size(kernel_size)
    blocks = -(-out_length // block)
    window = block + kernel_size - 1
    # K-1 padded samples on the left; on the right K-1 padded samples, then anything up to whole blocks
    # (the outputs they make are cut off below).
    if padding == "replicate":  # the default, padded in one copy
        padded = edge_pad(signals, kernel_size - 1, blocks * block - length)
    else:
        padded = np.zeros((n, kernel_size - 1 + blocks * block + kernel_size - 1), dtype=np.float32)
        padded[:, : length + 2 * (kernel_size - 1)] = edge_pad(signals, kernel_size - 1, kernel_size - 1, padding)
    banded = np.zeros((window, block), dtype=np.float32)  # banded[j + i, j] = kernel[i]
    for column in range(block):
        banded[column : column + kernel_size, column] = kernel
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=-1)[:, ::block]  # [N, blocks, window]
    out = np.empty((n, blocks, block), dtype=np.float32)
    step = max(1, DIRECT_BLOCK_ELEMENTS // max(1, n * window))
    for start in range(0, blocks, step):
        np.matmul(windows[:, start : start + step], banded, out=out[:, start : start + step])
    return out.reshape(n, blocks * block)[:, :out_length]


def full_correlation_engine(signals: np.ndarray, session: Any) -> np.ndarray:
    """The exported graph (input [B, C, L] -> full [B, C, L + K - 1]) with B = N, C = 1."""
    inputs = session.get_inputs()
    (full,) = session.run(None, {inputs[0].name: signals[:, None, :]})
    return full.reshape(signals.shape[0], -1)


def full_correlation_fft(signals: np.ndarray, kernel: np.ndarray, padding: str = "replicate") -> np.ndarray:
    """Overlap-add convolution of the edge-padded signal with the reversed kernel."""
    from scipy.signal import oaconvolve  # imported on first use: scipy.signal costs ~0.2 s

    kernel_size = kernel.shape[0]
    padded = edge_pad(signals, kernel_size - 1, kernel_size - 1, padding)
    # valid length = (L + 2(K-1)) - K + 1 = L + K - 1; correlation = convolution with kernel[::-1]
    reversed_kernel = np.ascontiguousarray(kernel[::-1], dtype=np.float32)[None, :]
    out = oaconvolve(padded, reversed_kernel, mode="valid", axes=-1)
    return out.astype(np.float32, copy=False)


def full_correlation(
    signals: np.ndarray,
    kernel: np.ndarray,
    *,
    session: Any | None = None,
    method: Method = "auto",
    padding: str = "replicate",
) -> np.ndarray:
    """Full correlation of each row of `signals` [N, L] with `kernel` [K] -> [N, L + K - 1] float32.

    `session`: an ONNX Runtime session of the exported smoother with this same kernel (needed for
    "engine"; without one, "auto" never picks it). `method`: "auto" (the measured rule),
    "engine", "direct" or "fft"; `padding`: how the edges are padded (contract.padding; the engine's
    graph pads as its manifest says). The result may be a view (rows contiguous).
    """
    if method not in METHODS:
        raise ValueError(f"unknown convolution method {method!r}; expected one of {', '.join(METHODS)}")
    if signals.ndim != 2:
        raise ValueError(f"signals must have shape [N, L], got {signals.shape}")
    kernel = np.asarray(kernel, dtype=np.float32).reshape(-1)
    if kernel.size == 0:
        raise ValueError("kernel must have at least one tap")
    if signals.shape[1] == 0:
        raise ValueError("signals must have at least one sample (L >= 1)")
    signals = np.ascontiguousarray(signals, dtype=np.float32)
    if method == "auto":
        method = choose_method(kernel.size, signals.shape[1])
        if method == "engine" and session is None:
            method = "direct"
    if method == "fft":
        return full_correlation_fft(signals, kernel, padding)
    if method == "engine":
        if session is None:
            raise ValueError("method 'engine' needs the ONNX Runtime session of the exported smoother")
        return full_correlation_engine(signals, session)
    return full_correlation_direct(signals, kernel, padding)
