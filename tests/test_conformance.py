"""The conformance matrix: one table of cases, run over every transport against a real server.

Every case (a good request of each shape, and each class of bad input) runs over every transport that
serves its model kind: /smooth and /classify (JSON and .npy), OIP REST (JSON and binary tensors), OIP
gRPC (ModelInfer, and plain infers over ModelStreamInfer), and for smoothers the three stream transports (WebSocket /smooth/stream with
binary and text frames, /smooth with a carried state in JSON and .npy, the gRPC sequence stream).
Good requests must give equal answers (bit for bit over the one-shot transports, which run the same
engine; streams within float32 rounding of it, chunked along time); bad ones must be refused as the
same class, which each transport shows as its own code from the one table (service.base.refusals: an
HTTP status, a WebSocket close code 4000 + status, a gRPC status), naming what was wrong.

Adding a transport: write one `Transport` subclass (its `kinds`, `medium` and `run`) and add it to
TRANSPORTS; adding a kind: give it a `Sample` in SAMPLES. Either way it must pass the whole table.
The one documented difference: the project's own JSON (/smooth, /classify and their streams) takes
JSON integers as numbers, where OIP refuses a tensor whose datatype is not the model's.
"""

from __future__ import annotations

import io
import json
import queue
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.base import refusals
from service_fixtures import CLASSIFIER_FEATURES, KERNEL_SIZE, fresh_repo, numpy_smooth, onnx_initializers, onnx_name
from test_service_e2e import free_port, running_server

TOKEN = "conformance-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_SIGNAL_LENGTH = 2000
MAX_ROWS = 300


# -- the table --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """A kind's inputs: good ones of every shape, and the bad shapes of its own."""

    model: str
    other_kind_model: str  # a model of another kind, for the "wrong kind" case
    good: dict[str, tuple[int, ...]]
    bad_rank: tuple[int, ...]
    oversize: tuple[int, ...]
    base: tuple[int, ...]  # the shape the bad-input cases start from


SAMPLES = {
    "smoother": Sample("smoother", "classifier",
                       good={"L": (150,), "CL": (2, 150), "BCL": (2, 3, 150), "metadata-1CL": (1, 2, 150)},
                       bad_rank=(1, 1, 2, 30), oversize=(1, MAX_SIGNAL_LENGTH + 1), base=(2, 30)),
    "classifier": Sample("classifier", "smoother",
                         good={"rows": (7, len(CLASSIFIER_FEATURES)), "one-row": (1, len(CLASSIFIER_FEATURES))},
                         bad_rank=(2, len(CLASSIFIER_FEATURES), 1), oversize=(MAX_ROWS + 1, len(CLASSIFIER_FEATURES)),
                         base=(3, len(CLASSIFIER_FEATURES))),
}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    shape: tuple[int, ...]
    defect: str | None = None  # how the input is broken: datatype, mismatch, nan, inf
    model: str | None = None  # None: the kind's sample model
    version: int | None = None
    token: bool = True
    refusal: int | None = None  # the HTTP status of its refusal class (service.base.refusals); None: answered
    reason: str | None = None  # what every transport's refusal names (case-insensitive)
    # streams: the input as one chunk (the per-request limits bound each chunk; a stream may be longer)
    one_chunk: bool = False

    def array(self) -> np.ndarray:
        rng = np.random.default_rng(abs(hash(self.shape)) % 2**32)
        array = (rng.standard_normal(self.shape) * 3 + 1).astype(np.float32)
        if self.defect == "datatype":
            return (array * 1000).astype(np.int64)  # an INT64 tensor (large values: float32 would round them)
        if self.defect == "nan":
            array.reshape(-1)[array.size // 2] = np.nan
        if self.defect == "inf":
            array.reshape(-1)[-1] = np.inf
        return array

    @property
    def model_name(self) -> str:
        return self.model or SAMPLES[self.kind].model


def cases() -> list[Case]:
    table = []
    for kind, sample in SAMPLES.items():
        table += [Case(f"{kind}-good-{name}", kind, shape) for name, shape in sample.good.items()]
        base = sample.base
        table += [
            Case(f"{kind}-wrong-datatype", kind, base, "datatype", refusal=400, reason="int64"),
            Case(f"{kind}-shape-data-mismatch", kind, base, "mismatch", refusal=400),
            Case(f"{kind}-nan", kind, base, "nan", refusal=400, reason="non-finite"),
            Case(f"{kind}-inf", kind, base, "inf", refusal=400, reason="non-finite"),
            Case(f"{kind}-bad-rank", kind, sample.bad_rank, refusal=400,
                 reason="1 to 3 dimensions" if kind == "smoother" else "must be a list of instances"),
            Case(f"{kind}-oversize", kind, sample.oversize, refusal=413, reason="limit", one_chunk=True),
            Case(f"{kind}-unknown-model", kind, base, model="no-such-model", refusal=404, reason="no-such-model"),
            Case(f"{kind}-unknown-version", kind, base, version=9, refusal=404, reason="version"),
            Case(f"{kind}-missing-token", kind, base, token=False, refusal=401, reason="token"),
            Case(f"{kind}-wrong-kind", kind, base, model=sample.other_kind_model, refusal=400,
                 reason=sample.other_kind_model),
        ]
    return table


CASES = cases()


# -- what a transport reports -----------------------------------------------------------------
@dataclass
class Answered:
    output: np.ndarray


@dataclass
class Refused:
    code: Any  # the transport's own: HTTP status, WebSocket close code, gRPC status name
    message: str


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def json_values(array: np.ndarray, defect: str | None) -> Any:
    """The array as JSON values, broken as the case says (JSON has no NaN/Inf: null, and 1e39 beyond float32)."""
    if defect == "mismatch":
        rows = array.reshape(-1, array.shape[-1]).tolist()
        rows[-1] = rows[-1][:-1]  # ragged: the shape the data implies is not one array's
        return rows
    if defect in ("nan", "inf"):
        values = array.astype(object)
        values[np.isnan(array)] = None
        values[np.isinf(array)] = 1e39
        return values.tolist()
    return array.tolist()


def npy_body(array: np.ndarray, defect: str | None) -> bytes:
    body = npy(array)
    return body[:-4] if defect == "mismatch" else body  # the header declares one value more than follows


def split(array: np.ndarray, case: Case) -> list[np.ndarray]:
    """Three chunks along time (one may be short), as a stream would carry the signal."""
    if case.one_chunk:
        return [array]
    length = array.shape[-1]
    cuts = [0, length // 3, length // 3 + 1, length]
    return [array[..., start:stop] for start, stop in zip(cuts, cuts[1:])]


class Transport:
    name: ClassVar[str]
    medium: ClassVar[str]  # "http", "websocket" or "grpc": which column of service.base.refusals
    kinds: ClassVar[frozenset[str]]
    stream: ClassVar[bool] = False
    json_integers: ClassVar[bool] = False  # the project's own JSON: integers are numbers (documented)

    def __init__(self, base: str, grpc_target: str):
        self.base, self.grpc_target = base, grpc_target

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        raise NotImplementedError

    def expected_code(self, status: int) -> Any:
        refusal = refusals.refusal_of(status)
        return {"http": refusal.http, "websocket": refusal.websocket, "grpc": refusal.grpc}[self.medium]

    def headers(self, case: Case) -> dict[str, str]:
        return dict(AUTH) if case.token else {}


def _http_outcome(response: httpx.Response, output: Any) -> Answered | Refused:
    if response.status_code != 200:
        return Refused(response.status_code, response.json().get("error", ""))
    return Answered(output(response))


def _model_fields(case: Case) -> dict[str, Any]:
    return {"model": case.model_name, **({"version": case.version} if case.version is not None else {})}


def _model_query(case: Case) -> dict[str, str]:
    return {key: str(value) for key, value in _model_fields(case).items()}


class OwnJson(Transport):
    medium, kinds, json_integers = "http", frozenset({"smoother", "classifier"}), True
    name = "own-json"

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        route, data, out = ("/smooth", "signal", "smoothed") if case.kind == "smoother" else ("/classify", "instances", "scores")
        response = httpx.post(f"{self.base}{route}", json={data: json_values(array, case.defect), **_model_fields(case)},
                              headers=self.headers(case), timeout=60)
        return _http_outcome(response, lambda r: np.asarray(r.json()[out], np.float32))


class OwnNpy(Transport):
    medium, kinds = "http", frozenset({"smoother", "classifier"})
    name = "own-npy"

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        route = "/smooth" if case.kind == "smoother" else "/classify"
        response = httpx.post(f"{self.base}{route}", params=_model_query(case), content=npy_body(array, case.defect),
                              headers={**self.headers(case), "content-type": "application/x-npy",
                                       "accept": "application/x-npy"}, timeout=60)
        return _http_outcome(response, lambda r: np.load(io.BytesIO(r.content)))


def _oip_tensor(case: Case, array: np.ndarray) -> tuple[str, str, list[int]]:
    name = "signal" if case.kind == "smoother" else "features"
    datatype = "INT64" if array.dtype == np.int64 else "FP32"
    return name, datatype, list(array.shape)


def _oip_url(base: str, case: Case) -> str:
    version = f"/versions/{case.version}" if case.version is not None else ""
    return f"{base}/v2/models/{case.model_name}{version}/infer"


def _oip_output(case: Case, response: httpx.Response) -> np.ndarray:
    if response.headers.get("inference-header-content-length"):
        split_at = int(response.headers["inference-header-content-length"])
        header = json.loads(response.content[:split_at])
        output = header["outputs"][0]
        array = np.frombuffer(response.content[split_at:], np.float32).reshape(output["shape"])
    else:
        output = response.json()["outputs"][0]
        array = np.asarray(output["data"], np.float32).reshape(output["shape"])
    return array.reshape(array.shape[0]) if case.kind == "classifier" and array.shape[1] == 1 else array


class OipJson(Transport):
    medium, kinds = "http", frozenset({"smoother", "classifier"})
    name = "oip-rest-json"

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        name, datatype, shape = _oip_tensor(case, array)
        data = json_values(array, case.defect)
        if case.defect == "mismatch":
            data = array.reshape(-1).tolist()[:-1]  # the shape declares one value more than the data holds
        tensor = {"name": name, "datatype": datatype, "shape": shape, "data": data}
        response = httpx.post(_oip_url(self.base, case), json={"inputs": [tensor]}, headers=self.headers(case), timeout=60)
        return _http_outcome(response, lambda r: _oip_output(case, r))


class OipBinary(Transport):
    medium, kinds = "http", frozenset({"smoother", "classifier"})
    name = "oip-rest-binary"

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        name, datatype, shape = _oip_tensor(case, array)
        raw = np.ascontiguousarray(array).tobytes()
        if case.defect == "mismatch":
            raw = raw[:-array.itemsize]  # binary_data_size (the bytes sent) is one value short of the shape
        header = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                         "parameters": {"binary_data_size": len(raw)}}],
                             "parameters": {"binary_data_output": True}}).encode()
        response = httpx.post(_oip_url(self.base, case), content=header + raw, timeout=60,
                              headers={**self.headers(case), "inference-header-content-length": str(len(header)),
                                       "content-type": "application/octet-stream"})
        return _http_outcome(response, lambda r: _oip_output(case, r))


def _grpc_input(case: Case, array: np.ndarray) -> triton_grpc.InferInput:
    name, datatype, shape = _oip_tensor(case, array)
    tensor = triton_grpc.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(array)
    if case.defect == "mismatch":
        tensor.set_shape([*shape[:-1], shape[-1] + 1])  # the shape declares more values than the bytes hold
    return tensor


def _grpc_code(error: InferenceServerException) -> str:
    return str(error.status()).removeprefix("StatusCode.")


class OipGrpc(Transport):
    medium, kinds = "grpc", frozenset({"smoother", "classifier"})
    name = "oip-grpc"

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        with triton_grpc.InferenceServerClient(self.grpc_target) as client:
            try:
                result = client.infer(case.model_name, [_grpc_input(case, array)], headers=self.headers(case),
                                      model_version=str(case.version or ""))
            except InferenceServerException as error:
                return Refused(_grpc_code(error), error.message())
        output = result.as_numpy("smoothed" if case.kind == "smoother" else "scores")
        return Answered(output.reshape(output.shape[0]) if case.kind == "classifier" and output.shape[1] == 1 else output)


class WebSocketStream(Transport):
    medium, kinds, stream = "websocket", frozenset({"smoother"}), True
    binary: ClassVar[bool]

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        url = self.base.replace("http://", "ws://") + "/smooth/stream?" + str(httpx.QueryParams(_model_query(case)))
        answers = []
        try:
            with connect(url, additional_headers=self.headers(case), max_size=None) as ws:
                for chunk in split(array, case):
                    if self.binary:
                        ws.send(npy_body(chunk, case.defect))
                        answers.append(np.load(io.BytesIO(ws.recv(timeout=60))))
                    else:
                        ws.send(json.dumps({"signal": json_values(chunk, case.defect)}))
                        answers.append(np.asarray(json.loads(ws.recv(timeout=60))["smoothed"], np.float32))
                ws.send(json.dumps({"end": True}))
                last = ws.recv(timeout=60)
                answers.append(np.load(io.BytesIO(last)) if self.binary else
                               np.asarray(json.loads(last)["smoothed"], np.float32))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, f"closed without a close frame: {closed}"
            return Refused(closed.rcvd.code, closed.rcvd.reason)
        return Answered(np.concatenate(answers, axis=-1))


class WebSocketBinary(WebSocketStream):
    name, binary = "websocket-npy", True


class WebSocketText(WebSocketStream):
    name, binary, json_integers = "websocket-json", False, True


class HttpStream(Transport):
    medium, kinds, stream = "http", frozenset({"smoother"}), True
    use_npy: ClassVar[bool]

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        answers, state = [], None
        with httpx.Client(base_url=self.base, timeout=60, headers=self.headers(case)) as client:
            for index, chunk in enumerate([*split(array, case), None]):
                end = chunk is None
                if self.use_npy:
                    params = {"stream": "true", **_model_query(case)} if state is None else ({"end": "true"} if end else {})
                    headers = {"content-type": "application/x-npy", "accept": "application/x-npy",
                               **({"x-stream-state": state} if state else {})}
                    body = npy_body(chunk if chunk is not None else array[..., :0], case.defect)
                    response = client.post("/smooth", params=params, content=body, headers=headers)
                else:
                    body = {"signal": json_values(chunk, case.defect)} if chunk is not None else {"end": True}
                    body.update({"stream": True, **_model_fields(case)} if state is None else {"state": state})
                    response = client.post("/smooth", json=body)
                if response.status_code != 200:
                    return Refused(response.status_code, response.json().get("error", ""))
                if self.use_npy:
                    answers.append(np.load(io.BytesIO(response.content)))
                    state = response.headers.get("x-stream-state")
                else:
                    answers.append(np.asarray(response.json()["smoothed"], np.float32))
                    state = response.json().get("state")
        return Answered(np.concatenate(answers, axis=-1))


class HttpStreamJson(HttpStream):
    name, use_npy, json_integers = "http-stream-json", False, True


class HttpStreamNpy(HttpStream):
    name, use_npy = "http-stream-npy", True


class GrpcSequence(Transport):
    medium, kinds, stream = "grpc", frozenset({"smoother"}), True
    name = "grpc-sequence"

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        results: queue.Queue = queue.Queue()
        chunks = split(array, case)
        answers = []
        with triton_grpc.InferenceServerClient(self.grpc_target) as client:
            # Triton's opt-in: a refusal ends the stream with its gRPC status, not a bare error_message
            client.start_stream(callback=lambda result, error: results.put((result, error)),
                                headers={**self.headers(case), "triton_grpc_error": "true"})
            try:
                for index, chunk in enumerate(chunks):
                    try:
                        client.async_stream_infer(case.model_name, [_grpc_input(case, chunk)],
                                                  model_version=str(case.version or ""), sequence_id=42,
                                                  sequence_start=index == 0, sequence_end=index == len(chunks) - 1)
                    except InferenceServerException:  # the call was refused at its start: the callback has why
                        pass
                    result, error = results.get(timeout=60)
                    if error is not None:
                        return Refused(_grpc_code(error), error.message())
                    answers.append(result.as_numpy("smoothed"))
            finally:
                client.stop_stream()
        return Answered(np.concatenate(answers, axis=-1))


class GrpcStreamInfer(Transport):
    """Plain infers (no sequence parameters) over ModelStreamInfer: any kind, one answer each."""

    medium, kinds = "grpc", frozenset({"smoother", "classifier"})
    name = "grpc-stream-infer"

    def run(self, case: Case, array: np.ndarray) -> Answered | Refused:
        results: queue.Queue = queue.Queue()
        with triton_grpc.InferenceServerClient(self.grpc_target) as client:
            client.start_stream(callback=lambda result, error: results.put((result, error)),
                                headers={**self.headers(case), "triton_grpc_error": "true"})
            try:
                try:
                    client.async_stream_infer(case.model_name, [_grpc_input(case, array)],
                                              model_version=str(case.version or ""))
                except InferenceServerException:  # the call was refused at its start: the callback has why
                    pass
                result, error = results.get(timeout=60)
            finally:
                client.stop_stream()
        if error is not None:
            return Refused(_grpc_code(error), error.message())
        output = result.as_numpy("smoothed" if case.kind == "smoother" else "scores")
        return Answered(output.reshape(output.shape[0]) if case.kind == "classifier" and output.shape[1] == 1 else output)


TRANSPORTS: list[type[Transport]] = [OwnJson, OwnNpy, OipJson, OipBinary, OipGrpc, GrpcStreamInfer, WebSocketBinary,
                                     WebSocketText, HttpStreamJson, HttpStreamNpy, GrpcSequence]


# -- the server and the runs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = fresh_repo(tmp_path_factory.mktemp("conformance"), models=("smoother", "classifier"))
    grpc_port = free_port()
    env = {"MONOSERVE_API_TOKEN": TOKEN, "MONOSERVE_GRPC_PORT": str(grpc_port),
           "MONOSERVE_MAX_SIGNAL_LENGTH": str(MAX_SIGNAL_LENGTH), "MONOSERVE_MAX_ROWS": str(MAX_ROWS)}
    with running_server(repo, env=env) as running:
        yield running.base, f"127.0.0.1:{grpc_port}", repo
    assert "Traceback" not in running.output, running.output


@dataclass
class Results:
    by_case: dict[str, dict[str, Answered | Refused]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def results(server) -> Results:
    """Every case over every transport that serves its kind, run once for the tests below."""
    base, target, _ = server
    found = Results()
    for case in CASES:
        array = case.array()
        found.by_case[case.name] = {transport.name: transport(base, target).run(case, array)
                                    for transport in TRANSPORTS if case.kind in transport.kinds}
    return found


def test_every_kind_is_served_by_its_transports():
    """A kind no transport serves, or a transport no case reaches, would leave a hole in the table."""
    assert set(SAMPLES) == {kind for transport in TRANSPORTS for kind in transport.kinds}
    for transport in TRANSPORTS:
        assert any(case.kind in transport.kinds for case in CASES), transport.name


@pytest.mark.parametrize("case", [case for case in CASES if case.refusal is None], ids=lambda case: case.name)
def test_good_requests_get_equal_answers_over_every_transport(server, results, case):
    outcomes = results.by_case[case.name]
    reference = outcomes["own-json"]
    assert isinstance(reference, Answered), reference
    if case.kind == "smoother":  # the right function, not only the same one everywhere
        version_dir = server[2] / "smoother" / "1"
        kernel = onnx_initializers(version_dir)[onnx_name(version_dir, "kernel")]
        np.testing.assert_allclose(reference.output, numpy_smooth(case.array(), kernel, "same"), rtol=1e-4, atol=1e-4)
    for transport in TRANSPORTS:
        if case.kind not in transport.kinds:
            continue
        outcome = outcomes[transport.name]
        assert isinstance(outcome, Answered), (transport.name, outcome)
        assert outcome.output.shape == reference.output.shape, transport.name  # the nesting it was sent in
        if transport.stream:  # chunked along time: equal within float32 rounding
            np.testing.assert_allclose(outcome.output, reference.output, rtol=1e-6, atol=1e-5, err_msg=transport.name)
        else:  # the same engine on the same input: bit for bit
            np.testing.assert_array_equal(outcome.output, reference.output, err_msg=transport.name)


@pytest.mark.parametrize("case", [case for case in CASES if case.refusal is not None], ids=lambda case: case.name)
def test_bad_requests_are_refused_as_one_class_over_every_transport(results, case):
    outcomes = results.by_case[case.name]
    for transport in TRANSPORTS:
        if case.kind not in transport.kinds:
            continue
        outcome = outcomes[transport.name]
        if case.defect == "datatype" and transport.json_integers:  # documented: JSON integers are numbers
            assert isinstance(outcome, Answered), (transport.name, outcome)
            continue
        assert isinstance(outcome, Refused), (transport.name, outcome)
        assert outcome.code == transport(None, None).expected_code(case.refusal), (transport.name, outcome)
        if case.reason is not None:
            assert case.reason.lower() in outcome.message.lower(), (transport.name, outcome)


def test_json_integers_on_the_projects_own_routes_are_the_float_answer(results):
    """The one documented difference: /smooth, /classify and their streams read JSON integers as numbers."""
    for kind in SAMPLES:
        outcomes = results.by_case[f"{kind}-wrong-datatype"]
        answered = [outcomes[t.name] for t in TRANSPORTS if t.json_integers and kind in t.kinds]
        assert answered and all(isinstance(outcome, Answered) for outcome in answered)
        for outcome in answered[1:]:
            np.testing.assert_allclose(outcome.output, answered[0].output, rtol=1e-6, atol=1e-3)


def test_the_refusal_table_gives_each_transport_one_code_per_class():
    """service.base.refusals is a function of the class: WebSocket 4000 + status, gRPC by name, 1011 for bugs."""
    for refusal in refusals.REFUSALS:
        assert refusals.refusal_of(refusal.http) is refusal
        assert refusals.websocket_close_code(refusal.http) == 4000 + refusal.http
        assert hasattr(grpc.StatusCode, refusal.grpc)
    assert refusals.refusal_of(503, retry=True).grpc == "RESOURCE_EXHAUSTED"
    assert refusals.websocket_close_code(500) == 1011
    assert KERNEL_SIZE > 1  # the streams' tails are real (a 1-tap kernel would hide the carried state)
