"""`monoserve batch`, local engine: the answers equal /classify's and /smooth's (the service's
in-process app, same engine: bit-equal), the version is proven by the service's prover and a
refused or unsigned one scores nothing, bad rows fail naming file/row/column or are counted, the
output is never half-written (an interrupted run leaves no file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batch import BatchError, BatchJob, run_batch
from batch.errors import BadRowError, VersionRefusedError
from batch.output import read_metadata
from batch_fixtures import (classify, expected_long, long_table, service_client, signal_table, smooth,
                            write_rows)
from monoserve.cli import main as monoserve_main
from service.repository.prover import prove_version
from service_fixtures import (CLASSIFIER_FEATURES, MULTILABEL_FEATURES, MULTILABEL_LABELS, copy_version,
                              edit_initializer, fresh_repo, onnx_name, reseal)
from test_signing import make_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("batch"))


@pytest.fixture(scope="module")
def client(repo):
    with service_client(repo) as test_client:
        yield test_client


def job(repo, source, output, **options) -> BatchJob:
    return BatchJob(repo=repo, input=source, output=output, threads=1, **options)


# -- answers equal the endpoints' -------------------------------------------------------------
def test_classifier_rows_equal_classify(tmp_path, repo, client):
    source = write_rows(tmp_path / "in", files=2, rows=90)
    out = tmp_path / "scored.parquet"
    summary = run_batch(job(repo, source, out, model="classifier", keep=["uid", "note"], batch_rows=40))
    assert (summary.rows_in, summary.rows_out, summary.bad_rows) == (180, 180, 0)
    table = pq.read_table(out)
    assert table.column_names == [*CLASSIFIER_FEATURES, "uid", "note", "score", "decision"]
    rows = np.stack([table.column(name).to_numpy() for name in CLASSIFIER_FEATURES], axis=1)
    scores, decisions = classify(client, "classifier", rows)
    assert table.column("score").type == pa.float32()
    np.testing.assert_array_equal(table.column("score").to_numpy(), scores)  # bit-equal
    assert table.column("decision").to_pylist() == decisions
    inputs = pa.concat_tables([pq.read_table(p) for p in sorted(source.glob("*.parquet"))])
    assert table.column("uid").to_pylist() == inputs.column("uid").to_pylist()  # order and ids kept
    meta = read_metadata(out)
    assert (meta["model"], meta["version"], meta["proof"]) == ("classifier", 1, "passed")
    assert meta["artifact_digest"] == prove_version(repo / "classifier" / "1")[1].artifact_digest
    assert meta["steps"]["certificate"] == "ok" and meta["signature"] == {"status": "unsigned"}


def test_multilabel_csv_glob_to_csv_with_sidecar(tmp_path, repo, client):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(2):
        from batch_fixtures import feature_table

        pacsv.write_csv(feature_table(25, index + 7, MULTILABEL_FEATURES), folder / f"day-{index}.csv")
    out = tmp_path / "scored.csv"
    run_batch(job(repo, str(folder / "day-*.csv"), out, model="multilabel", keep=["uid"]))
    table = pacsv.read_csv(out)
    assert table.column_names == [*MULTILABEL_FEATURES, "uid", *[f"score_{label}" for label in MULTILABEL_LABELS],
                                  "decision"]
    rows = np.stack([table.column(name).to_numpy() for name in MULTILABEL_FEATURES], axis=1)
    scores, decisions = classify(client, "multilabel", rows)
    for j, label in enumerate(MULTILABEL_LABELS):  # CSV holds the shortest text that reads back as the float32
        np.testing.assert_array_equal(table.column(f"score_{label}").to_numpy().astype(np.float32), scores[:, j])
    assert json.loads(Path(str(out) + ".monoserve.json").read_text())["model"] == "multilabel"
    assert read_metadata(out)["rows_out"] == 50
    assert [json.loads(text) for text in table.column("decision").to_pylist()] == decisions


@pytest.mark.parametrize("mode", [None, "valid", "causal"])
def test_signal_per_row_equals_smooth(tmp_path, repo, client, mode):
    lengths = [64, 64, 64, 9, 200, 200, 64]
    source = tmp_path / "signals.parquet"
    pq.write_table(signal_table(lengths), source)
    out = tmp_path / "smoothed.parquet"
    run_batch(job(repo, source, out, model="smoother", column="signal", keep=["sid"], mode=mode, batch_rows=5))
    table = pq.read_table(out)
    assert table.column_names == ["sid", "smoothed"]
    signals = signal_table(lengths).column("signal").to_pylist()
    for row, answer in enumerate(table.column("smoothed").to_pylist()):
        expected = smooth(client, np.asarray(signals[row], np.float32), mode)
        np.testing.assert_array_equal(np.asarray(answer, np.float32), expected)
    assert read_metadata(out)["mode"] == (mode or "same")


@pytest.mark.parametrize("mode", [None, "valid"])
def test_long_format_equals_smooth_of_each_sorted_series(tmp_path, repo, client, mode):
    data = long_table(series=5, length=40)
    folder = tmp_path / "long"
    folder.mkdir()
    pq.write_table(data.slice(0, 120), folder / "a.parquet")  # every id spread over both files
    pq.write_table(data.slice(120), folder / "b.parquet")
    out = tmp_path / "smoothed.parquet"
    summary = run_batch(job(repo, folder, out, model="smoother", id="sensor", time="ts", value="reading",
                            keep=["site"], mode=mode, batch_rows=30))
    table = pq.read_table(out)
    assert table.column_names == ["sensor", "ts", "reading", "site", "smoothed"]
    expected = expected_long(client, data, mode)
    got = {(s, t): v for s, t, v in zip(*(table.column(c).to_pylist() for c in ("sensor", "ts", "smoothed")))}
    assert set(got) == set(expected) and summary.rows_out == len(expected)
    assert all(np.float32(got[key]) == expected[key] for key in expected)  # bit-equal


# -- bad rows ---------------------------------------------------------------------------------
def bad_csv(path: Path) -> Path:
    path.write_text("clicks,complaints,visits,region,uid\n"
                    "1,2,3,4,10\n"
                    "1,oops,3,4,11\n"
                    "1,2,,4,12\n"
                    "nan,2,3,4,13\n"
                    "1e39,2,3,4,14\n"
                    "0.5,2,3,4,15\n")
    return path


def test_bad_rows_fail_naming_file_row_and_column(tmp_path, repo):
    source = bad_csv(tmp_path / "bad.csv")
    out = tmp_path / "out.parquet"
    with pytest.raises(BadRowError, match=r"bad\.csv, data row 1 \(0-based\): column 'complaints': not a number: 'oops'"):
        run_batch(job(repo, source, out, model="classifier"))
    assert not out.exists() and not list(tmp_path.glob(".out.parquet*"))


def test_bad_rows_skip_and_null_are_counted(tmp_path, repo, client):
    source = bad_csv(tmp_path / "bad.csv")
    skipped = run_batch(job(repo, source, tmp_path / "skip.parquet", model="classifier", keep=["uid"], on_bad_rows="skip"))
    assert (skipped.rows_in, skipped.rows_out, skipped.bad_rows) == (6, 2, 4)
    table = pq.read_table(tmp_path / "skip.parquet")
    assert table.column("uid").to_pylist() == [10, 15]
    scores, _ = classify(client, "classifier", np.array([[1, 2, 3, 4], [0.5, 2, 3, 4]]))
    np.testing.assert_array_equal(table.column("score").to_numpy(), scores)
    nulled = run_batch(job(repo, source, tmp_path / "null.parquet", model="classifier", keep=["uid"], on_bad_rows="null"))
    assert (nulled.rows_out, nulled.bad_rows) == (6, 4)
    table = pq.read_table(tmp_path / "null.parquet")
    assert table.column("score").null_count == 4 and table.column("decision").null_count == 4
    assert table.column("score").to_pylist()[5] == pytest.approx(float(scores[1]))
    assert read_metadata(tmp_path / "null.parquet")["bad_rows"] == 4


def test_bad_samples_in_long_and_list_layouts(tmp_path, repo):
    data = long_table(series=2, length=20)
    reading = data.column("reading").to_numpy().copy()
    reading[3] = np.nan
    source = tmp_path / "long.parquet"
    pq.write_table(data.set_column(2, "reading", pa.array(reading)), source)
    with pytest.raises(BadRowError, match=r"long\.parquet, data row \d+ .*column 'reading': not a finite float32"):
        run_batch(job(repo, source, tmp_path / "o.parquet", model="smoother", id="sensor", time="ts", value="reading"))
    summary = run_batch(job(repo, source, tmp_path / "o.parquet", model="smoother", id="sensor", time="ts",
                            value="reading", on_bad_rows="skip"))
    assert (summary.rows_out, summary.bad_rows) == (39, 1)
    signals = pa.table({"signal": pa.array([[1.0, 2.0, float("inf")], [1.0, 2.0], None], type=pa.list_(pa.float64()))})
    pq.write_table(signals, tmp_path / "sig.parquet")
    with pytest.raises(BadRowError, match=r"data row 0 .*column 'signal': sample 2: not a finite float32: inf"):
        run_batch(job(repo, tmp_path / "sig.parquet", tmp_path / "s.parquet", model="smoother", column="signal"))
    summary = run_batch(job(repo, tmp_path / "sig.parquet", tmp_path / "s.parquet", model="smoother", column="signal",
                            on_bad_rows="null"))
    assert summary.bad_rows == 2 and pq.read_table(tmp_path / "s.parquet").column("smoothed").null_count == 2


def test_clear_errors_for_wrong_options(tmp_path, repo):
    source = write_rows(tmp_path / "in", files=1, rows=5)
    out = tmp_path / "o.parquet"
    with pytest.raises(BatchError, match="name the list column"):
        run_batch(job(repo, source, out, model="smoother"))
    with pytest.raises(BatchError, match=r"no column\(s\) \['nope'\]"):
        run_batch(job(repo, source, out, model="classifier", keep=["nope"]))
    with pytest.raises(BatchError, match="no such file, folder or matching glob"):
        run_batch(job(repo, tmp_path / "missing", out, model="classifier"))
    with pytest.raises(BatchError, match="--mode is a smoother's option"):
        run_batch(job(repo, source, out, model="classifier", mode="same"))
    assert not out.exists()


# -- proof and trust --------------------------------------------------------------------------
def tampered_repo(tmp_path: Path) -> Path:
    """classifier/1 valid; smoother/2 a copy of 1 whose kernel is made negative and resealed (the
    checksums match; only the service's policy and certificate catch it)."""
    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    bad = copy_version(repo, "smoother", 1, 2)
    edit_initializer(bad, onnx_name(bad, "kernel"), lambda kernel: -kernel)
    reseal(bad)
    return repo


def test_refused_version_scores_nothing(tmp_path):
    repo = tampered_repo(tmp_path)
    source = tmp_path / "sig.parquet"
    pq.write_table(signal_table([32, 32]), source)
    out = tmp_path / "o.parquet"
    with pytest.raises(VersionRefusedError, match=r"smoother version 2 was refused by the service's proof: constraints"):
        run_batch(job(repo, source, out, model="smoother", version=2, column="signal"))
    assert not out.exists()
    # no --version: the newest version that passes, as the service serves it
    run_batch(job(repo, source, out, model="smoother", column="signal"))
    assert read_metadata(out)["version"] == 1


def test_with_trusted_keys_an_unsigned_version_is_refused_and_a_signed_one_scores(tmp_path, monkeypatch):
    from contract.signing import sign_version

    repo = fresh_repo(tmp_path, models=("classifier",))
    private, public = make_key(tmp_path, "ours")
    source = write_rows(tmp_path / "in", files=1, rows=10)
    out = tmp_path / "o.parquet"
    with pytest.raises(VersionRefusedError, match="unsigned"):
        run_batch(job(repo, source, out, model="classifier", trusted_keys=[str(public)]))
    monkeypatch.setenv("MONOSERVE_TRUSTED_KEYS", str(public))  # the service's setting works too
    with pytest.raises(VersionRefusedError, match="unsigned"):
        run_batch(job(repo, source, out, model="classifier"))
    assert not out.exists()
    sign_version(repo / "classifier" / "1", private)
    run_batch(job(repo, source, out, model="classifier"))
    assert read_metadata(out)["signature"]["status"] == "verified"


# -- the command ------------------------------------------------------------------------------
def test_cli_exit_codes_and_output(tmp_path, repo, capsys):
    source = write_rows(tmp_path / "in", files=1, rows=12)
    out = tmp_path / "o.parquet"
    code = monoserve_main(["batch", "--repo", str(repo), "--model", "classifier", "--input", str(source),
                           "--output", str(out), "--keep", "uid", "--threads", "1"])
    assert code == 0 and "12 rows in, 12 out, 0 bad" in capsys.readouterr().out
    assert pq.read_table(out).num_rows == 12
    code = monoserve_main(["batch", "--repo", str(repo), "--model", "nope", "--input", str(source),
                           "--output", str(tmp_path / "x.parquet")])
    assert code == 1 and "no model 'nope'" in capsys.readouterr().err
    code = monoserve_main(["batch", "--repo", str(repo), "--model", "classifier", "--input", str(source),
                           "--output", str(tmp_path / "x.json")])
    assert code == 2 and "name a .parquet or .csv file" in capsys.readouterr().err


def test_interrupted_run_leaves_no_output(tmp_path, repo):
    """SIGTERM in the middle of a run: no output file, and the temporary file is gone too."""
    rng = np.random.default_rng(0)
    rows = 600_000
    pq.write_table(pa.table({name: rng.normal(size=rows) for name in CLASSIFIER_FEATURES}), tmp_path / "big.parquet",
                   row_group_size=20_000)
    out = tmp_path / "scored.parquet"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "monoserve.cli", "batch", "--repo", str(repo), "--model", "classifier", "--input",
         str(tmp_path / "big.parquet"), "--output", str(out), "--batch-rows", "2000", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".scored.parquet.tmp-*")):  # rows are being written
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted; nothing was written" in err
    assert not out.exists() and not list(tmp_path.glob(".scored.parquet*"))
