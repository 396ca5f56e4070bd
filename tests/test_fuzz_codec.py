"""Hypothesis fuzzing of the request decoders (issue 10, item 6): whatever bytes arrive, the `.npy`
and JSON decoders either return a float32 array equal to what was sent, or raise a ServiceError
(a clear 4xx/503); never another exception (a 500), and never an array bigger than the limits."""

from __future__ import annotations

import io
import math

import numpy as np
import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.base import codec
from service.base.errors import ServiceError
from service.protocols.native import CLASSIFY, SMOOTH
from service.compute.request import Limits, MemoryBudget

MAX_ELEMENTS = 4096
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def limits() -> Limits:
    return Limits(MemoryBudget(64 * 1024 * 1024), max_elements=MAX_ELEMENTS, max_rows=1000, max_signal_length=10_000)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# -- .npy -------------------------------------------------------------------------------------
float_arrays = hnp.arrays(
    dtype=st.sampled_from([np.dtype("<f4"), np.dtype("<f8"), np.dtype(">f4"), np.dtype(">f8")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12),
    elements={"allow_nan": True, "allow_infinity": True},
)


@FUZZ
@given(array=float_arrays, fortran=st.booleans())
def test_valid_npy_round_trips_as_float32(array, fortran):
    if fortran:
        array = np.asfortranarray(array)
    body = npy_bytes(array)
    admitted = []
    decoded = codec.decode_npy(body, "signal", admit=admitted.append)
    assert admitted == [array.size]  # counted from the header, before the payload was used
    assert decoded.dtype == np.float32 and decoded.shape == array.shape and decoded.flags.c_contiguous
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(decoded, array.astype(np.float32))


@FUZZ
@given(array=float_arrays, data=st.data())
def test_mutated_npy_is_refused_cleanly(array, data):
    body = bytearray(npy_bytes(array))
    for _ in range(data.draw(st.integers(1, 4))):  # flip bytes anywhere, header included
        position = data.draw(st.integers(0, len(body) - 1))
        body[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(body))))
    mutated = bytes(body if cut is None else body[:cut])
    try:
        decoded = codec.decode_npy(mutated, "signal", admit=lambda count: limits().admit(count, 4, "signal"))
    except ServiceError as exc:
        assert 400 <= exc.status < 600 and exc.message
        return
    assert decoded.dtype == np.float32 and decoded.size <= MAX_ELEMENTS


@FUZZ
@given(shape=st.lists(st.integers(-(2**70), 2**70), min_size=0, max_size=5),
       descr=st.sampled_from(["<f4", "<f8", "|O", "<i8", "<U3", "V8"]))
def test_any_header_shape_is_counted_without_wrapping(shape, descr):
    header = b"{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr.encode(), b"".join(b"%d," % dim for dim in shape))
    header += b" " * ((-(len(header) + 11)) % 64) + b"\n"
    body = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    count = []
    try:
        decoded = codec.decode_npy(body, "signal", admit=lambda n: (count.append(n), limits().admit(n, 4, "signal")))
    except ServiceError as exc:
        assert exc.status in (400, 413, 503)
        if count:  # the count given to the limits is the true product, never a wrapped int64
            assert count[0] == math.prod(shape) and all(dim >= 0 for dim in shape)
        return
    # accepted with no payload: only an empty float array is that
    assert count == [0] == [math.prod(shape)] and decoded.size == 0 and descr in ("<f4", "<f8")


# -- JSON -------------------------------------------------------------------------------------
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
json_values = st.recursive(json_leaves, lambda children: st.one_of(
    st.lists(children, max_size=6), st.dictionaries(st.text(max_size=6), children, max_size=4)), max_leaves=40)


def _is_number(value) -> bool:
    return type(value) in (int, float)


@FUZZ
@given(signal=json_values, extra=st.dictionaries(st.sampled_from(["model", "version", "mode", "other"]), json_values, max_size=3))
def test_any_json_signal_is_an_exact_array_or_a_clean_refusal(signal, extra):
    body = orjson.dumps({"signal": signal, **extra}, option=orjson.OPT_NON_STR_KEYS) if _encodable(signal, extra) else None
    assume(body is not None)
    headers = {"content-type": "application/json"}
    try:
        request = SMOOTH.decode(body, headers, {}, limits())
    except ServiceError as exc:
        assert 400 <= exc.status < 600 and exc.message
        return
    # accepted: only numbers were sent, and the array holds exactly them (as float32)
    with np.errstate(over="ignore"):
        expected = np.asarray(orjson.loads(body)["signal"], dtype=np.float32)
    assert request.inputs.dtype == np.float32
    np.testing.assert_array_equal(request.inputs, expected)
    assert all(_is_number(v) for v in np.asarray(signal, dtype=object).reshape(-1).tolist())


@FUZZ
@given(instances=json_values)
def test_any_json_instances_are_an_exact_array_records_or_a_clean_refusal(instances):
    assume(_encodable(instances, {}))
    body = orjson.dumps({"instances": instances}, option=orjson.OPT_NON_STR_KEYS)
    try:
        request = CLASSIFY.decode(body, {"content-type": "application/json"}, {}, limits())
    except ServiceError as exc:
        assert 400 <= exc.status < 600 and exc.message
        return
    assert isinstance(instances, list)
    if request.records is not None:
        assert request.records == orjson.loads(body)["instances"] and all(isinstance(r, dict) for r in request.records)
    else:
        assert request.inputs.dtype == np.float32 and request.inputs.size <= MAX_ELEMENTS


@FUZZ
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_cleanly(body):
    for adapter in (SMOOTH, CLASSIFY):
        for content_type in ("application/json", "application/x-npy"):
            try:
                adapter.decode(body, {"content-type": content_type}, {}, limits())
            except ServiceError as exc:
                assert 400 <= exc.status < 600
            # no other exception type may escape


def _encodable(signal, extra) -> bool:
    try:
        orjson.dumps({"signal": signal, **extra}, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # integers beyond 64 bits: not JSON orjson writes (the service is tested with them elsewhere)
        return False
    return True
