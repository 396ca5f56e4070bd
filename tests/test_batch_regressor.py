"""`monoserve batch` on a regressor (issue 28 over issue 25's kind): a scikit-learn
HistGradientBoostingRegressor trained with monotonic_cst, converted by skl2onnx with its defaults
and imported with only a declaration, scored by the local engine equal to POST /score (the
service's in-process app, the same engine: bit-equal) and to the library's own predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import BatchJob, run_batch
from batch.output import read_metadata
from batch_fixtures import service_client
from export.byom import import_onnx

FEATURES = ["income", "debt", "age"]


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    import onnx
    from skl2onnx import to_onnx
    from sklearn.ensemble import HistGradientBoostingRegressor

    work = tmp_path_factory.mktemp("batch-regressor")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 3)).astype(np.float32)
    target = x[:, 0] - x[:, 1] + np.sin(3 * x[:, 2]) + 0.3 * rng.standard_normal(400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HistGradientBoostingRegressor(max_iter=20, monotonic_cst=[1, -1, 0]).fit(x, target)
        onnx.save(to_onnx(model, x[:1]), work / "hgb.onnx")
    repo = work / "repo"
    import_onnx(work / "hgb.onnx", repo, "prices", {"kind": "regressor", "features": FEATURES,
                                                   "monotone": {"income": 1, "debt": -1}})
    return repo, model


def test_regressor_rows_equal_score_and_the_library(tmp_path, regressor):
    repo, model = regressor
    rng = np.random.default_rng(9)
    rows = rng.standard_normal((150, 3)).astype(np.float32)
    table = pa.table({**{name: rows[:, i] for i, name in enumerate(FEATURES)}, "uid": np.arange(150)})
    source = tmp_path / "rows.parquet"
    pq.write_table(table, source)
    out = tmp_path / "scored.parquet"
    summary = run_batch(BatchJob(repo=repo, input=source, output=out, model="prices", keep=["uid"], threads=1,
                                 batch_rows=64))
    assert (summary.rows_in, summary.rows_out, summary.bad_rows) == (150, 150, 0)
    scored = pq.read_table(out)
    assert scored.column("uid").to_pylist() == list(range(150))
    # a regressor has no threshold: one score a row, named as /score names it, and no decision
    assert scored.column_names == [*FEATURES, "uid", "scores"]
    batch_scores = scored.column("scores").to_numpy()
    with service_client(repo) as client:
        answer = client.post("/score", json={"model": "prices", "instances": rows.tolist()})
    assert answer.status_code == 200, answer.text
    served = np.asarray(answer.json()["scores"], dtype=np.float32)
    np.testing.assert_array_equal(batch_scores.astype(np.float32), served)  # same engine: bit-equal
    np.testing.assert_allclose(batch_scores, model.predict(rows), atol=1e-5)
    meta = read_metadata(out)
    assert (meta["model"], meta["version"], meta["proof"]) == ("prices", 1, "passed")
