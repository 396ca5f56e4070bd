"""Request bodies to numpy and numpy to response bodies, without per-element validation.

JSON: orjson parses the body once; nested lists become a float32 array with one np.asarray call
and the shape is validated on the array. `.npy`: the header is parsed and the payload is viewed
in place (np.frombuffer, no copy for little-endian float32). Responses: orjson writes numpy
arrays natively (OPT_SERIALIZE_NUMPY); `.npy` responses are a header plus the raw buffer.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson

from service.errors import BadRequestError, UnsupportedMediaTypeError

JSON_MEDIA_TYPE = "application/json"
NPY_MEDIA_TYPE = "application/x-npy"
NPY_MAGIC = b"\x93NUMPY"
ACCEPTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MAX_NPY_HEADER = 10_000


def media_type(header: str | None) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json'; a missing header means JSON."""
    if not header:
        return JSON_MEDIA_TYPE
    return header.split(";", 1)[0].strip().lower()


def body_format(content_type: str | None) -> str:
    """'json' or 'npy' from the Content-Type header; anything else is a 415."""
    kind = media_type(content_type)
    if kind == JSON_MEDIA_TYPE or kind.endswith("+json"):
        return "json"
    if kind == NPY_MEDIA_TYPE:
        return "npy"
    raise UnsupportedMediaTypeError(
        f"unsupported content type {kind!r}: send {JSON_MEDIA_TYPE} or {NPY_MEDIA_TYPE}",
        content_type=kind, supported=[JSON_MEDIA_TYPE, NPY_MEDIA_TYPE])


def wants_npy(accept: str | None) -> bool:
    return bool(accept) and NPY_MEDIA_TYPE in accept.lower()


# -- JSON -------------------------------------------------------------------------------------
def loads_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequestError("empty request body: expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadRequestError(f"expected a JSON object, got a JSON {type(payload).__name__}")
    return payload


def to_float32(data: Any, field: str) -> np.ndarray:
    """Nested lists of numbers -> float32 array (ragged or non-numeric -> 400 naming the field)."""
    if isinstance(data, (str, bytes, dict)) or data is None or isinstance(data, bool):
        raise BadRequestError(f"'{field}' must be a (nested) list of numbers, got {type(data).__name__}", field=field)
    try:
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused by check_finite
            return np.asarray(data, dtype=np.float32)
    except ValueError as exc:
        message = str(exc)
        if "inhomogeneous" in message or "sequence" in message:
            raise BadRequestError(f"'{field}' is ragged: every inner list must have the same length", field=field) from exc
        raise BadRequestError(f"'{field}' must contain only numbers: {message}", field=field) from exc
    except TypeError as exc:
        raise BadRequestError(f"'{field}' must contain only numbers: {exc}", field=field) from exc


def check_finite(array: np.ndarray, field: str) -> None:
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))
        index = [int(i) for i in bad[0]]
        raise BadRequestError(
            f"'{field}' contains {len(bad)} non-finite value(s) (NaN, Inf, null, or beyond float32 range); "
            f"first at index {index}", field=field, index=index)


def dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


# -- .npy -------------------------------------------------------------------------------------
def decode_npy(body: bytes, field: str) -> np.ndarray:
    """A .npy body -> array (float32 or float64 in, float32 out), viewed in place where possible."""
    if not body.startswith(NPY_MAGIC):
        raise BadRequestError("body is not a .npy file (missing the \\x93NUMPY magic)", field=field)
    stream = io.BytesIO(body)
    try:
        major, _minor = np.lib.format.read_magic(stream)
        if major == 1:
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=MAX_NPY_HEADER)
        elif major in (2, 3):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy format version {major}")
    except (ValueError, SyntaxError, TypeError, EOFError) as exc:
        raise BadRequestError(f"malformed .npy header: {exc}", field=field) from exc
    if dtype.hasobject or dtype.newbyteorder("=") not in ACCEPTED_DTYPES:
        raise BadRequestError(f".npy dtype must be float32 or float64, got {dtype}", field=field, dtype=str(dtype))
    offset = stream.tell()
    count = int(np.prod(shape, dtype=np.int64))
    expected = count * dtype.itemsize
    if len(body) - offset != expected:
        raise BadRequestError(
            f".npy payload is {len(body) - offset} bytes, its header {list(shape)} {dtype} needs {expected}",
            field=field)
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape, order="F" if fortran_order else "C")
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(array, dtype=np.float32)


def encode_npy(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue() + array.tobytes()
