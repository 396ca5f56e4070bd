"""The HTTP service through TestClient (real ONNX Runtime sessions over real artifacts)."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings, available_cpus, cgroup_cpu_quota
from service_fixtures import (
    CLASSIFIER_FEATURES,
    KERNEL_SIZE,
    MULTILABEL_LABELS,
    copy_version,
    edit_initializer,
    fresh_repo,
    insert_scaling_node,
    numpy_classify,
    numpy_smooth,
    onnx_initializers,
    onnx_name,
    reseal,
)

MAX_BODY = 2 * 1024 * 1024
MAX_LENGTH = 50_000


def make_client(repo, **overrides) -> TestClient:
    values = dict(repo=repo, device="cpu", default_classifier="classifier", max_body_bytes=MAX_BODY,
                  max_signal_length=MAX_LENGTH, cpu_threads=1)
    return TestClient(create_app(Settings(**{**values, **overrides})))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("service"))


@pytest.fixture(scope="module")
def client(repo):
    with make_client(repo) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def kernel(repo) -> np.ndarray:
    version_dir = repo / "smoother" / "1"
    return onnx_initializers(version_dir)[onnx_name(version_dir, "kernel")]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


NPY = {"content-type": "application/x-npy"}


# -- /smooth ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["same", "causal", "valid"])
@pytest.mark.parametrize("shape_prefix", [(), (3,), (2, 3)])
def test_smooth_matches_numpy_reference(client, kernel, mode, shape_prefix):
    rng = np.random.default_rng(len(shape_prefix))
    for length in (1, 2, KERNEL_SIZE - 1, KERNEL_SIZE, KERNEL_SIZE + 1, 57, 300):
        signal = rng.standard_normal((*shape_prefix, length)).astype(np.float32) * 10
        response = client.post("/smooth", json={"signal": signal.tolist(), "mode": mode})
        if mode == "valid" and length < KERNEL_SIZE:
            assert response.status_code == 400 and "needs at least 9 samples" in response.json()["error"]
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model"], body["version"], body["mode"]) == ("smoother", 1, mode)
        smoothed = np.asarray(body["smoothed"])
        expected = numpy_smooth(signal, kernel, mode)
        assert smoothed.shape == expected.shape == (*shape_prefix, length if mode != "valid" else length - KERNEL_SIZE + 1)
        np.testing.assert_allclose(smoothed, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["same", "causal"])
def test_constant_signal_is_unchanged(client, mode):
    for length in (1, 4, KERNEL_SIZE, 100):
        signal = np.full((2, length), 3.25)
        body = client.post("/smooth", json={"signal": signal.tolist(), "mode": mode}).json()
        np.testing.assert_allclose(np.asarray(body["smoothed"]), signal, rtol=0, atol=1e-5)


def test_default_mode_is_the_manifests(client):
    assert client.post("/smooth", json={"signal": [1.0, 2.0, 3.0]}).json()["mode"] == "same"


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f8"])
def test_smooth_npy_in_and_out_equals_json(client, kernel, dtype):
    signal = np.random.default_rng(3).standard_normal((2, 3, 40)).astype(dtype)
    response = client.post("/smooth?mode=causal", content=npy_bytes(signal),
                           headers={**NPY, "accept": "application/x-npy"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    assert response.headers["x-model"] == "smoother" and response.headers["x-mode"] == "causal"
    out = np.load(io.BytesIO(response.content))
    assert out.dtype == np.float32 and out.shape == (2, 3, 40)
    via_json = client.post("/smooth", json={"signal": signal.astype(np.float64).tolist(), "mode": "causal"}).json()
    np.testing.assert_array_equal(out, np.asarray(via_json["smoothed"], dtype=np.float32))
    np.testing.assert_allclose(out, numpy_smooth(signal.astype(np.float64), kernel, "causal"), rtol=1e-5, atol=1e-5)


def test_npy_body_with_json_answer_and_fortran_order(client, kernel):
    signal = np.asfortranarray(np.random.default_rng(4).standard_normal((3, 25)))
    response = client.post("/smooth", content=npy_bytes(signal), headers=NPY)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    np.testing.assert_allclose(np.asarray(response.json()["smoothed"]), numpy_smooth(signal, kernel, "same"), atol=1e-5)


def test_inline_and_threaded_paths_answer_the_same(repo):
    signal = np.random.default_rng(5).standard_normal((2, 2, 500)).tolist()
    instances = np.random.default_rng(6).standard_normal((5, 4)).tolist()
    answers = []
    for inline in (0, 10**9):
        with make_client(repo, inline_max_body_bytes=inline, inline_max_inference_us=inline) as c:
            answers.append((c.post("/smooth", json={"signal": signal}).content,
                            c.post("/classify", json={"instances": instances}).content))
    assert answers[0] == answers[1]


# -- /classify --------------------------------------------------------------------------------
def test_classify_matches_numpy_forward_pass(client, repo):
    instances = np.random.default_rng(7).standard_normal((17, len(CLASSIFIER_FEATURES))) * 2
    response = client.post("/classify", json={"instances": instances.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["labels"], body["threshold"]) == ("classifier", 1, ["spam"], 0.5)
    expected = numpy_classify(instances, onnx_initializers(repo / "classifier" / "1"))[:, 0]
    assert len(body["scores"]) == 17 and all(isinstance(s, float) for s in body["scores"])
    np.testing.assert_allclose(body["scores"], expected, rtol=1e-5, atol=1e-6)


def test_feature_name_instances_equal_positional(client):
    rows = np.random.default_rng(8).standard_normal((4, len(CLASSIFIER_FEATURES))).tolist()
    named = [dict(reversed(list(zip(CLASSIFIER_FEATURES, row)))) for row in rows]  # key order must not matter
    positional = client.post("/classify", json={"instances": rows}).json()
    by_name = client.post("/classify", json={"instances": named}).json()
    assert by_name == positional


def test_multilabel_gives_one_list_per_instance(client, repo):
    instances = np.random.default_rng(9).standard_normal((3, 3))
    body = client.post("/classify", json={"instances": instances.tolist(), "model": "multilabel"}).json()
    assert body["labels"] == MULTILABEL_LABELS
    expected = numpy_classify(instances, onnx_initializers(repo / "multilabel" / "1"))
    np.testing.assert_allclose(np.asarray(body["scores"]), expected, rtol=1e-5, atol=1e-6)


def test_classify_npy(client, repo):
    instances = np.random.default_rng(10).standard_normal((6, len(CLASSIFIER_FEATURES)))
    response = client.post("/classify", content=npy_bytes(instances), headers={**NPY, "accept": "application/x-npy"})
    assert response.status_code == 200, response.text
    scores = np.load(io.BytesIO(response.content))
    assert orjson.loads(response.headers["x-labels"]) == ["spam"]
    expected = numpy_classify(instances, onnx_initializers(repo / "classifier" / "1"))[:, 0]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_scores_rise_with_increasing_and_fall_with_decreasing_features(client):
    base = np.zeros((1, len(CLASSIFIER_FEATURES)))
    steps = np.linspace(-3, 3, 13)
    for index, direction in ((0, 1), (1, -1), (2, 1)):
        grid = np.repeat(base, len(steps), axis=0)
        grid[:, index] = steps
        scores = np.asarray(client.post("/classify", json={"instances": grid.tolist()}).json()["scores"])
        assert np.all(direction * np.diff(scores) >= -1e-7), (index, scores)


# -- errors -----------------------------------------------------------------------------------
BAD_INPUTS = [
    # (route, request kwargs, status, fragment of the error message)
    ("/smooth", {"content": b'{"signal": [1, 2,'}, 400, "malformed JSON"),
    ("/smooth", {"content": b"[1, 2, 3]"}, 400, "expected a JSON object"),
    ("/smooth", {"content": b""}, 400, "empty request body"),
    ("/smooth", {"json": {"values": [1]}}, 400, "unknown field(s) ['values']"),
    ("/smooth", {"json": {"mode": "same"}}, 400, "missing field 'signal'"),
    ("/smooth", {"json": {"signal": 5}}, 400, "1 to 3 dimensions"),
    ("/smooth", {"json": {"signal": [[[[1.0]]]]}}, 400, "1 to 3 dimensions"),
    ("/smooth", {"json": {"signal": [[1, 2], [3]]}}, 400, "ragged"),
    ("/smooth", {"json": {"signal": [1, "x"]}}, 400, "only numbers"),
    ("/smooth", {"json": {"signal": [1, {"a": 1}]}}, 400, "only numbers"),
    ("/smooth", {"json": {"signal": "1,2,3"}}, 400, "nested) list of numbers"),
    ("/smooth", {"json": {"signal": [1.0, None, 2.0]}}, 400, "non-finite"),
    ("/smooth", {"content": b'{"signal": [1.0, 1e39]}'}, 400, "non-finite"),
    ("/smooth", {"content": b'{"signal": [1.0, NaN]}'}, 400, "malformed JSON"),
    ("/smooth", {"json": {"signal": []}}, 400, "empty"),
    ("/smooth", {"json": {"signal": [[], []]}}, 400, "empty"),
    ("/smooth", {"json": {"signal": [1.0, 2.0], "mode": "valid"}}, 400, "needs at least 9 samples"),
    ("/smooth", {"json": {"signal": [1.0], "mode": "full"}}, 400, "unknown mode 'full'"),
    ("/smooth?mode=full", {"json": {"signal": [1.0]}}, 400, "mode"),
    ("/smooth?version=abc", {"json": {"signal": [1.0]}}, 400, "version"),
    ("/smooth", {"json": {"signal": [1.0], "version": "two"}}, 400, "'version' must be a positive integer"),
    ("/smooth", {"json": {"signal": [1.0], "version": 0}}, 400, "'version' must be a positive integer"),
    ("/smooth", {"json": {"signal": [1.0], "model": 3}}, 400, "'model' must be a non-empty string"),
    ("/smooth", {"json": {"signal": [1.0], "model": "nope"}}, 404, "unknown model 'nope'"),
    ("/smooth", {"json": {"signal": [1.0], "version": 42}}, 404, "has no version 42"),
    ("/smooth", {"json": {"signal": [1.0], "model": "classifier"}}, 400, "is a classifier, not a smoother"),
    ("/smooth", {"content": b"1,2,3", "headers": {"content-type": "text/csv"}}, 415, "unsupported content type 'text/csv'"),
    ("/smooth", {"content": b"\x93NUMPY\x01\x00garbage", "headers": NPY}, 400, "malformed .npy header"),
    ("/smooth", {"content": b"not npy at all", "headers": NPY}, 400, "not a .npy file"),
    ("/smooth", {"content": npy_bytes(np.arange(10, dtype=np.int64)), "headers": NPY}, 400, "dtype must be float32 or float64"),
    ("/smooth", {"content": npy_bytes(np.ones(10))[:-8], "headers": NPY}, 400, ".npy payload is 72 bytes"),
    ("/smooth", {"content": npy_bytes(np.array([1.0, np.inf])), "headers": NPY}, 400, "non-finite"),
    ("/smooth", {"content": npy_bytes(np.ones((1, 1, 1, 4))), "headers": NPY}, 400, "1 to 3 dimensions"),
    ("/smooth", {"json": {"signal": [0.0] * (MAX_LENGTH + 1)}}, 413, "exceeds the limit of 50000 samples"),
    ("/smooth", {"content": b" " * (MAX_BODY + 1)}, 413, "exceeds the limit"),
    ("/classify", {"json": {"instances": [[1.0, 2.0, 3.0]]}}, 400, "each instance needs 4 features"),
    ("/classify", {"json": {"instances": [1.0, 2.0, 3.0, 4.0]}}, 400, "must be a list of instances"),
    ("/classify", {"json": {"instances": []}}, 400, "'instances' is empty"),
    ("/classify", {"json": {"instances": {"clicks": 1}}}, 400, "must be a list of instances"),
    ("/classify", {"json": {"instances": [{"clicks": 1, "complaints": 1, "visits": 1, "region": 1, "bogus": 2}]}},
     400, "unknown feature(s) ['bogus']"),
    ("/classify", {"json": {"instances": [{"clicks": 1, "complaints": 1}]}}, 400, "missing feature(s) ['region', 'visits']"),
    ("/classify", {"json": {"instances": [{"clicks": 1, "complaints": 1, "visits": 1, "region": "x"}]}}, 400, "only numbers"),
    ("/classify", {"json": {"instances": [[1, 2, 3, 4], {"clicks": 1}]}}, 400, "mixes objects and lists"),
    ("/classify", {"json": {"instances": [[1, 2, 3, None]]}}, 400, "non-finite"),
    ("/classify", {"json": {"instances": [[1, 2, 3, 4]], "model": "smoother"}}, 400, "is a smoother, not a classifier"),
    ("/classify", {"content": npy_bytes(np.ones((2, 3))), "headers": NPY}, 400, "each instance needs 4 features"),
    ("/classify", {"content": npy_bytes(np.array([[1, 2, 3, np.nan]])), "headers": NPY}, 400, "non-finite"),
    ("/classify", {"content": b"<xml/>", "headers": {"content-type": "application/xml"}}, 415, "unsupported content type"),
]


@pytest.mark.parametrize("route, kwargs, status, fragment", BAD_INPUTS,
                         ids=[f"{r}-{s}-{f[:30]}" for r, _, s, f in BAD_INPUTS])
def test_bad_input_answers_status_and_message(client, route, kwargs, status, fragment):
    response = client.post(route, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error"} and fragment in body["error"], body


def test_chunked_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    response = client.post("/smooth", content=chunks())
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]


def test_unknown_route_and_method_answer_error_json(client):
    missing = client.get("/nowhere")
    assert missing.json() == {"error": "Not Found", "request_id": missing.headers["x-request-id"]}
    response = client.get("/smooth")
    assert response.status_code == 405 and "error" in response.json()


# -- auth -------------------------------------------------------------------------------------
def test_api_token(repo):
    with make_client(repo, api_token="s3cret") as c:
        payload = {"signal": [1.0, 2.0]}
        missing = c.post("/smooth", json=payload)
        assert missing.status_code == 401 and "missing API token" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = c.post("/smooth", json=payload, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "wrong API token"
        assert c.post("/smooth", json=payload, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/models").status_code == 401
        assert c.get("/models", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # probes stay open


# -- models, health, metrics, docs --------------------------------------------------------------
def test_health_and_models_listing(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz").json()
    assert ready == {"status": "ready", "models": {"classifier": 1, "multilabel": 1, "smoother": 1}}
    listing = client.get("/models").json()
    assert listing["ready"] is True and listing["engine"] == "onnx"
    assert {m["name"]: (m["kind"], m["state"], m["serving_version"]) for m in listing["models"]} == {
        "classifier": ("classifier", "serving", 1), "multilabel": ("classifier", "serving", 1),
        "smoother": ("smoother", "serving", 1)}
    detail = client.get("/models/smoother").json()
    version = detail["versions"][0]
    assert version["state"] == "serving" and version["smoother"]["kernel_size"] == KERNEL_SIZE
    assert [s["step"] for s in version["report"]["steps"]] == ["manifest", "checksums", "graph", "constraints", "certificate", "probe", "warmup"]
    assert all(len(f["sha256"]) == 64 for f in version["files"])
    assert version["inputs"][0]["name"] == "signal"
    assert client.get("/models/nope").status_code == 404


def test_metrics_count_requests_and_stages(client):
    client.post("/smooth", json={"signal": [1.0, 2.0, 3.0]})
    client.post("/smooth", json={"signal": [1.0], "model": "nope"})
    text = client.get("/metrics").text
    assert 'monoserve_requests_total{model="smoother",route="/smooth",status="200"}' in text
    assert 'monoserve_requests_total{model="",route="/smooth",status="404"}' in text
    for stage in ("decode", "inference", "encode"):
        assert f'monoserve_stage_seconds_count{{route="/smooth",stage="{stage}"}}' in text
    assert 'monoserve_models_loaded{model="smoother"} 1.0' in text


def test_docs_work_offline(client):
    html = client.get("/docs").text
    assert "/docs/static/swagger-ui-bundle.js" in html and "/docs/static/swagger-ui.css" in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    js = client.get("/docs/static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/docs/static/swagger-ui.css").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/smooth", "/classify", "/models", "/readyz", "/metrics"} <= set(spec["paths"])
    assert "application/x-npy" in spec["paths"]["/smooth"]["post"]["requestBody"]["content"]


# -- tampered repositories ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tampered_repo(tmp_path_factory):
    repo = fresh_repo(tmp_path_factory.mktemp("tampered"), models=("smoother", "classifier"))
    negative = copy_version(repo, "classifier", 1, 2)
    edit_initializer(negative, onnx_name(negative, "layers.0.weight"), lambda w: w * np.where(np.arange(w.size).reshape(w.shape) == 0, -1, 1))
    reseal(negative)
    sneaky = copy_version(repo, "classifier", 1, 3)
    insert_scaling_node(sneaky, "features", np.array([1.0, 1.0, -2.0, 1.0]), node_name="sneaky_flip")
    reseal(sneaky)
    non_monotone = copy_version(repo, "smoother", 1, 2)
    edit_initializer(non_monotone, onnx_name(non_monotone, "kernel"), lambda k: k[..., ::-1].copy())
    reseal(non_monotone)
    changed = copy_version(repo, "smoother", 1, 3)
    data = bytearray((changed / "model.onnx").read_bytes())
    data[-20] ^= 0x01
    (changed / "model.onnx").write_bytes(bytes(data))
    truncated = copy_version(repo, "smoother", 1, 4)
    (truncated / "model.onnx").write_bytes((truncated / "model.onnx").read_bytes()[:-100])
    return repo


def test_tampered_versions_are_refused_and_the_good_one_serves(tampered_repo):
    with make_client(tampered_repo) as c:
        assert c.get("/readyz").status_code == 200  # every model still has a valid version
        assert c.post("/smooth", json={"signal": [1.0, 2.0]}).json()["version"] == 1
        assert c.post("/classify", json={"instances": [[1, 2, 3, 4]]}).json()["version"] == 1
        expected = {
            ("classifier", 2): ("constraints", "layers.0.weight[0, 0]"),
            ("classifier", 3): ("certificate", "sneaky_flip"),
            ("smoother", 2): ("constraints", "monotone_nondecreasing"),
            ("smoother", 3): ("checksums", "model.onnx: sha256"),
            ("smoother", 4): ("checksums", "model.onnx: size"),
        }
        for (name, number), (step, fragment) in expected.items():
            detail = c.get(f"/models/{name}").json()
            version = next(v for v in detail["versions"] if v["version"] == number)
            report = version["report"]
            assert version["state"] == "refused" and report["ok"] is False
            failed = next(s for s in report["steps"] if s["status"] == "failed")
            assert failed["step"] == step and fragment in report["reason"], report["reason"]
            answer = c.post("/smooth" if name == "smoother" else "/classify",
                            json={"signal": [1.0]} if name == "smoother" else {"instances": [[1, 2, 3, 4]]},
                            params={"version": number})
            assert answer.status_code == 503 and f"version {number} was refused at load" in answer.json()["error"]
        listing = {m["name"]: m for m in c.get("/models").json()["models"]}
        assert listing["smoother"]["versions"] == {"1": "ok", "2": "refused", "3": "refused", "4": "refused"}
        metrics = c.get("/metrics").text
        assert 'monoserve_load_refusals_total{model="smoother",step="checksums"} 2.0' in metrics
        assert 'monoserve_load_refusals_total{model="classifier",step="certificate"} 1.0' in metrics


def test_model_without_a_valid_version_answers_503_and_is_not_ready(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    good = repo / "smoother" / "1"
    edit_initializer(good, onnx_name(good, "kernel"), lambda k: -k)
    reseal(good)
    with make_client(repo) as c:
        response = c.post("/smooth", json={"signal": [1.0, 2.0]})
        assert response.status_code == 503
        assert "model 'smoother' has no valid version" in response.json()["error"] and "positive" in response.json()["error"]
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "smoother" in ready.json()["error"]
        assert c.post("/classify", json={"instances": [[1, 2, 3, 4]]}).status_code == 200  # the other model serves
        assert c.get("/models").json()["ready"] is False


def test_empty_or_missing_repository_is_not_ready(tmp_path):
    with make_client(tmp_path / "missing") as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "does not exist" in ready.json()["error"]
        assert c.post("/smooth", json={"signal": [1.0]}).status_code == 503
    (tmp_path / "empty").mkdir()
    with make_client(tmp_path / "empty") as c:
        assert "holds no models" in c.get("/readyz").json()["error"]


# -- engines, devices, settings -------------------------------------------------------------------
def test_torchscript_engine_gives_the_same_answers(repo, client):
    signal = np.random.default_rng(11).standard_normal((2, 3, 64)).tolist()
    instances = np.random.default_rng(12).standard_normal((9, 4)).tolist()
    with make_client(repo, engine="torchscript") as ts:
        assert ts.get("/models").json()["engine"] == "torchscript"
        for mode in ("same", "causal", "valid"):
            a = ts.post("/smooth", json={"signal": signal, "mode": mode}).json()["smoothed"]
            b = client.post("/smooth", json={"signal": signal, "mode": mode}).json()["smoothed"]
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        a = ts.post("/classify", json={"instances": instances}).json()["scores"]
        b = client.post("/classify", json={"instances": instances}).json()["scores"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cuda_device_without_cuda_fails_at_start(repo):
    from service.compute.engines import DeviceUnavailableError, onnx_cuda_available

    if onnx_cuda_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        with make_client(repo, device="cuda"):
            pass


@pytest.mark.cuda
def test_cuda_serves_the_same_answers(repo, client):
    from service.compute.engines import onnx_cuda_available

    if not onnx_cuda_available():
        pytest.skip("no CUDAExecutionProvider on this machine")
    signal = np.random.default_rng(13).standard_normal((2, 3, 256)).tolist()
    with make_client(repo, device="cuda") as gpu:
        assert gpu.get("/models").json()["device"] == "cuda"
        a = gpu.post("/smooth", json={"signal": signal}).json()["smoothed"]
        b = client.post("/smooth", json={"signal": signal}).json()["smoothed"]
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_onnx_path_never_imports_torch(repo):
    code = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.settings import Settings
        with TestClient(create_app(Settings(repo={str(repo)!r}, device="auto", default_classifier="classifier"))) as c:
            assert c.get("/readyz").status_code == 200
            assert c.post("/smooth", json={{"signal": [[1.0, 2.0, 3.0]]}}).status_code == 200
            assert c.post("/classify", json={{"instances": [[1, 2, 3, 4]]}}).status_code == 200
        from service.repository.prover import prove_version
        assert prove_version({str(repo / "classifier" / "1")!r})[0].ok
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MONOSERVE_REPO", str(tmp_path))
    monkeypatch.setenv("MONOSERVE_ENGINE", "torchscript")
    monkeypatch.setenv("MONOSERVE_CPU_THREADS", "4")
    monkeypatch.setenv("MONOSERVE_WORKERS", "3")
    monkeypatch.setenv("MONOSERVE_API_TOKEN", "t")
    settings = Settings()
    assert settings.repo == tmp_path and settings.engine == "torchscript"
    assert settings.threads_per_worker == 1 and settings.api_token.get_secret_value() == "t"
    monkeypatch.setenv("MONOSERVE_DEVICE", "tpu")
    with pytest.raises(ValueError):
        Settings()


def test_available_cpus_honours_affinity_and_cgroup_quota(tmp_path):
    import os

    affinity = len(os.sched_getaffinity(0))
    proc = tmp_path / "cgroup"
    proc.write_text("0::/box\n")
    root = tmp_path / "fs"
    (root / "box").mkdir(parents=True)
    (root / "box" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(root, proc) == 1.5
    assert available_cpus(root, proc) == 1  # rounded down, never above the quota
    (root / "box" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(root, proc) is None and available_cpus(root, proc) == affinity
    (root / "box" / "cpu.max").unlink()
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(root, proc) == 0.5 and available_cpus(root, proc) == 1
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(root, proc) == affinity
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{(affinity + 4) * 100000}\n")
    assert available_cpus(root, proc) == affinity  # a quota above the affinity mask does not add CPUs
