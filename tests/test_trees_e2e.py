"""Monotone models as people build them, end to end: trained with XGBoost, LightGBM (each monotone
constraints method) and scikit-learn on generated data, converted with the converters' defaults,
imported with only a declaration, signed, served by a real server, and answered equal to the
library's own predictions; an edited tree and a ZipMap graph refused with their reasons.
"""

from __future__ import annotations

import re
import time
import warnings

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.byom import ModelRefusedError, import_onnx
from export.errors import ExportError
from test_service_e2e import running_server
from test_signing import make_key

FEATURES = ["income", "debt", "age"]
MONOTONE = {"income": 1, "debt": -1}  # age free
ROWS = 600


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, 3)).astype(np.float32)
    signal = x[:, 0] - x[:, 1] + np.sin(3 * x[:, 2])
    return x, (signal + 0.5 * rng.standard_normal(ROWS) > 0).astype(int), signal + 0.3 * rng.standard_normal(ROWS)


def trained() -> dict[str, tuple[onnx.ModelProto, str, callable]]:
    """name -> (the converter's ONNX graph, kind, the library's own prediction)."""
    import lightgbm
    import xgboost
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from skl2onnx import to_onnx
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression

    x, labels, target = data()
    types = [("input", FloatTensorType([None, 3]))]
    signs = [1, -1, 0]
    models: dict[str, tuple[onnx.ModelProto, str, callable]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = xgboost.XGBClassifier(n_estimators=25, max_depth=4, monotone_constraints=tuple(signs)).fit(x, labels)
        models["xgb-classifier"] = (convert_xgboost(c, initial_types=types), "classifier", lambda z, c=c: c.predict_proba(z)[:, 1])
        r = xgboost.XGBRegressor(n_estimators=25, max_depth=4, monotone_constraints=tuple(signs)).fit(x, target)
        models["xgb-regressor"] = (convert_xgboost(r, initial_types=types), "regressor", lambda z, r=r: r.predict(z))
        for method in ("basic", "intermediate", "advanced"):
            m = lightgbm.LGBMClassifier(n_estimators=25, num_leaves=15, monotone_constraints=signs,
                                        monotone_constraints_method=method, verbose=-1).fit(x, labels)
            models[f"lgbm-{method}"] = (convert_lightgbm(m, initial_types=types, zipmap=False), "classifier",
                                        lambda z, m=m: m.predict_proba(z)[:, 1])
        m = lightgbm.LGBMRegressor(n_estimators=25, num_leaves=15, monotone_constraints=signs,
                                   monotone_constraints_method="advanced", verbose=-1).fit(x, target)
        models["lgbm-regressor"] = (convert_lightgbm(m, initial_types=types), "regressor", lambda z, m=m: m.predict(z))
        h = HistGradientBoostingClassifier(max_iter=25, monotonic_cst=signs).fit(x, labels)
        models["hgb-classifier"] = (to_onnx(h, x[:1], options={"zipmap": False}), "classifier",
                                    lambda z, h=h: h.predict_proba(z)[:, 1])
        g = HistGradientBoostingRegressor(max_iter=25, monotonic_cst=signs).fit(x, target)
        models["hgb-regressor"] = (to_onnx(g, x[:1]), "regressor", lambda z, g=g: g.predict(z))
        lr = LogisticRegression().fit(x[:, :2], labels)  # income up, debt down: signed coefficients
        models["logistic"] = (to_onnx(lr, x[:1, :2], options={"zipmap": False}), "classifier",
                              lambda z, lr=lr: lr.predict_proba(z[:, :2])[:, 1])
    return models


def declaration(name: str, kind: str) -> dict:
    features = FEATURES[:2] if name == "logistic" else FEATURES
    spec = {"kind": kind, "features": features, "monotone": {k: v for k, v in MONOTONE.items() if k in features}}
    if kind == "classifier":
        spec.update(labels=["default"], output="probabilities")
    return spec


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    work = tmp_path_factory.mktemp("trees")
    repo = work / "repo"
    private, public = make_key(work, "publisher")
    models = trained()
    for name, (model, kind, _) in models.items():
        onnx.save(model, work / f"{name}.onnx")
        result = import_onnx(work / f"{name}.onnx", repo, name, declaration(name, kind), sign_key=private)
        assert (result.version_dir / "model.sig").exists()
    return repo, public, models, work


def test_every_library_model_is_served_equal_to_its_own_predictions(published):
    repo, public, models, _ = published
    x, _, _ = data(seed=1)
    rows = x[:40]
    with running_server(repo, env={"MONOSERVE_TRUSTED_KEYS": str(public), "MONOSERVE_GRPC_PORT": "0"}) as server:
        listed = {m["name"]: m for m in httpx.get(f"{server.base}/models").json()["models"]}
        for name, (_, kind, predict) in models.items():
            assert listed[name]["kind"] == kind, listed[name]
            expected = np.asarray(predict(rows), dtype=np.float64).reshape(-1)
            features = FEATURES[:2] if name == "logistic" else FEATURES
            instances = rows[:, :len(features)]
            route = "/classify" if kind == "classifier" else "/score"
            response = httpx.post(f"{server.base}{route}", json={"model": name, "instances": instances.tolist()})
            assert response.status_code == 200, (name, response.text)
            body = response.json()
            assert body["model"] == name and body["version"] == 1
            np.testing.assert_allclose(np.asarray(body["scores"]), expected, atol=1e-5, err_msg=name)
            if kind == "regressor":
                assert set(body) == {"model", "version", "scores"}
            oip = httpx.post(f"{server.base}/v2/models/{name}/infer", json={"inputs": [
                {"name": "features", "shape": list(instances.shape), "datatype": "FP32",
                 "data": instances.ravel().tolist()}]})
            assert oip.status_code == 200, (name, oip.text)
            output = oip.json()["outputs"][0]
            assert output["name"] == "scores" and output["shape"] == [len(rows), 1]
            np.testing.assert_allclose(np.asarray(output["data"]), expected, atol=1e-5, err_msg=name)
        named = httpx.post(f"{server.base}/score", json={"model": "xgb-regressor", "instances": [
            {"income": float(r[0]), "debt": float(r[1]), "age": float(r[2])} for r in rows[:3]]})
        assert named.status_code == 200 and len(named.json()["scores"]) == 3
        wrong_kind = httpx.post(f"{server.base}/score", json={"model": "xgb-classifier", "instances": rows[:2].tolist()})
        assert wrong_kind.status_code in (400, 404), wrong_kind.text
        # POST /explain on a regressor: the proven directions, and response curves that keep them
        explained = httpx.post(f"{server.base}/explain", json={
            "model": "lgbm-regressor", "instances": [rows[0].tolist()], "threshold": 0.0, "curves": 17,
            "ranges": {name: [-2.0, 2.0] for name in FEATURES}})
        assert explained.status_code == 200, explained.text
        body = explained.json()
        assert body["label"] == "score" and body["directions"] == ["increasing", "decreasing", "free"]
        curves = body["explanations"][0]["curves"]
        assert np.all(np.diff(curves["income"]["scores"]) >= 0) and np.all(np.diff(curves["debt"]["scores"]) <= 0)


def test_the_regressor_kind_over_grpc(published):
    import tritonclient.grpc as triton

    from test_grpc import grpc_server, raw_input

    repo, public, models, _ = published
    rows = data(seed=2)[0][:16]
    expected = models["lgbm-regressor"][2](rows)
    context, target = grpc_server(repo, MONOSERVE_TRUSTED_KEYS=str(public))
    with context:
        with triton.InferenceServerClient(target) as client:
            metadata = client.get_model_metadata("lgbm-regressor", as_json=True)
            assert metadata["inputs"][0]["name"] == "features" and metadata["outputs"][0]["name"] == "scores"
            result = client.infer("lgbm-regressor", [raw_input("features", rows)])
            np.testing.assert_allclose(result.as_numpy("scores").reshape(-1), expected, atol=1e-5)


def test_a_new_tree_version_is_proven_and_served_by_hot_reload(published, tmp_path):
    repo, public, models, work = published
    import shutil

    own = tmp_path / "repo"
    shutil.copytree(repo / "hgb-regressor", own / "hgb-regressor")
    with running_server(own, env={"MONOSERVE_POLL_INTERVAL_S": "0.5"}) as server:
        first = httpx.post(f"{server.base}/score", json={"model": "hgb-regressor", "instances": [[0.0, 0.0, 0.0]]})
        assert first.json()["version"] == 1
        import_onnx(work / "xgb-regressor.onnx", own, "hgb-regressor", declaration("xgb-regressor", "regressor"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = httpx.post(f"{server.base}/score", json={"model": "hgb-regressor", "instances": [[0.0, 0.0, 0.0]]})
            if answer.json().get("version") == 2:
                break
            time.sleep(0.3)
        assert answer.json()["version"] == 2, answer.text
        expected = models["xgb-regressor"][2](np.zeros((1, 3), np.float32))
        np.testing.assert_allclose(answer.json()["scores"], expected, atol=1e-5)


def edited(model: onnx.ModelProto, tree: int, factor: float) -> onnx.ModelProto:
    """The same ensemble with one tree's leaf weights multiplied by `factor` (< 0 reverses it)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    node = next(n for n in copy.graph.node if n.op_type.startswith("TreeEnsemble"))
    attributes = {a.name: a for a in node.attribute}
    prefix = "class" if node.op_type == "TreeEnsembleClassifier" else "target"
    trees = np.asarray(attributes[f"{prefix}_treeids"].ints)
    weights = np.asarray(attributes[f"{prefix}_weights"].floats)
    weights[trees == tree] *= factor
    del attributes[f"{prefix}_weights"].floats[:]
    attributes[f"{prefix}_weights"].floats.extend(weights.tolist())
    return copy


@pytest.mark.parametrize("name", ["xgb-regressor", "lgbm-advanced"])
def test_an_edited_tree_is_refused_naming_tree_feature_and_an_ort_confirmed_pair(published, tmp_path, name):
    _, _, models, _ = published
    model, kind, _ = models[name]
    broken = edited(model, tree=3, factor=-60.0)
    path = tmp_path / "edited.onnx"
    onnx.save(broken, path)
    with pytest.raises(ExportError) as caught:
        import_onnx(path, tmp_path / "repo", "edited", declaration(name, kind))
    message = str(caught.value)
    assert "tree 3 is not non-decreasing in input column 0" in message and "feature 'income'" in message, message
    assert not (tmp_path / "repo" / "edited").exists() or not any((tmp_path / "repo" / "edited").iterdir())
    found = re.search(r"tree 3 is not non-decreasing in input column 0: .*?inputs (\[[^\]]*\]) and (\[[^\]]*\])", message)
    assert found, message
    low, high = (np.asarray(eval(group), dtype=np.float32) for group in found.groups())
    assert low[0] < high[0] and np.array_equal(low[1:], high[1:])
    session = ort.InferenceSession(broken.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = session.get_outputs()[-1].name  # the probabilities (classifier) or the scores (regressor)
    scores = session.run([wanted], {session.get_inputs()[0].name: np.stack([low, high])})[0].reshape(2, -1)[:, -1]
    assert scores[1] < scores[0], (low, high, scores)  # ONNX Runtime: raising income lowered the score


def test_zipmap_outputs_are_refused_naming_the_converter_option(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, labels, _ = data()
    model = to_onnx(LogisticRegression().fit(x, labels), x[:1])  # skl2onnx's default adds a ZipMap
    onnx.save(model, tmp_path / "zipmap.onnx")
    with pytest.raises(ModelRefusedError) as caught:
        import_onnx(tmp_path / "zipmap.onnx", tmp_path / "repo", "z", declaration("z", "classifier"))
    assert "options={'zipmap': False}" in str(caught.value) and "zipmap=False" in str(caught.value)


def test_softmax_multiclass_trees_are_refused_with_the_plain_sentence(tmp_path):
    import xgboost
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    x, _, target = data()
    classes = np.digitize(target, [-1.0, 1.0])
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(x, classes)
    onnx.save(convert_xgboost(model, initial_types=[("input", FloatTensorType([None, 3]))]), tmp_path / "multi.onnx")
    spec = {"kind": "classifier", "features": FEATURES, "labels": ["low", "mid", "high"], "output": "probabilities",
            "monotone": MONOTONE}
    with pytest.raises(ModelRefusedError) as caught:
        import_onnx(tmp_path / "multi.onnx", tmp_path / "repo", "multi", spec)
    assert "tree ensembles and linear models with softmax over classes are not monotone per class and are not served" \
        in str(caught.value)


def test_proving_and_serving_a_tree_model_needs_none_of_the_training_libraries(published):
    """The service image installs `.[serve]` only: the proof reads the trees with numpy, ONNX Runtime runs them."""
    import subprocess
    import sys

    repo, public, _, _ = published
    program = f"""
import sys
BLOCKED = ("sklearn", "xgboost", "lightgbm", "skl2onnx", "onnxmltools", "torch")
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Blocker())
import numpy as np
from contract.signing import TrustedKeys
from service.repository.prover import prove_version
for name in ("lgbm-advanced", "xgb-regressor", "logistic"):
    report, proven = prove_version({str(repo)!r} + "/" + name + "/1", repo={str(repo)!r},
                                   trusted_keys=TrustedKeys.from_paths([{str(public)!r}]))
    assert report.ok, report.render()
    print(name, proven.engine.run(np.zeros((2, len(proven.manifest.inputs[0].shape) and proven.manifest.inputs[0].shape[1]), np.float32)).shape)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("(2, 1)") == 3, done.stdout
