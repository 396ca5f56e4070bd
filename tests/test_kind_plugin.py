"""A new kind plugs in by one adapter module and one registry line (docs/architecture.md, "Where things
plug in"): the test-only "scaler" kind (tests/scaler_kind.py), registered by tests/kind_launcher.py,
proven at load by the prover's certificate and served by a real server over its own native route,
OIP REST and OIP gRPC (tritonclient), each answer equal to numpy's. No protocol module names it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper, numpy_helper

from contract.manifest import ConstraintEntry, FeatureSpec, Manifest, Probe, TensorSpec
from scaler_kind import ScalerInfo
from service_fixtures import file_entries
from test_service_e2e import STARTUP_TIMEOUT_S, free_port, stop

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FEATURES = ["a", "b", "c"]
FACTOR = np.array([0.5, 2.0, 3.25], dtype=np.float32)


def write_scaler(repo: Path, name: str, factor: np.ndarray) -> Path:
    """REPO/NAME/1: one ONNX Mul by `factor`, and its manifest (the "scaler" section, a probe, the
    declared positive constraint)."""
    version_dir = repo / name / "1"
    version_dir.mkdir(parents=True)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["features", "factor"], ["scores"], name="scale")], "scaler",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(factor)])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(factor)])],
        [numpy_helper.from_array(factor, "factor")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, version_dir / "model.onnx")
    probe = np.array([[1.0, -2.0, 0.25]], dtype=np.float32)
    manifest = Manifest(
        name=name, version=1, kind="classifier", created=datetime.now(timezone.utc), monoserve_version="test",
        source_checkpoint_sha256="0" * 64, source_checkpoint_name="none",
        inputs=[TensorSpec(name="features", dtype="float32", shape=["batch", len(factor)])],
        outputs=[TensorSpec(name="scores", dtype="float32", shape=["batch", len(factor)])],
        files=file_entries(version_dir),
        constraints=[ConstraintEntry(tensor="factor", rule="positive", locations={"onnx": "factor"})],
        classifier=None,
        probe=Probe(input=probe.tolist(), expected=(probe * factor).tolist(), atol=1e-6),
    ).model_dump(mode="json")
    # written as JSON: this (test) process has not registered the kind, so its Manifest cannot hold the section
    manifest.update(kind="scaler", scaler=ScalerInfo(features=[FeatureSpec(name=f) for f in FEATURES]).model_dump())
    del manifest["classifier"]
    (version_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return version_dir


def wait_loaded(process: subprocess.Popen, base: str) -> None:
    """Until the repository is loaded (not /readyz: it stays 503 while "shrink" has no valid version)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            listed = {m["name"] for m in httpx.get(f"{base}/models", timeout=1.0).json()["models"]}
            if listed == {"scale", "shrink"}:
                return
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not load its repository in time")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("kinds") / "repo"
    write_scaler(repo, "scale", FACTOR)
    write_scaler(repo, "shrink", -FACTOR)  # decreasing: must be refused, by the policy's check of the factor
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "MONOSERVE_REPO": str(repo),
           "MONOSERVE_HOST": "127.0.0.1", "MONOSERVE_PORT": str(port), "MONOSERVE_GRPC_PORT": str(grpc_port),
           "MONOSERVE_WORKERS": "1"}
    env.pop("MONOSERVE_TRUSTED_KEYS", None)
    process = subprocess.Popen([sys.executable, str(TESTS / "kind_launcher.py")], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_loaded(process, base)
        yield base, f"127.0.0.1:{grpc_port}", repo
    finally:
        output = stop(process)
    assert "Traceback" not in output, output


def test_the_manifest_refuses_a_kind_nobody_registered(server):
    _, _, repo = server
    with pytest.raises(ValueError, match="unknown kind 'scaler'"):  # this process never ran register_kind
        Manifest.read(repo / "scale" / "1")


def test_the_added_kind_is_proven_and_a_decreasing_one_refused(server):
    base, _, _ = server
    scale = httpx.get(f"{base}/models/scale").json()
    assert (scale["kind"], scale["state"], scale["serving_version"]) == ("scaler", "serving", 1), scale
    steps = {step["step"]: step for step in scale["versions"][0]["report"]["steps"]}
    assert all(step["status"] == "ok" for step in steps.values()), steps
    assert steps["certificate"]["details"]["findings"][0]["found"] == "non-decreasing everywhere", steps["certificate"]
    assert scale["versions"][0]["scaler"]["features"][0]["name"] == "a"  # the added section, as GET /models/{name} describes it
    shrink = httpx.get(f"{base}/models/shrink").json()
    assert shrink["state"] == "unavailable", shrink
    reason = shrink["versions"][0]["report"]["reason"]
    assert reason.startswith("constraints: node Mul weight model.onnx:factor[0]: positive violated"), reason


def test_served_over_its_native_route_oip_rest_and_grpc_equal_to_numpy(server):
    base, grpc_target, _ = server
    x = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    expected = x * FACTOR

    native = httpx.post(f"{base}/scale", json={"model": "scale", "instances": x.tolist()})
    assert native.status_code == 200, native.text
    body = native.json()
    assert (body["model"], body["version"]) == ("scale", 1)
    np.testing.assert_allclose(np.asarray(body["scores"]), expected, rtol=1e-6)
    keyed = httpx.post(f"{base}/scale?model=scale", json={"instances": [dict(zip(FEATURES, row)) for row in x.tolist()]})
    assert keyed.status_code == 200, keyed.text
    np.testing.assert_allclose(np.asarray(keyed.json()["scores"]), expected, rtol=1e-6)
    unnamed = httpx.post(f"{base}/scale", json={"instances": x.tolist()})  # two scalers: the default is ambiguous
    assert unnamed.status_code == 400, unnamed.text
    assert unnamed.json()["error"] == "the repository has several scaler models (scale, shrink): name one with 'model'"
    wrong = httpx.post(f"{base}/scale", json={"model": "scale", "instances": [[1.0, 2.0]]})
    assert wrong.status_code == 400 and "3 features" in wrong.json()["error"], wrong.text

    metadata = httpx.get(f"{base}/v2/models/scale").json()
    assert metadata["inputs"][0]["name"] == "features" and metadata["outputs"][0]["name"] == "scores", metadata
    oip = httpx.post(f"{base}/v2/models/scale/infer", json={"inputs": [
        {"name": "features", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert oip.status_code == 200, oip.text
    output = oip.json()["outputs"][0]
    assert (output["name"], output["shape"]) == ("scores", [7, 3])
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(7, 3), expected, rtol=1e-6)

    with triton.InferenceServerClient(grpc_target) as client:
        tensor = triton.InferInput("features", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("scale", [tensor])
        assert [o.name for o in result.get_response().outputs] == ["scores"]
        np.testing.assert_allclose(result.as_numpy("scores"), expected, rtol=1e-6)
        with pytest.raises(triton.InferenceServerException,
                           match=r"UNAVAILABLE\] model 'shrink' has no valid version \(version 1: constraints: node Mul"):
            client.infer("shrink", [tensor])


ROUND_TRIP = """
import json, sys
from contract.manifest import Manifest, register_section
from scaler_kind import ScalerInfo
text = open(sys.argv[1]).read()
register_section("scaler", ScalerInfo)
manifest = Manifest.model_validate_json(text)
again = Manifest.model_validate_json(manifest.to_json())
assert again.section("scaler") == manifest.section("scaler") == ScalerInfo.model_validate(json.loads(text)["scaler"])
assert json.loads(again.to_json())["scaler"] == json.loads(text)["scaler"]
for bad, why in (({"scaler": {"features": [], "extra": 1}}, "extra"), ({"kind": "classifier"}, "belong to another kind")):
    try:
        Manifest.model_validate({**json.loads(text), **bad})
    except ValueError as exc:
        assert why in str(exc).lower(), exc
    else:
        raise AssertionError(bad)
print("ok")
"""


def test_a_registered_section_round_trips_and_is_checked(tmp_path):
    """In a process of its own: registering a kind changes what every Manifest of the process accepts."""
    version_dir = write_scaler(tmp_path, "scale", FACTOR)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    done = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(version_dir / "manifest.json")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
