"""POST /explain (and its OIP extension) against a real `monoserve serve` process, checked by the
service's own /classify: every recourse value flips the decision and the value one tolerance before
it does not; bounds contain the scores of 1,000 random points of their box and are reached at its
corners; contributions of the additive model sum to its logit (computed here, by torch in float64);
the model calls per instance stay within 2 + F * ceil(log2(range / tol)), counted at the engine.
"""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.manifest import Manifest
from explain_fixtures import (
    HIDDEN_DIRECTIONS,
    HIDDEN_FEATURES,
    LINEAR_FEATURES,
    SPAM,
    SPAM_FEATURES,
    explain_repo,
)
from service.app import create_app
from service.settings import Settings
from test_service_e2e import running_server

MODELS = ("classifier", "hidden", "linear")


@pytest.fixture(scope="module")
def repo():
    return explain_repo()


@pytest.fixture(scope="module")
def server(repo):
    with running_server(repo) as running:
        yield running.base
    assert running.process.returncode == 0, running.output


def manifest(repo, name: str) -> Manifest:
    return Manifest.read(repo / name / "1")


def ranges_of(repo, name: str) -> dict[str, tuple[float, float]]:
    return {k: (r.low, r.high) for k, r in manifest(repo, name).feature_ranges.items()}


def classify(server: str, model: str, rows: np.ndarray) -> np.ndarray:
    response = httpx.post(f"{server}/classify", json={"model": model, "instances": np.asarray(rows).tolist()}, timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["scores"], dtype=np.float64)


def explain(server: str, **body) -> dict:
    response = httpx.post(f"{server}/explain", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def float32_ulps(span) -> float:
    """Two float32 roundings at the range's magnitude: how much a float32 grid's gaps may exceed h."""
    return 2.0 * float(np.spacing(np.float32(max(abs(span[0]), abs(span[1])))))


def point_instances(repo, name: str, count: int, seed: int) -> np.ndarray:
    """Instances inside the declared ranges: real spam7 rows for the trained model, random otherwise,
    and the ranges' corners (values at the ends, where searches are longest)."""
    ranges = ranges_of(repo, name)
    features = [f.name for f in manifest(repo, name).classifier.features]
    low = np.array([ranges[f][0] for f in features])
    high = np.array([ranges[f][1] for f in features])
    rng = np.random.default_rng(seed)
    if name == "classifier":
        data = np.loadtxt(SPAM, delimiter=",", skiprows=1, usecols=range(len(SPAM_FEATURES)), max_rows=400)
        inside = data[np.all((data >= low) & (data <= high), axis=1)]
        rows = inside[rng.choice(len(inside), count - 2, replace=False)]
    else:
        rows = low + rng.random((count - 2, len(features))) * (high - low)
    return np.vstack([rows, low, high]).astype(np.float32).astype(np.float64)


def test_trained_ranges_are_the_training_splits(repo):
    from models.data import split_indices

    data = np.loadtxt(SPAM, delimiter=",", skiprows=1, usecols=range(len(SPAM_FEATURES))).astype(np.float32)
    train = data[split_indices(len(data), 0.15, 0.25, 0)["train"]]
    ranges = ranges_of(repo, "classifier")
    assert list(ranges) == SPAM_FEATURES
    for i, name in enumerate(SPAM_FEATURES):
        assert ranges[name] == (float(train[:, i].min()), float(train[:, i].max()))


@pytest.mark.parametrize("model", MODELS)
def test_recourse_flips_the_decision_and_one_tolerance_before_does_not(server, repo, model):
    rows = point_instances(repo, model, 24, seed=1)
    # the fixtures' untrained weights put most scores on one side of 0.5: decide at their median instead
    options = {} if model == "classifier" else {"threshold": float(np.median(classify(server, model, rows)))}
    answer = explain(server, model=model, instances=rows.tolist(), tolerance=0.002, **options)
    features = answer["features"]
    threshold = answer["threshold"]
    ranges = answer["ranges"]
    flips, nulls, before_rows, checked = [], [], [], []
    for i, item in enumerate(answer["explanations"]):
        decided = item["decision"]
        assert decided == (classify(server, model, rows[i:i + 1])[0] >= threshold)
        proven = [f for f, d in zip(features, answer["directions"]) if d != "free"]
        assert sorted(item["recourse"]) == sorted(proven)
        for name, found in item["recourse"].items():
            f = features.index(name)
            if found is None:  # no value of the range flips it: not even the range's far end
                direction = answer["directions"][f]
                end = ranges[name][1] if (not decided) == (direction == "increasing") else ranges[name][0]
                far = rows[i].copy()
                far[f] = end
                nulls.append((far, decided))
                continue
            tol = found["tolerance"]
            assert tol <= 0.002 * (ranges[name][1] - ranges[name][0]) + float32_ulps(ranges[name])
            assert ranges[name][0] <= found["value"] <= ranges[name][1]
            assert abs(found["value"] - found["before"]) <= tol * (1 + 1e-6)
            step = 1.0 if found["value"] > rows[i, f] else -1.0  # the search moved away from the instance
            applied, before, reported_before = rows[i].copy(), rows[i].copy(), rows[i].copy()
            applied[f] = found["value"]
            before[f] = found["value"] - step * tol  # one tolerance before, toward the instance
            reported_before[f] = found["before"]
            flips.append((applied, decided))
            before_rows += [(before, decided), (reported_before, decided)]
            checked.append(name)
    assert len(checked) >= 10, f"too few recourse answers to check: {len(checked)}"
    for cases, should_flip in ((flips, True), (before_rows, False), (nulls, False)):
        if not cases:
            continue
        scores = classify(server, model, np.array([row for row, _ in cases]))
        for (row, decided), score in zip(cases, scores):
            assert ((score >= threshold) != decided) == should_flip, (model, row.tolist(), score, threshold, decided)


@pytest.mark.parametrize("model", MODELS)
def test_bounds_hold_every_point_of_the_box_and_are_reached_at_its_corners(server, repo, model):
    mf = manifest(repo, model)
    features = [f.name for f in mf.classifier.features]
    directions = [f.direction for f in mf.classifier.features]
    ranges = ranges_of(repo, model)
    rng = np.random.default_rng(7)
    boxes = []
    for case in range(4):
        instance, low, high = {}, [], []
        for name, direction in zip(features, directions):
            lo, hi = ranges[name]
            if direction == "free":  # an interval needs a proven direction: a value
                value = float(np.float32(lo + rng.random() * (hi - lo)))
                instance[name], a, b = value, value, value
            elif case == 3:  # left out: its whole declared range
                a, b = lo, hi
            else:
                a, b = sorted(float(np.float32(v)) for v in lo + rng.random(2) * (hi - lo))
                instance[name] = [a, b]
            low.append(a)
            high.append(b)
        boxes.append((instance, np.array(low), np.array(high)))
    answer = explain(server, model=model, instances=[box for box, _, _ in boxes])
    threshold = answer["threshold"]
    for (_, low, high), item in zip(boxes, answer["explanations"]):
        bounds = item["bounds"]
        points = (low + rng.random((1000, len(features))) * (high - low)).astype(np.float32)
        scores = classify(server, model, points)
        assert scores.min() >= bounds["low"] - 1e-6 and scores.max() <= bounds["high"] + 1e-6
        corners = classify(server, model, np.array([[bounds["low_at"][f] for f in features],
                                                    [bounds["high_at"][f] for f in features]]))
        assert corners[0] == pytest.approx(bounds["low"], abs=1e-6)
        assert corners[1] == pytest.approx(bounds["high"], abs=1e-6)
        for f, name in enumerate(features):  # the corners are corners of the box
            assert {bounds["low_at"][name], bounds["high_at"][name]} <= {float(np.float32(low[f])), float(np.float32(high[f]))}
        certain = bounds["low"] >= threshold or bounds["high"] < threshold
        assert bounds["certain"] == certain
        if certain:  # every point of the box decides alike
            assert len(set((scores >= threshold).tolist())) == 1


def reference_logits(repo, name: str, x: np.ndarray) -> np.ndarray:
    """The model's logit in float64 by torch, from its checkpoint with the folded weights export wrote."""
    import torch

    from export.core import fold_parametrizations
    from models.checkpoint import load_checkpoint

    checkpoint = next((repo.parent).glob(f"{name}.ckpt"))
    model, _ = load_checkpoint(checkpoint)
    model = fold_parametrizations(model).double().eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()[:, 0]


def test_contributions_of_the_additive_model_sum_to_its_logit(server, repo):
    rows = point_instances(repo, "linear", 30, seed=11)
    answer = explain(server, model="linear", instances=rows.tolist())
    assert answer["additive"] == {"additive": True, "reason": None}
    logits = reference_logits(repo, "linear", rows)
    for row, item, logit in zip(rows, answer["explanations"], logits):
        parts = item["contributions"]
        assert sorted(parts["terms"]) == sorted(LINEAR_FEATURES)
        assert parts["bias"] + sum(parts["terms"].values()) == pytest.approx(logit, abs=1e-6)
        assert parts["value"] == pytest.approx(logit, abs=1e-6)
        assert 1.0 / (1.0 + math.exp(-parts["value"])) == pytest.approx(item["score"], abs=1e-6)


@pytest.mark.parametrize("model", ["classifier", "hidden"])
def test_models_with_hidden_layers_say_they_are_not_additive(server, repo, model):
    answer = explain(server, model=model, instances=point_instances(repo, model, 3, seed=2).tolist())
    assert answer["additive"]["additive"] is False
    assert "not additive" in answer["additive"]["reason"] and "node" in answer["additive"]["reason"]
    assert all(item["contributions"] is None for item in answer["explanations"])


def test_curves_follow_the_proven_directions(server, repo):
    answer = explain(server, model="hidden", instances=point_instances(repo, "hidden", 2, seed=4).tolist(), curves=33)
    for item in answer["explanations"]:
        assert sorted(item["curves"]) == sorted(HIDDEN_FEATURES)
        for name, direction in zip(HIDDEN_FEATURES, HIDDEN_DIRECTIONS):
            curve = item["curves"][name]
            assert len(curve["values"]) == len(curve["scores"]) == 33
            steps = np.diff(curve["scores"])
            if direction == "increasing":
                assert np.all(steps >= 0)
            elif direction == "decreasing":
                assert np.all(steps <= 0)
            assert curve["monotone"] == (None if direction == "free" else direction)
            assert curve["scores"] == pytest.approx(classify(server, "hidden", np.array(
                [[v if n == name else item["bounds"]["low_at"][n] for n in HIDDEN_FEATURES] for v in curve["values"]])).tolist(),
                abs=1e-6)


def test_the_oip_extension_answers_as_explain(server, repo):
    rows = point_instances(repo, "hidden", 5, seed=9).astype(np.float32)
    native = explain(server, model="hidden", instances=rows.tolist(), tolerance=0.01)
    response = httpx.post(f"{server}/v2/models/hidden/explain", timeout=60, json={
        "id": "q1", "inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}],
        "parameters": {"tolerance": 0.01}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "hidden" and body["model_version"] == "1" and body["id"] == "q1"
    assert body["explanations"] == native["explanations"]
    assert "explain" in httpx.get(f"{server}/v2").json()["extensions"]


# -- the cost, counted at the engine (in process: the real ONNX Runtime session, wrapped) ---------
@pytest.fixture(scope="module")
def app_client(repo):
    with TestClient(create_app(Settings(repo=repo, device="cpu", poll_interval_s=0, cpu_threads=1,
                                        default_classifier="classifier"))) as client:
        yield client


class Counter:
    def __init__(self, run):
        self.run, self.calls, self.rows = run, 0, 0

    def __call__(self, x):
        self.calls += 1
        self.rows += int(x.shape[0])
        return self.run(x)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("tolerance", [0.25, 0.01, 1e-3, 2 ** -10, 1e-5])
def test_model_calls_stay_within_the_bound(app_client, repo, model, tolerance):
    served = app_client.app.state.service.registry.model(model).latest
    counter = Counter(served.engine.run)
    served.engine.run = counter
    try:
        rows = point_instances(repo, model, 12, seed=5)
        response = app_client.post("/explain", json={"model": model, "instances": rows.tolist(), "tolerance": tolerance})
    finally:
        del served.engine.run
    assert response.status_code == 200, response.text
    answer = response.json()
    proven = [d for d in answer["directions"] if d != "free"]
    for name, span in answer["ranges"].items():
        tol = answer["tolerance"]["absolute"][name]
        assert tol <= tolerance * (span[1] - span[0]) + float32_ulps(span)  # the one asked, or finer (in float32)
    steps = math.ceil(math.log2(1.0 / tolerance + 1.0))
    per_instance = 2 + len(proven) * steps  # = 2 + F * ceil(log2(range / tol)) for the stated tol
    for name, span in answer["ranges"].items():
        assert math.ceil(math.log2((span[1] - span[0]) / answer["tolerance"]["absolute"][name]) - 1e-9) == steps
    assert counter.rows <= len(rows) * per_instance
    assert counter.calls <= 1 + steps  # one batched call for the corners, then one per bisection step
    assert counter.rows == answer["model_calls"]["rows"] and counter.calls == answer["model_calls"]["calls"]
    for item in answer["explanations"]:
        assert item["model_calls"]["rows"] <= per_instance


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, words", [
    ({"model": "hidden", "instances": [{"clicks": 1, "complaints": 0, "visits": 2, "region": [0, 1]}]}, 400,
     ["region", "not proven monotone"]),
    ({"model": "hidden", "instances": [{"clicks": 1, "complaints": 0, "visits": 2}]}, 400, ["region"]),
    ({"model": "hidden", "instances": [{"clicks": 1, "nope": 3}]}, 400, ["unknown feature", "nope"]),
    ({"model": "hidden", "instances": [[1, 2]]}, 400, ["4 features"]),
    ({"model": "hidden", "instances": [[1, 2, 3, float("nan")]]}, 400, ["malformed JSON"]),
    ({"model": "hidden", "instances": [{"clicks": [3, 1]}]}, 400, ["low > high"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 1e39]]}, 400, ["instances[0][3]", "float32"]),  # not inf
    ({"model": "hidden", "instances": [{"clicks": [0, 1e39]}]}, 400, ["instances[0].clicks", "float32"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "ranges": {"clicks": [-1e39, 0]}}, 400, ["ranges.clicks"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "threshold": 1e39}, 400, ["threshold", "float32"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "tolerance": 0}, 400, ["tolerance"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "tolerance": -0.1}, 400, ["tolerance"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "tolerance": 1e-300}, 400, ["tolerance", "1e-06"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "curves": 10**9}, 400, ["curves", "1025"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "tolerance": 0.5}, 400, ["tolerance"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "curves": 1}, 400, ["curves"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "label": "x"}, 400, ["label", "flag"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "ranges": {"zzz": [0, 1]}}, 400, ["ranges", "zzz"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]], "extra": 1}, 400, ["unknown field", "extra"]),
    ({"model": "smoother", "instances": [[1]]}, 400, ["smoother", "/explain"]),
    ({"model": "nope", "instances": [[1]]}, 404, ["nope"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]] * 1001}, 413, ["1000"]),
    ({"model": "hidden", "instances": [[1, 2, 3, 0]] * 300, "curves": 1025}, 413, ["curves", "1000000"]),
])
def test_bad_requests_are_refused_naming_what_is_wrong(app_client, body, status, words):
    import json

    response = app_client.post("/explain", content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message


def test_a_model_without_declared_ranges_needs_values_or_ranges(tmp_path):
    from service_fixtures import fresh_repo

    repo = fresh_repo(tmp_path, ("classifier",))
    with TestClient(create_app(Settings(repo=repo, device="cpu", poll_interval_s=0, cpu_threads=1))) as client:
        left_out = client.post("/explain", json={"model": "classifier", "instances": [{"clicks": 1.0}]})
        assert left_out.status_code == 400 and "no declared range" in left_out.json()["error"]
        given = client.post("/explain", json={"model": "classifier", "instances": [[0.5, 0.1, 0.2, 0.3]],
                                               "ranges": {"clicks": [-2, 2], "complaints": [-2, 2], "visits": [-2, 2]}})
        assert given.status_code == 200, given.text
        item = given.json()["explanations"][0]
        assert set(item["recourse"]) == {"clicks", "complaints", "visits"}  # region is free


def test_explain_follows_the_api_token(repo):
    settings = Settings(repo=repo, device="cpu", poll_interval_s=0, cpu_threads=1, api_token="s3cret")
    with TestClient(create_app(settings)) as client:
        body = {"model": "linear", "instances": [[1, 2, 3]]}
        assert client.post("/explain", json=body).status_code == 401
        assert client.post("/explain", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
