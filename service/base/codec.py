"""Request bodies to numpy and numpy to response bodies, without per-element validation.

JSON: orjson parses the body once; nested lists become a float32 array with one np.asarray call
and the shape is validated on the array. Big bodies whose array is plain nested numbers take a
faster road when pysimdjson is installed (`loads_with_array`): the numbers go straight from the
text into a float64 buffer, with no Python float per value (about 2x faster than orjson + asarray
on 1M values); anything unusual falls back to the orjson road, which gives every error message. `.npy`: the header is parsed and the payload is viewed
in place (np.frombuffer, no copy for little-endian float32). Responses: orjson writes numpy
arrays natively (OPT_SERIALIZE_NUMPY); `.npy` responses are a header plus the raw buffer.
"""

from __future__ import annotations

import functools
import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

try:  # optional accelerator for big numeric JSON arrays (the `serve` extra installs it)
    import simdjson
except ImportError:  # pragma: no cover - exercised where pysimdjson is not installed
    simdjson = None

from service.base.errors import BadRequestError, UnsupportedMediaTypeError

JSON_MEDIA_TYPE = "application/json"
NPY_MEDIA_TYPE = "application/x-npy"
NPY_MAGIC = b"\x93NUMPY"
ACCEPTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MAX_NPY_HEADER = 10_000


@functools.lru_cache(maxsize=256)  # clients send the same few header values again and again
def media_type(header: str | None) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json'; a missing header means JSON."""
    if not header:
        return JSON_MEDIA_TYPE
    if len(header) <= 128:  # the few short values clients send again and again; long ones are not kept
        return _short_media_type(header)
    return header.split(";", 1)[0].strip().lower()


@functools.lru_cache(maxsize=256)
def _short_media_type(header: str) -> str:
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


@functools.lru_cache(maxsize=256)
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


FAST_JSON_MIN_BYTES = 64 * 1024  # below this orjson alone is as fast
MAX_FAST_JSON_DIMS = 3
KEPT_PARSER_MAX_BYTES = 32 * 1024 * 1024  # bigger documents get a parser of their own, freed after (memory returns)
_parsers = threading.local()  # a simdjson.Parser is not thread-safe: one per thread


def _array_shape(array: Any) -> tuple[int, ...] | None:
    """The shape of a regular nested simdjson Array of at most 3 dims; None if ragged or deeper."""
    shape: list[int] = []
    node = array
    while isinstance(node, simdjson.Array):
        if len(shape) == MAX_FAST_JSON_DIMS:
            return None
        shape.append(len(node))
        if not shape[-1]:
            break
        node = node[0]
    level = [array]  # every array above the last dimension must have the length the shape says
    for depth in range(len(shape) - 1):
        below = []
        for node in level:
            for item in node:
                if not isinstance(item, simdjson.Array) or len(item) != shape[depth + 1]:
                    return None
                below.append(item)
        level = below
    return tuple(shape)


class _Unusual(Exception):
    """The document is not one the simdjson road takes: the caller goes the orjson road."""


MAX_OTHER_LIST = 64  # lists outside the numeric fields are converted item by item: only short ones
MAX_FAST_JSON_DEPTH = 16


@dataclass(frozen=True)
class ParsedArray:
    """A numeric field the simdjson road already turned into float32 (in place of its nested list)."""

    array: np.ndarray


def _parser_for(size: int) -> Any:
    if size > KEPT_PARSER_MAX_BYTES:  # a parser keeps the capacity of its biggest document: not for these
        return simdjson.Parser()
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    return parser


def loads_with_arrays(body: bytes, is_numeric: Callable[[tuple], bool],
                      brackets: int | None = None) -> dict[str, Any] | None:
    """The JSON object of a big body, parsed with pysimdjson, its numeric fields (the paths
    `is_numeric` accepts, e.g. ("signal",) or ("inputs", 0, "data")) as `ParsedArray`s of float32:
    regular nested arrays of plain numbers go straight from the text into a float64 buffer, with
    no Python float per value. None whenever the document is not of that plain kind (pysimdjson
    missing, a small body, duplicate names, a numeric field ragged, deeper than 3 or holding
    anything but numbers, a long list elsewhere, a '[' inside a string): the caller then takes
    the orjson road, which yields the same values and every error message.

    `brackets`: the body's count of '[' when the caller has it (json_counts), else counted here.
    as_buffer flattens nested arrays ([[1, [2]]] would pass as [[1, 2]]): the '[' of the body
    must be exactly the arrays accounted for here, which proves there are no others."""
    if simdjson is None or len(body) < FAST_JSON_MIN_BYTES:
        return None
    parser = _parser_for(len(body))
    accounted = 0

    def convert(node: Any, path: tuple) -> Any:
        nonlocal accounted
        if len(path) > MAX_FAST_JSON_DEPTH:
            raise _Unusual
        if isinstance(node, simdjson.Object):
            keys = list(node.keys())
            if len(keys) != len(set(keys)):  # duplicate names: leave their resolution to orjson
                raise _Unusual
            return {key: convert(node[key], (*path, key)) for key in keys}
        if isinstance(node, simdjson.Array):
            if is_numeric(path):
                shape = _array_shape(node)
                if shape is None:
                    raise _Unusual
                accounted += sum(math.prod(shape[:depth]) for depth in range(len(shape)))
                values = np.frombuffer(node.as_buffer(of_type="d"), dtype=np.float64)
                if values.size != math.prod(shape):
                    raise _Unusual
                with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused by check_finite (as np.asarray)
                    return ParsedArray(values.astype(np.float32).reshape(shape))
            if len(node) > MAX_OTHER_LIST:
                raise _Unusual
            accounted += 1
            return [convert(item, (*path, index)) for index, item in enumerate(node)]
        return node

    try:
        document = parser.parse(body)
        if not isinstance(document, simdjson.Object):
            return None
        payload = convert(document, ())
        del document
    except (_Unusual, ValueError, TypeError, KeyError, IndexError, RuntimeError, RecursionError):
        return None  # malformed or unusual: the orjson road
    if accounted != (body.count(b"[") if brackets is None else brackets):
        return None
    return payload


def loads_with_array(body: bytes, field: str, brackets: int | None = None) -> tuple[dict[str, Any], np.ndarray] | None:
    """(the object's other fields, `field` as float32) for a big body whose `field` is a regular
    nested array of plain numbers (`loads_with_arrays`); None whenever that does not hold: the
    caller then takes the orjson road, which yields the same array and every error message."""
    wanted = (field,)
    payload = loads_with_arrays(body, lambda path: path == wanted, brackets)
    if payload is None or not isinstance(payload.get(field), ParsedArray):
        return None
    array = payload.pop(field).array
    return payload, array


COUNT_CHUNK = 256 * 1024  # numpy compares a chunk at a time: a small temporary that stays in cache
_COMMA, _OPEN_BRACKET = ord(","), ord("[")


def json_counts(body: bytes) -> tuple[int, int]:
    """(values, lists): upper bounds on the numbers and arrays a JSON body can hold, from a scan of
    its bytes (C speed, no allocation), so that limits apply before parsing builds any object.

    Every array element or object member after the first in its container follows a comma, so
    values <= commas + 1; every array opens with '['. Commas inside strings only make the bound
    looser (requests carry a few short strings).

    Big bodies are scanned by numpy a chunk at a time (about 4x faster than bytes.count, whose
    one-byte search is a plain loop: 3 instead of 14 ms for the two counts on 19 MB); the chunk's
    comparison results are the only allocation, COUNT_CHUNK bytes whatever the body's size."""
    if len(body) <= COUNT_CHUNK:
        return body.count(b",") + 1, body.count(b"[")
    data = np.frombuffer(body, dtype=np.uint8)
    commas = brackets = 0
    for start in range(0, data.size, COUNT_CHUNK):
        chunk = data[start:start + COUNT_CHUNK]
        commas += int(np.count_nonzero(chunk == _COMMA))
        brackets += int(np.count_nonzero(chunk == _OPEN_BRACKET))
    return commas + 1, brackets


_NUMBER_TYPES = (int, float)


def _first_non_number(data: list, path: tuple[int, ...] = ()) -> tuple[tuple[int, ...], Any] | None:
    """Where a nested list holds something other than a JSON number (bool, str, null, object), if anywhere."""
    for index, item in enumerate(data):
        kind = type(item)
        if kind is list:
            found = _first_non_number(item, (*path, index))
            if found is not None:
                return found
        elif kind is not int and kind is not float:  # bool is a subclass of int: compared by exact type
            return (*path, index), item
    return None


_NUMERIC_TYPES = frozenset({int, float})  # exact types: bool (a subclass of int) is not a JSON number


def _all_numbers(data: list) -> bool:
    """True when every leaf of the nested list is an int or float (not bool): a C-level check of
    the innermost lists' item types, a plain loop over the outer levels."""
    if not data:
        return True
    if type(data[0]) is list:
        for row in data:
            if type(row) is not list or not _all_numbers(row):
                return False
        return True
    return _NUMERIC_TYPES.issuperset(map(type, data))


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "a string"
    return f"a JSON {type(value).__name__}"


SMALL_ARRAY = 64  # below this, checks on Python numbers beat numpy calls (~1 us against ~3.5 us)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _small_magnitude_bound(data: list, budget: int) -> float:
    """An upper bound on the magnitudes in a nested list of numbers (checked by `_all_numbers`) of at
    most `budget` values; inf when it holds more (then numpy converts under errstate and check_finite
    refuses what overflowed). A list of numbers is bounded by math.hypot of its values (never below
    its largest magnitude): one C call, where max(map(abs, ...)) cost three times the instructions.
    The bound only chooses whether numpy converts under errstate: the array is the same either way."""
    if not data:
        return 0.0
    if type(data[0]) is not list:
        if len(data) > budget:
            return math.inf
        try:
            bound = math.hypot(*data)
        except OverflowError:  # an integer beyond float64: the errstate road, where numpy refuses it
            return math.inf
        except TypeError:  # a list among the numbers (nesting _all_numbers refused but named no item):
            return max(map(abs, data))  # the TypeError of abs(), whose text the 400 has always quoted
        return bound if bound == bound else math.inf  # NaN (a NaN among them): no bound, the errstate road
    if len(data) > budget:
        return math.inf
    largest = 0.0
    for row in data:
        bound = _small_magnitude_bound(row, budget)
        if bound > largest:  # (not max(): its argument parsing costs more than the rest of this loop)
            largest = bound
        budget -= len(row)
        if budget < 0:
            return math.inf
    return largest


def to_float32(data: Any, field: str) -> np.ndarray:
    """Nested lists of JSON numbers -> float32 array. Only numbers: a string, boolean, null or
    object inside is a 400 naming where (numpy would otherwise turn "2" and true into 2.0 and 1.0);
    ragged lists are a 400 too."""
    if type(data) is int or type(data) is float:  # a bare number: a 0-d array, refused by rank with its shape
        with np.errstate(over="ignore"):
            return np.asarray(data, dtype=np.float32)
    if not isinstance(data, list):
        raise BadRequestError(f"'{field}' must be a (nested) list of numbers, got {_json_name(data)}", field=field)
    if not _all_numbers(data):
        found = _first_non_number(data)
        if found is not None:
            index, item = found
            message = f"'{field}' must contain only numbers: found {_json_name(item)} at index {list(index)}"
            if item is None:
                message = f"'{field}' contains a non-finite value (null; NaN and Inf are refused too) at index {list(index)}"
            raise BadRequestError(message, field=field, index=list(index))
    try:
        if _small_magnitude_bound(data, SMALL_ARRAY) <= FLOAT32_MAX:  # cannot overflow: no errstate (1.8 us of ~3)
            return np.asarray(data, dtype=np.float32)
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused by check_finite
            return np.asarray(data, dtype=np.float32)
    except OverflowError as exc:  # an integer beyond float64 (a caller other than orjson, which gives floats)
        raise BadRequestError(f"'{field}' holds a number beyond float32 range: {exc}", field=field) from exc
    except (ValueError, TypeError) as exc:
        message = str(exc)
        if "inhomogeneous" in message or "sequence" in message:
            raise BadRequestError(f"'{field}' is ragged: every inner list must have the same length", field=field) from exc
        raise BadRequestError(f"'{field}' must contain only numbers: {message}", field=field) from exc


def check_finite(array: np.ndarray, field: str) -> None:
    if array.size <= SMALL_ARRAY and all(map(math.isfinite, array.ravel().tolist())):
        return
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))
        index = [int(i) for i in bad[0]]
        raise BadRequestError(
            f"'{field}' contains {len(bad)} non-finite value(s) (NaN, Inf, null, or beyond float32 range); "
            f"first at index {index}", field=field, index=index)


def dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


# -- .npy -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _parse_npy_header(prefix: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, payload offset) of a .npy file starting with `prefix`.

    Cached: numpy parses the header dict with ast.literal_eval (tens of microseconds, as much as
    a small request's inference), and clients send the same header again and again.
    """
    stream = io.BytesIO(prefix)
    major, _minor = np.lib.format.read_magic(stream)
    if major == 1:
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=MAX_NPY_HEADER)
    elif major in (2, 3):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=MAX_NPY_HEADER)
    else:
        raise ValueError(f"unsupported .npy format version {major}")
    return shape, fortran_order, dtype, stream.tell()


def _npy_header_prefix(body: bytes) -> bytes:
    """The magic, version, length field and header of a .npy body (the key of the header cache)."""
    if len(body) >= 10 and body[6] == 1:
        return body[: 10 + int.from_bytes(body[8:10], "little")]
    if len(body) >= 12 and body[6] in (2, 3):
        return body[: 12 + min(int.from_bytes(body[8:12], "little"), MAX_NPY_HEADER + 1)]
    return body[:MAX_NPY_HEADER]  # unknown version: read_magic names the problem


def npy_element_count(shape: tuple[int, ...], field: str) -> int:
    """The number of elements of a .npy shape, in Python integers (no int64 wrap-around: a shape of
    (2**32, 2**32) is 2**64 elements, not 0); a negative dimension is a 400."""
    if any(not isinstance(dim, int) or dim < 0 for dim in shape):
        raise BadRequestError(f"malformed .npy header: invalid shape {list(shape)}", field=field)
    return math.prod(shape)


def decode_npy(body: bytes, field: str, admit: Callable[[int], None] | None = None) -> np.ndarray:
    """A .npy body -> array (float32 or float64 in, float32 out), viewed in place where possible.

    `admit(count)` is called with the header's element count before anything is allocated (it
    raises to refuse: the per-request limit, the in-flight budget)."""
    if not body.startswith(NPY_MAGIC):
        raise BadRequestError("body is not a .npy file (missing the \\x93NUMPY magic)", field=field)
    try:
        shape, fortran_order, dtype, offset = _parse_npy_header(bytes(_npy_header_prefix(body)))
    except Exception as exc:  # numpy's parser of untrusted text raises many types (tokenize, ast, ...): all mean bad input
        raise BadRequestError(f"malformed .npy header: {str(exc)[:200]}", field=field) from exc
    if dtype.hasobject or dtype.newbyteorder("=") not in ACCEPTED_DTYPES:
        raise BadRequestError(f".npy dtype must be float32 or float64, got {dtype}", field=field, dtype=str(dtype))
    count = npy_element_count(shape, field)
    if admit is not None:
        admit(count)
    expected = count * dtype.itemsize
    if len(body) - offset != expected:
        raise BadRequestError(
            f".npy payload is {len(body) - offset} bytes, its header {list(shape)} {dtype} needs {expected}",
            field=field)
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape, order="F" if fortran_order else "C")
    with np.errstate(over="ignore"):  # astype, not ascontiguousarray: that turns a 0-d array into 1-d
        return array.astype(np.float32, order="C", copy=False)


@functools.lru_cache(maxsize=256)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A C-order .npy header (cached: answers of one shape share it)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


@functools.lru_cache(maxsize=32)
def _descr(dtype: np.dtype) -> str:
    """numpy's .npy descr of a dtype (cached: ~3 us a call, once per streamed frame otherwise)."""
    return np.lib.format.dtype_to_descr(dtype)


MAX_JOINED_ROWS = 4096  # above this many rows, one contiguous copy is cheaper than joining rows


def encode_npy(array: np.ndarray) -> bytes:
    """A C-order .npy file of `array`, copying its data once, straight into the response bytes.

    A smoothed signal is a slice of the engine's output: each row contiguous, the rows apart.
    Joining the header and the rows builds the bytes in one pass, where ascontiguousarray +
    tobytes + concatenation would copy the data three times.
    """
    return b"".join((_npy_header(_descr(array.dtype), array.shape), *contiguous_parts(array)))


# A body this big is sent as its parts, never joined: one copy fewer of a large answer.
CHUNKED_MIN_BYTES = 256 * 1024


class Chunks:
    """A response body as buffers sent one after another (the server writes each from its memory):
    an .npy header and the rows of a result, which a join would copy once more. `len()` is the
    body's size in bytes; `bytes()` joins it, for a layer that needs one object."""

    __slots__ = ("parts", "nbytes")

    def __init__(self, parts: tuple[bytes | memoryview, ...]):
        self.parts = parts
        self.nbytes = sum(len(part) for part in parts)

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def data_parts(array: np.ndarray) -> tuple[memoryview, ...] | None:
    """`array`'s bytes in C order as views of its memory: one when it is contiguous, one per row when
    only its rows are (a smoothed signal: a slice of the engine's output); None otherwise."""
    if array.flags.c_contiguous:
        return (memoryview(array.reshape(-1)).cast("B"),)
    rows = array.reshape(-1, array.shape[-1])
    if rows.strides[-1] != array.itemsize or rows.shape[0] > MAX_JOINED_ROWS:
        return None
    return tuple(memoryview(row).cast("B") for row in rows)


def contiguous_parts(array: np.ndarray) -> tuple[memoryview, ...]:
    """data_parts(array), or one contiguous copy when its rows are not contiguous either."""
    return data_parts(array) or (memoryview(np.ascontiguousarray(array).reshape(-1)).cast("B"),)


def npy_body(array: np.ndarray) -> bytes | Chunks:
    """`encode_npy(array)`'s bytes, as Chunks (no copy of the data) when the array is large and its
    rows are each contiguous."""
    parts = data_parts(array) if array.nbytes >= CHUNKED_MIN_BYTES and array.ndim > 0 else None
    if parts is None:
        return encode_npy(array)
    return Chunks((_npy_header(_descr(array.dtype), array.shape), *parts))
