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


DIRECT_BLOCK = 32  # outputs per block row of the direct method


def full_correlation_direct(signals: np.ndarray, kernel: np.ndarray, padding: str = "replicate") -> np.ndarray:
    """Direct correlation as T + 1 accumulated matrix products, T = ceil((K - 1) / P).

    Each padded signal is cut into rows of P samples (a reshape: no copy) and the rows of every
    signal are stacked into one [R, P] matrix. Output block b needs samples of rows b .. b + T, so
    out[b] = sum_t rows[b + t] @ band_t, with band_t the t-th [P, P] slice of the banded (Toeplitz)
    kernel matrix. Each product reads a contiguous matrix that BLAS takes as it is (the earlier
    form, one product of overlapping windows, made numpy copy the windows or leave BLAS), and all
    signals go in the same T + 1 calls: about 2x faster for the 31-tap smoother (bench/convolve_crossover.py).
    The rows where one signal's blocks run into the next signal's are computed and cut off.
    """
    n, length = signals.shape
    kernel_size = kernel.shape[0]
    out_length = length + kernel_size - 1
    block = DIRECT_BLOCK
    taps = -(-(kernel_size - 1) // block)  # T: further rows each output block reads
    blocks = -(-out_length // block)
    per_signal = blocks + taps  # rows of padded samples per signal
    total = per_signal * block
    if padding == "replicate":  # the default, padded in one copy
        padded = edge_pad(signals, kernel_size - 1, total - length - (kernel_size - 1))
    else:
        padded = np.zeros((n, total), dtype=np.float32)
        padded[:, : length + 2 * (kernel_size - 1)] = edge_pad(signals, kernel_size - 1, kernel_size - 1, padding)
    band = np.zeros(((taps + 1) * block, block), dtype=np.float32)  # band[j + i, j] = kernel[i]
    for column in range(block):
        band[column : column + kernel_size, column] = kernel
    rows = padded.reshape(n * per_signal, block)
    products = n * per_signal - taps  # output rows with all their T further rows in the matrix
    out = np.empty((n * per_signal, block), dtype=np.float32)
    _accumulate_products(rows, band, out[:products], taps, block)
    out[products:] = 0.0  # the last signal's cut-off tail rows: never read, but not left uninitialized
    return out.reshape(n, total)[:, :out_length]


def _accumulate_products(rows: np.ndarray, band: np.ndarray, out: np.ndarray, taps: int, block: int) -> None:
    """out = sum_t rows[t : t + len(out)] @ band[t * block : (t + 1) * block], in place.

    BLAS sgemm with beta = 1 accumulates into `out` without a temporary; it is called on the
    transposes (C-order arrays are Fortran-order transposes), so nothing is copied."""
    from scipy.linalg import blas

    count = out.shape[0]
    target = out.T
    for tap in range(taps + 1):
        result = blas.sgemm(1.0, band[tap * block : (tap + 1) * block].T, rows[tap : tap + count].T,
                            beta=0.0 if tap == 0 else 1.0, c=target, overwrite_c=1)
        if result.ctypes.data != target.ctypes.data:  # pragma: no cover - BLAS wrapper copied: keep its answer
            target[...] = result


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
