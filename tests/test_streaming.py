"""The transport-free stream core (service.pipeline.streaming) against one-shot inference, in process: real
proofs, real ONNX Runtime sessions, hypothesis cutting signals into chunks; and the carried state
(HMAC-signed) against forged, altered, foreign, expired and mismatched states and gone versions."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.base.errors import BadRequestError, VersionGoneError
from service.compute.inference import SmoothCall, infer_smooth
from service.repository.registry import ModelRegistry
from service.pipeline.streaming import SmoothStream, StateCodec, check_pinned, open_stream, resume
from service_fixtures import KERNEL_SIZE, build_smoother, copy_version, fresh_repo

sys.path.insert(0, str(Path(__file__).parent))

SECRET = b"a test secret of enough bytes!!!"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = fresh_repo(tmp_path_factory.mktemp("stream"), models=("smoother", "classifier"))
    build_smoother(repo, tmp_path_factory.mktemp("ckpt"), name="wide", kernel_size=31)  # direct/FFT paths too
    publish_padded_smoothers(repo)
    return repo


PADDED = {"zeros": ("zeros", 5), "reflect": ("reflect", 7), "circular": ("circular", 5), "reflect-wide": ("reflect", 31)}


def publish_padded_smoothers(repo) -> None:
    """Users' smoothers that pad their edges otherwise than by replication (contract.padding), as declared."""
    from byom.net_models import PaddedFir
    from export.byom import export_module

    for name, (padding, kernel_size) in PADDED.items():
        export_module(PaddedFir(kernel_size, padding), repo, name,
                      {"kind": "smoother", "mode": "same", "normalized": True, "padding": padding})


@pytest.fixture(scope="module")
def registry(repo):
    registry = ModelRegistry(repo)
    registry.load()
    assert registry.ready, registry.not_ready_reasons()
    return registry


def one_shot(served, signal: np.ndarray, mode: str, method: str = "auto") -> np.ndarray:
    return np.asarray(infer_smooth(SmoothCall(served, signal[None], 3, mode), method=method))[0]


def cut(signal: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    chunks, start = [], 0
    for size in sizes:
        chunks.append(signal[:, start : start + size])
        start += size
    chunks.append(signal[:, start:])
    return chunks


def run_stream(stream: SmoothStream, chunks: list[np.ndarray], codec: StateCodec | None = None,
               registry: ModelRegistry | None = None, method: str = "auto") -> np.ndarray:
    outputs = []
    for chunk in chunks:
        if codec is not None:  # through the carried state, as an HTTP client would
            stream = resume(registry, codec.unseal(codec.seal(stream)))
        out = stream.push(chunk, method=method)
        assert out.shape[0] == chunk.shape[0] and out.dtype == np.float32
        outputs.append(out)
    outputs.append(stream.end(method=method))
    return np.concatenate(outputs, axis=1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), mode=st.sampled_from(["causal", "same", "valid"]), channels=st.integers(1, 5),
       model=st.sampled_from(["smoother", "wide", *PADDED]), carried=st.booleans())
def test_stream_equals_one_shot_for_every_chunking(registry, data, mode, channels, model, carried):
    served = registry.resolve("smoother", model)
    kernel = served.manifest.smoother.kernel_size
    shortest = kernel if mode == "valid" or served.manifest.smoother.padding == "reflect" else 1
    length = data.draw(st.integers(shortest, 120), label="length")
    sizes = data.draw(st.lists(st.integers(0, 40), max_size=12), label="sizes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    signal = (rng.standard_normal((channels, length)) * 10 + rng.standard_normal((channels, 1)) * 50).astype(np.float32)
    streamed = run_stream(SmoothStream.open(served, mode), cut(signal, sizes),
                          StateCodec(SECRET) if carried else None, registry)
    expected = one_shot(served, signal, mode)
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, rtol=1e-6, atol=1e-6 * float(np.abs(signal).max()))


@pytest.mark.parametrize("model", ["wide", "reflect-wide"])
@pytest.mark.parametrize("method", ["engine", "direct", "fft"])
@pytest.mark.parametrize("mode", ["causal", "same", "valid"])
def test_every_convolution_path_streams(registry, mode, method, model):
    """The stream forced onto each path (as MONOSERVE_SMOOTH_METHOD does) against one-shot on it."""
    served = registry.resolve("smoother", model)
    signal = np.random.default_rng(2).standard_normal((3, 700)).astype(np.float32)
    for sizes in ([1] * 5 + [33] * 10, [300, 0, 1, 64]):
        streamed = run_stream(SmoothStream.open(served, mode), cut(signal, sizes), method=method)
        np.testing.assert_allclose(streamed, one_shot(served, signal, mode, method=method), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", ["causal", "same", "valid"])
def test_bit_exact_where_the_same_path_runs(registry, mode):
    """With the engine on both sides (K=9: the engine is what /smooth runs), the bits are equal."""
    served = registry.resolve("smoother", "smoother")
    signal = np.random.default_rng(1).standard_normal((8, 500)).astype(np.float32)
    for sizes in ([1] * 40, [7, 0, 64, 3, 100], [256, 256]):
        streamed = run_stream(SmoothStream.open(served, mode), cut(signal, sizes), method="engine")
        assert np.array_equal(streamed, one_shot(served, signal, mode, method="engine")), sizes


def test_delays_and_flushes(registry):
    served = registry.resolve("smoother", "smoother")
    half = KERNEL_SIZE // 2
    chunk = np.ones((2, 3), dtype=np.float32)
    causal, same, valid = (SmoothStream.open(served, mode) for mode in ("causal", "same", "valid"))
    assert causal.push(chunk).shape == (2, 3)  # no delay
    assert same.push(chunk).shape == (2, max(0, 3 - half))
    assert valid.push(chunk).shape == (2, 0)
    assert valid.push(np.ones((2, KERNEL_SIZE), dtype=np.float32)).shape == (2, 3 + KERNEL_SIZE - KERNEL_SIZE + 1)
    assert same.end().shape == (2, min(3, half)) and causal.end().shape == (2, 0) and valid.end().shape == (2, 0)


def test_padding_that_needs_later_samples_holds_them(registry):
    """Reflect padding answers once K samples arrived (the left edge mirrors them); circular padding
    answers only at the end (the left edge is the signal's end), holding at most MAX_HELD_ELEMENTS;
    in mode valid neither reads the padding, so both answer at once."""
    from service.base.errors import PayloadTooLargeError
    from service.pipeline.streaming import MAX_HELD_ELEMENTS

    reflect, circular = registry.resolve("smoother", "reflect"), registry.resolve("smoother", "circular")
    stream = SmoothStream.open(reflect, "causal")
    assert stream.push(np.ones((2, 6), np.float32)).shape == (2, 0) and stream.pending() == 6
    assert stream.push(np.ones((2, 1), np.float32)).shape == (2, 7)
    short = SmoothStream.open(reflect, "same")
    short.push(np.ones((1, 6), np.float32))
    with pytest.raises(BadRequestError, match="reflect padding needs at least 7 samples"):
        short.end()
    held = SmoothStream.open(circular, "causal")
    for _ in range(3):
        assert held.push(np.ones((2, 10), np.float32)).shape == (2, 0)
    assert held.end().shape == (2, 30)
    assert SmoothStream.open(circular, "valid").push(np.ones((1, 10), np.float32)).shape == (1, 6)
    with pytest.raises(PayloadTooLargeError, match="answers only when it ends"):
        SmoothStream.open(circular, "same").push(np.zeros((4, MAX_HELD_ELEMENTS // 4 + 1), np.float32))


def test_bad_chunks_and_short_streams_are_400(registry):
    served = registry.resolve("smoother", "smoother")
    stream = SmoothStream.open(served, "same")
    for bad, reason in ((np.array(1.0, np.float32), "1 to 3 dimensions"), (np.ones((1, 1, 2, 3), np.float32), "1 to 3 dimensions"),
                        (np.array([[1.0, np.nan]], np.float32), "non-finite"), (np.ones((0, 3), np.float32), "channel"),
                        (np.ones((2, 0, 3), np.float32), "channel"), ([[1.0]], "must be an array")):
        with pytest.raises(BadRequestError, match=reason):
            stream.push(bad)
    assert stream.channels is None and stream.lead is None  # a refused chunk changed nothing
    stream.push(np.ones((2, 4), np.float32))
    with pytest.raises(BadRequestError, match="2 channel"):
        stream.push(np.ones((3, 4), np.float32))
    with pytest.raises(BadRequestError, match="before any sample"):
        SmoothStream.open(served, "causal").end()
    short = SmoothStream.open(served, "valid")
    short.push(np.ones((1, KERNEL_SIZE - 1), np.float32))
    with pytest.raises(BadRequestError, match="at least"):
        short.end()
    with pytest.raises(BadRequestError, match="mode"):
        SmoothStream.open(served, "mirror")
    with pytest.raises(BadRequestError, match="not a smoother"):
        open_stream(registry, "classifier", None, None)


def test_forged_altered_foreign_and_expired_states_are_400(registry):
    codec = StateCodec(SECRET, max_age_s=60)
    stream = SmoothStream.open(registry.resolve("smoother", "smoother"), "causal")
    stream.push(np.arange(20, dtype=np.float32).reshape(2, 10))
    token = codec.seal(stream, now=1000.0)
    assert resume(registry, codec.unseal(token, now=1010.0)).seen == 10
    body, mac = token.split(".")
    altered = [body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac,  # one character of the tail
               body + "." + mac[::-1], "garbage", "", body, "." + mac, token + "x"]
    for bad in altered:
        with pytest.raises(BadRequestError, match="state"):
            codec.unseal(bad, now=1010.0)
    with pytest.raises(BadRequestError, match="issued by this service"):
        StateCodec(b"another secret, 32 bytes long...").unseal(token, now=1010.0)
    with pytest.raises(BadRequestError, match="expired"):
        codec.unseal(token, now=1061.0)
    with pytest.raises(BadRequestError):
        codec.unseal(12345)
    state = codec.unseal(token, now=1010.0)
    for field, value in (("model", "wide"), ("version", 2), ("mode", "same")):
        with pytest.raises(BadRequestError, match=field):
            resume(registry, state, **{field: value})
    resumed = resume(registry, state, model="smoother", version=1, mode="causal")
    with pytest.raises(BadRequestError, match="channel"):
        resumed.push(np.ones((3, 1), np.float32))


def test_a_gone_or_replaced_version_is_409(tmp_path):
    repo = fresh_repo(tmp_path / "repo", models=("smoother",))
    copy_version(repo, "smoother", 1, 2)
    registry = ModelRegistry(repo)
    registry.load()
    codec = StateCodec(SECRET)
    stream = open_stream(registry, "smoother", 2, "same")
    stream.push(np.ones((1, 5), np.float32))
    token = codec.seal(stream)
    pinned_v1 = open_stream(registry, "smoother", 1, "same")
    shutil.rmtree(repo / "smoother" / "2")
    registry.refresh()
    with pytest.raises(VersionGoneError):
        check_pinned(registry, stream)
    with pytest.raises(VersionGoneError):
        resume(registry, codec.unseal(token))
    check_pinned(registry, pinned_v1)  # a version that stays is not affected
    # the same number re-published with other files (another kernel): gone too
    assert build_smoother(repo, tmp_path, kernel_size=7).name == "2"
    registry.refresh()
    assert registry.resolve("smoother", "smoother", 2).manifest.smoother.kernel_size == 7
    with pytest.raises(VersionGoneError):
        resume(registry, codec.unseal(token))


@pytest.mark.parametrize("mode", ["same", "causal", "valid"])
def test_every_nesting_of_one_shot_is_a_chunk_and_is_answered_in_it(registry, mode):
    """[n], [C, n] and [B, C, n] (service.compute.shapes): the rows are the stream's channels (B x C, fixed by
    the first chunk) and each answer comes in its chunk's nesting; the concatenation is one-shot's."""
    from service.compute.kinds import SERVICE_KINDS
    from service.compute.request import InferRequest, Limits, MemoryBudget

    served = registry.resolve("smoother", "smoother")
    rng = np.random.default_rng(3)
    for shape in ((40,), (3, 40), (2, 3, 40), (1, 2, 40)):
        signal = rng.standard_normal(shape).astype(np.float32)
        stream = SmoothStream.open(served, mode)
        answers = [stream.step(signal[..., :15]), stream.step(signal[..., 15:33]), stream.step(signal[..., 33:], end=True)]
        assert all(answer.shape[:-1] == shape[:-1] for answer in answers)
        kind = SERVICE_KINDS["smoother"]
        limits = Limits(MemoryBudget(2**30), 10**7, 10**5, 10**6)
        call = kind.prepare(served, InferRequest("smoother", inputs=signal, params={"mode": mode}), limits)
        np.testing.assert_allclose(np.concatenate(answers, axis=-1), kind.infer(call, type("S", (), {"smooth_method": "auto"})),
                                   rtol=1e-6, atol=1e-6)
    stream = SmoothStream.open(served, mode)
    stream.step(np.ones((1, 2, 10), np.float32))
    with pytest.raises(BadRequestError, match="2 channel"):
        stream.step(np.ones((3, 10), np.float32))
    assert stream.step(np.ones((2, 10), np.float32)).shape[:-1] == (2,)  # the same rows in another nesting
    codec = StateCodec(SECRET)
    resumed = resume(registry, codec.unseal(codec.seal(stream)))
    assert resumed.lead == (2,) and resumed.step(None, end=True).shape[:-1] == (2,)  # the tail in the last nesting


def test_a_state_unused_for_longer_than_the_idle_timeout_is_expired_408(registry):
    from service.base.errors import RequestTimeoutError

    stream = SmoothStream.open(registry.resolve("smoother", "smoother"), "causal")
    stream.push(np.ones((2, 5), np.float32))
    codec = StateCodec(SECRET, max_age_s=3600, idle_s=5)
    token = codec.seal(stream, now=1000.0)
    assert codec.unseal(token, now=1004.5).seen == 5  # paused, within the idle timeout
    with pytest.raises(RequestTimeoutError, match="unused for 6 s, longer than the idle timeout of 5 s") as expired:
        codec.unseal(token, now=1006.0)
    assert expired.value.status == 408
