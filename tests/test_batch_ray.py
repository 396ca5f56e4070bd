"""`monoserve batch --engine ray` on a real local Ray cluster (ray.init(num_cpus=2), one per
module): answers equal /classify's and /smooth's for the same rows, bad rows name their file,
every actor proves the version itself and refuses an unsigned or changed one."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")  # the `ray` extra, part of `dev`

from batch import BatchJob, run_batch  # noqa: E402
from batch.errors import BadRowError, VersionRefusedError  # noqa: E402
from batch.output import read_metadata  # noqa: E402
from batch.ray_engine import RowCounter, ScoringActor  # noqa: E402
from batch_fixtures import classify, expected_long, long_table, service_client, signal_table, smooth, write_rows  # noqa: E402
from service_fixtures import CLASSIFIER_FEATURES, fresh_repo  # noqa: E402
from test_signing import make_key  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("batch-ray"))


@pytest.fixture(scope="module")
def client(repo):
    with service_client(repo) as test_client:
        yield test_client


def ray_job(repo, source, output, **options) -> BatchJob:
    return BatchJob(repo=repo, input=source, output=output, engine="ray", threads=1, **options)


def test_classifier_equals_classify(cluster, tmp_path, repo, client):
    source = write_rows(tmp_path / "in", files=2, rows=60)
    out = tmp_path / "scored"
    summary = run_batch(ray_job(repo, source, out, model="classifier", keep=["uid"], batch_rows=25))
    assert (summary.rows_in, summary.rows_out, summary.bad_rows) == (120, 120, 0)
    table = pq.read_table(out).sort_by("uid")
    rows = np.stack([table.column(name).to_numpy() for name in CLASSIFIER_FEATURES], axis=1)
    scores, decisions = classify(client, "classifier", rows)
    np.testing.assert_array_equal(table.column("score").to_numpy(), scores)  # bit-equal
    assert table.column("decision").to_pylist() == decisions
    meta = read_metadata(out)
    assert (meta["model"], meta["proof"], meta["engine"], meta["rows_out"]) == ("classifier", "passed", "ray", 120)
    part = next(out.glob("*.parquet"))
    assert b"monoserve" in pq.read_schema(part).metadata  # each Parquet file names the version too


def test_both_smoother_layouts_equal_smooth(cluster, tmp_path, repo, client):
    lengths = [48, 48, 30, 48]
    pq.write_table(signal_table(lengths), tmp_path / "signals.parquet")
    run_batch(ray_job(repo, tmp_path / "signals.parquet", tmp_path / "rows", model="smoother", column="signal",
                      keep=["sid"], mode="causal"))
    table = pq.read_table(tmp_path / "rows").sort_by("sid")
    signals = signal_table(lengths).column("signal").to_pylist()
    for sid, answer in zip(table.column("sid").to_pylist(), table.column("smoothed").to_pylist()):
        np.testing.assert_array_equal(np.asarray(answer, np.float32),
                                      smooth(client, np.asarray(signals[sid], np.float32), "causal"))
    data = long_table(series=4, length=30)
    pq.write_table(data, tmp_path / "long.parquet")
    run_batch(ray_job(repo, tmp_path / "long.parquet", tmp_path / "long", model="smoother", id="sensor", time="ts",
                      value="reading"))
    table = pq.read_table(tmp_path / "long")
    expected = expected_long(client, data)
    got = {(s, t): v for s, t, v in zip(*(table.column(c).to_pylist() for c in ("sensor", "ts", "smoothed")))}
    assert set(got) == set(expected)
    assert all(np.float32(got[key]) == expected[key] for key in expected)


def test_bad_row_fails_the_run_naming_its_file(cluster, tmp_path, repo):
    (tmp_path / "bad.csv").write_text("clicks,complaints,visits,region\n1,2,3,4\n1,2,x,4\n")
    out = tmp_path / "out"
    with pytest.raises(BadRowError, match=r"bad\.csv: column 'visits': not a number: 'x'"):
        run_batch(ray_job(repo, tmp_path / "bad.csv", out, model="classifier"))
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_every_actor_proves_the_version_itself(cluster, tmp_path):
    """The actor class refuses an unsigned version under trusted keys and an artifact other than the
    driver's, before it scores a row (the driver's own refusal is test_batch's)."""
    repo = fresh_repo(tmp_path, models=("classifier",))
    _, public = make_key(tmp_path, "ours")
    counter = ray.remote(num_cpus=0)(RowCounter).remote()
    actor_class = ray.remote(num_cpus=0)(ScoringActor)
    base = dict(repo=repo, model="classifier", input=tmp_path, output=tmp_path / "o", engine="ray")
    unsigned = actor_class.remote(BatchJob(**base, trusted_keys=[str(public)]), 1, "0" * 32, counter, {})
    with pytest.raises(Exception, match="VersionRefusedError.*unsigned"):
        ray.get(unsigned.__ray_ready__.remote())
    other = actor_class.remote(BatchJob(**base), 1, "0" * 32, counter, {})
    with pytest.raises(Exception, match="VersionRefusedError.*artifact digest"):
        ray.get(other.__ray_ready__.remote())
    with pytest.raises(VersionRefusedError, match="unsigned"):  # and the run: refused, nothing written
        run_batch(BatchJob(**{**base, "input": write_rows(tmp_path / "in", files=1, rows=3)}, trusted_keys=[str(public)]))
    assert not (tmp_path / "o").exists()
