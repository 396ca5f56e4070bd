"""`monoserve batch --engine ray` on a two-node ray.cluster_utils.Cluster (one per module): the
run reaches the cluster by address, its answers equal /classify's and /smooth's, and an actor on
each node proves the version itself (and refuses an unsigned one under trusted keys)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")  # the `ray` extra, part of `dev`

from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from batch import BatchJob, run_batch  # noqa: E402
from batch.output import read_metadata  # noqa: E402
from batch.ray_engine import RowCounter, ScoringActor  # noqa: E402
from batch_fixtures import classify, expected_long, long_table, service_client, write_rows  # noqa: E402
from service_fixtures import CLASSIFIER_FEATURES, fresh_repo  # noqa: E402
from test_signing import make_key  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    nodes.add_node(num_cpus=2)
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("batch-cluster"), models=("smoother", "classifier"))


def test_two_node_run_by_address_equals_the_endpoints(cluster, tmp_path, repo):
    source = write_rows(tmp_path / "in", files=3, rows=40)
    out = tmp_path / "scored"
    summary = run_batch(BatchJob(repo=repo, model="classifier", input=source, output=out, engine="ray",
                                 ray_address=cluster.address, keep=["uid"], batch_rows=20, threads=1))
    assert ray.is_initialized() and len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert summary.rows_out == 120 and read_metadata(out)["actors"] == 3  # 4 CPUs: 3 actors, 1 CPU to read
    data = long_table(series=3, length=25)
    pq.write_table(data, tmp_path / "long.parquet")
    run_batch(BatchJob(repo=repo, model="smoother", input=tmp_path / "long.parquet", output=tmp_path / "long",
                       engine="ray", id="sensor", time="ts", value="reading", threads=1))
    table = pq.read_table(out).sort_by("uid")
    rows = np.stack([table.column(name).to_numpy() for name in CLASSIFIER_FEATURES], axis=1)
    with service_client(repo) as client:
        scores, decisions = classify(client, "classifier", rows)
        expected = expected_long(client, data)
    np.testing.assert_array_equal(table.column("score").to_numpy(), scores)
    assert table.column("decision").to_pylist() == decisions
    smoothed = pq.read_table(tmp_path / "long")
    got = {(s, t): v for s, t, v in zip(*(smoothed.column(c).to_pylist() for c in ("sensor", "ts", "smoothed")))}
    assert set(got) == set(expected) and all(np.float32(got[key]) == expected[key] for key in expected)


def test_an_actor_on_every_node_refuses_an_unsigned_version(cluster, tmp_path, repo):
    _, public = make_key(tmp_path, "ours")
    job = BatchJob(repo=repo, model="classifier", input=tmp_path, output=tmp_path / "o", engine="ray",
                   trusted_keys=[str(public)])
    counter = ray.remote(num_cpus=0)(RowCounter).remote()
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    assert len(nodes) == 2
    for node in nodes:
        actor = ray.remote(num_cpus=0)(ScoringActor).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(job, 1, "0" * 32, counter, {})
        with pytest.raises(Exception, match="VersionRefusedError.*unsigned"):
            ray.get(actor.__ray_ready__.remote())
