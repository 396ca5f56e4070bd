"""Hostile publisher, round three: nothing outside a model file is ever read, and no file can make
import, export, verify or serve allocate without bound (issue 24, docs/threat-model.md).

The exfiltration case: an ONNX smoother whose kernel is computed from a Constant whose data is
external, pointing at a file of the working directory (a private key, in the issue). Its kernel
CumSum(bytes + 1) / sum is positive, non-decreasing and normalized, so without the check the proof
passes and the file's bytes are published. It is refused at import, by the export's proof, by
`monoserve verify` and by a serving process, and the canary file's access time shows it is never
read (a positive control first shows that ONNX Runtime, unsealed, does read it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from contract.files import sha256_file
from contract.graph import GraphRefused, IoSpec, check_graph
from contract.manifest import Manifest
from contract.tensors import seal_external_data, tensor_problems
from export.byom import ModelRefusedError, import_onnx
from export.finalize import prove_staged
from export.errors import ProofRefusedError
from hostile_onnx import (
    CANARY_BYTES,
    carrier_models,
    constant_of_shape_bomb_smoother,
    dims_bomb_classifier,
    exfiltrating_smoother,
    save,
    subgraph_bomb_smoother,
)
from service.repository.prover import prove_version
from service_fixtures import fresh_repo
from test_service_e2e import running_server

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER_SPEC = {"kind": "classifier", "features": ["a", "b"], "labels": ["y"], "output": "probabilities",
                   "monotone": "final"}
SMOOTHER_SPEC = {"kind": "smoother", "mode": "valid", "normalized": True}
KERNEL_BYTES = 12  # the canary bytes the hostile kernel reads (shorter than every probe signal)
LONG_AGO = time.time() - 3 * 86400


class Canary:
    """A file in the working directory whose reads show in its access time: set 3 days back, any
    read moves it (relatime updates an access time older than a day)."""

    def __init__(self, folder: Path, name: str = "signing.key"):
        self.path = folder / name
        self.path.write_bytes(CANARY_BYTES)
        self.reset()

    def reset(self) -> None:
        os.utime(self.path, (LONG_AGO, LONG_AGO))

    @property
    def read(self) -> bool:
        return os.stat(self.path).st_atime > LONG_AGO + 3600


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the importer's working directory, where the canary lies
    return tmp_path


def test_unsealed_onnx_runtime_reads_the_canary_which_the_sealed_session_cannot(workdir):
    """The positive control: the attack works against a plain session (so the canary check below
    can see a read), and not against one sealed by contract.tensors.seal_external_data."""
    canary = Canary(workdir)
    data = exfiltrating_smoother(canary.path.name, KERNEL_BYTES).SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    answer = session.run(None, {"signal": np.eye(1, 40, 20, dtype=np.float32).reshape(1, 1, 40)})[0]
    kernel = answer.reshape(-1)[20 - KERNEL_BYTES + 1:21][::-1]
    expected = np.cumsum(np.frombuffer(CANARY_BYTES[:KERNEL_BYTES], np.uint8) + 1.0)
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-5)  # the key's bytes, published
    assert canary.read
    canary.reset()
    with pytest.raises(Exception, match="[Ee]xternal data"):
        ort.InferenceSession(data, sess_options=seal_external_data(ort.SessionOptions()),
                             providers=["CPUExecutionProvider"])
    assert not canary.read


@pytest.mark.parametrize("carrier", sorted(carrier_models("signing.key")))
def test_external_data_is_refused_wherever_a_tensor_can_carry_it(workdir, carrier):
    canary = Canary(workdir)
    model = carrier_models(canary.path.name)[carrier]
    problems = tensor_problems(model, "model.onnx")
    assert problems and "external data" in problems[0] and "'signing.key'" in problems[0], problems
    with pytest.raises(GraphRefused, match="external data"):
        check_graph(model, [IoSpec("features", "float32", ["batch", 2])], [IoSpec("scores", "float32", ["batch", 1])])
    path = save(model, workdir / "hostile.onnx")
    with pytest.raises(ModelRefusedError, match="external data") as refused:
        import_onnx(path, workdir / "repo", "hostile", CLASSIFIER_SPEC)
    assert "nothing was published" in str(refused.value)
    assert not (workdir / "repo" / "hostile").exists() or not any((workdir / "repo" / "hostile").iterdir())
    assert not canary.read


def _hostile_version(repo: Path, location: str) -> Path:
    """smoother/2: smoother/1's files with the exfiltrating graph as model.onnx, resealed (checksums
    rewritten) without running it, as a hostile publisher would publish it."""
    version = repo / "smoother" / "2"
    shutil.copytree(repo / "smoother" / "1", version)
    save(exfiltrating_smoother(location, KERNEL_BYTES), version / "model.onnx")
    data = json.loads((version / "manifest.json").read_text())
    data["version"] = 2
    for entry in data["files"]:
        entry["sha256"], entry["size"] = sha256_file(version / entry["path"]), (version / entry["path"]).stat().st_size
    (version / "manifest.json").write_text(json.dumps(data))
    Manifest.read(version)  # still a valid manifest: only the graph is hostile
    return version


def test_the_exfiltration_is_refused_at_import_export_verify_and_serve_and_the_canary_is_never_read(workdir):
    canary = Canary(workdir)
    # import, from the canary's folder
    path = save(exfiltrating_smoother(canary.path.name, KERNEL_BYTES), workdir / "smoother.onnx")
    with pytest.raises(ModelRefusedError, match="external data"):
        import_onnx(path, workdir / "published", "smoother", SMOOTHER_SPEC)
    assert not (workdir / "published" / "smoother").exists() or not any((workdir / "published" / "smoother").iterdir())
    result = subprocess.run([sys.executable, "-m", "monoserve.cli", "import", str(path), "--spec", str(_spec(workdir)),
                             "--repo", str(workdir / "published"), "--name", "smoother"],
                            capture_output=True, text=True, cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            timeout=300)
    assert result.returncode == 1, result.stderr
    assert "external data" in result.stderr and "Traceback" not in result.stderr
    assert not canary.read
    # the export's proof of a staged version (what every export runs before publishing)
    repo = fresh_repo(workdir / "served", models=("smoother",))
    version = _hostile_version(repo, canary.path.name)
    with pytest.raises(ProofRefusedError, match="external data"):
        prove_staged(version, repo, ["onnx"], allow_unconstrained=False)
    report, proven = prove_version(version)
    assert proven is None and report.failed_step.step == "graph" and "external data" in report.reason
    # monoserve verify
    result = subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", str(version)], capture_output=True,
                            text=True, cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 1 and "external data" in result.stdout + result.stderr
    assert not canary.read
    # a serving process started in the canary's folder: version 2 refused, version 1 serves
    with running_server(repo, "--workers", "1", env={"MONOSERVE_POLL_INTERVAL_S": "0"}) as server:
        detail = httpx.get(f"{server.base}/models/smoother", timeout=10).json()
        states = {item["version"]: item for item in detail["versions"]}
        assert states[2]["state"] == "refused" and "external data" in states[2]["report"]["reason"]
        assert detail["serving_version"] == 1
        answer = httpx.post(f"{server.base}/smooth", json={"signal": [[0.0] * 20 + [1.0] + [0.0] * 20]}, timeout=10)
        assert answer.status_code == 200 and answer.json()["version"] == 1
        metrics = httpx.get(f"{server.base}/metrics", timeout=10).text
        assert 'monoserve_load_refusals_total{model="smoother",step="graph"} 1.0' in metrics
    assert not canary.read


def _spec(folder: Path, kind: str = "smoother") -> Path:
    path = folder / f"{kind}.toml"
    path.write_text('kind = "smoother"\nmode = "valid"\nnormalized = true\n' if kind == "smoother" else
                    'kind = "classifier"\nfeatures = ["a", "b"]\nlabels = ["y"]\noutput = "probabilities"\n'
                    'monotone = "final"\n')
    return path


def test_a_tensor_declaring_more_bytes_than_it_holds_is_refused_by_name(workdir):
    model = dims_bomb_classifier()
    problems = tensor_problems(model, "model.onnx", max_tensor_bytes=256 * 2**20)
    assert len(problems) == 1 and "initializer 'W'" in problems[0] and "1073741824 bytes" in problems[0]
    assert "over the" in problems[0]
    problems = tensor_problems(model, "model.onnx", max_tensor_bytes=2**31)
    assert "holds 4" in problems[0]  # under a larger cap: its 4 bytes do not fill its dims
    with pytest.raises(GraphRefused, match="initializer 'W'"):
        check_graph(model, [IoSpec("features", "float32", ["batch", 2])], [IoSpec("scores", "float32", ["batch", 1])])


# -- bombs: bounded before anything is allocated ------------------------------------------------
RSS_LIMIT_MIB = 500  # the bound on peak RSS for every bomb (a memory bound, not a timing)
# The service's default memory target outside a container (its in-flight budget is half): set
# explicitly so a runner's cgroup limit cannot raise the budget above the bombs' gigabyte.
BOUNDED_ENV = {"MONOSERVE_MEMORY_LIMIT_BYTES": str(1536 * 2**20)}


# The child reports its own peak (VmHWM of its address space, at exit): the rusage of a child
# started by a large parent (pytest with torch loaded) includes the parent's pages from before exec.
_PEAK_WRAPPER = """
import atexit, runpy, sys
peak_file = sys.argv[1]
def report():
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:")).split()[1]
    with open(peak_file, "w") as out:
        out.write(peak)
atexit.register(report)
sys.argv = ["monoserve"] + sys.argv[2:]
runpy.run_module("monoserve.cli", run_name="__main__")
"""


def run_measured(arguments: list[str], cwd: Path) -> tuple[int, str, float]:
    """(exit code, output, peak RSS in MiB) of `monoserve ARGUMENTS` run as a child process."""
    stamp = time.monotonic_ns()
    log, peak = cwd / f"output-{stamp}.txt", cwd / f"peak-{stamp}.txt"
    with open(log, "w") as handle:
        result = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, str(peak), *arguments], stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **BOUNDED_ENV}, timeout=600)
    return result.returncode, log.read_text(), int(peak.read_text()) / 1024


@pytest.mark.parametrize("case", ["1 GiB dims, 4 bytes on disk", "ConstantOfShape of 1 GiB",
                                  "ConstantOfShape of 1 GiB in an If branch"])
def test_import_refuses_the_bombs_without_a_traceback_and_under_500_mb(workdir, case):
    if case.startswith("1 GiB dims"):
        path, spec = save(dims_bomb_classifier(), workdir / "bomb.onnx"), _spec(workdir, "classifier")
        fragment = "initializer 'W' declares 1073741824 bytes"
    elif case.endswith("If branch"):  # the top graph's shapes are small: it once peaked at 1.4 GB and published
        path, spec = save(subgraph_bomb_smoother(), workdir / "bomb.onnx"), _spec(workdir)
        fragment = "node #0 If has a subgraph: its memory cannot be bounded before running it"
    else:
        path, spec = save(constant_of_shape_bomb_smoother(), workdir / "bomb.onnx"), _spec(workdir)
        fragment = "ConstantOfShape would allocate 1073741824 bytes"
    assert path.stat().st_size < 1024  # a tiny file
    code, output, rss = run_measured(["import", str(path), "--spec", str(spec),
                                      "--repo", str(workdir / "repo"), "--name", "bomb"], workdir)
    assert code == 1, output
    assert fragment in output and "Traceback" not in output, output
    assert rss < RSS_LIMIT_MIB, f"peak RSS {rss:.0f} MiB"
    assert not (workdir / "repo" / "bomb").exists() or not any((workdir / "repo" / "bomb").iterdir())


def _classifier_with_constant_of_shape_bomb(model: onnx.ModelProto) -> None:
    """scores + Slice(ConstantOfShape([1, 2**28]))[:, :1]: 1 GiB if the proof folded it."""
    from onnx import helper, numpy_helper

    graph = model.graph
    output = graph.output[0].name
    producer = next(node for node in graph.node if output in node.output)
    producer.output[list(producer.output).index(output)] = "pre_bomb"
    graph.initializer.extend([numpy_helper.from_array(np.array([1, 2**28], np.int64), "bomb_shape"),
                              numpy_helper.from_array(np.array([0], np.int64), "bomb_start"),
                              numpy_helper.from_array(np.array([1], np.int64), "bomb_stop"),
                              numpy_helper.from_array(np.array([1], np.int64), "bomb_axis")])
    graph.node.extend([
        helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"], value=helper.make_tensor("v", 1, [1], [0.0])),
        helper.make_node("Slice", ["bomb", "bomb_start", "bomb_stop", "bomb_axis"], ["bomb_cut"]),
        helper.make_node("Add", ["pre_bomb", "bomb_cut"], [output]),
    ])


def test_verify_refuses_a_constant_of_shape_bomb_before_folding_it_under_500_mb(workdir):
    from service_fixtures import edit_onnx, reseal

    repo = fresh_repo(workdir / "served", models=("classifier",))
    version = repo / "classifier" / "1"
    edit_onnx(version, _classifier_with_constant_of_shape_bomb)
    reseal(version, refresh_probe=False)
    code, output, rss = run_measured(["verify", str(version)], workdir)
    assert code == 1, output
    assert "ConstantOfShape" in output and "would allocate" in output and "not evaluated" in output, output
    assert "Traceback" not in output
    assert rss < RSS_LIMIT_MIB, f"peak RSS {rss:.0f} MiB"


# -- declarations: errors bounded, naming the key ---------------------------------------------
def test_a_50_mb_declaration_value_is_not_echoed_whole(workdir):
    spec = workdir / "huge.toml"
    spec.write_text('kind = "smoother"\nmode = "' + "v" * 50_000_000 + '"\nnormalized = true\n')
    onnx_file = save(exfiltrating_smoother("absent.bin", KERNEL_BYTES), workdir / "m.onnx")
    code, output, _ = run_measured(["import", str(onnx_file), "--spec", str(spec),
                                    "--repo", str(workdir / "repo"), "--name", "m"], workdir)
    assert code == 2
    assert "key 'mode'" in output and len(output) < 4096, output[:500]


def test_ten_thousand_unknown_keys_are_named_by_a_bounded_message(workdir):
    spec = workdir / "keys.toml"
    spec.write_text('kind = "smoother"\nmode = "same"\nnormalized = true\n'
                    + "".join(f"unknown_{i} = 1\n" for i in range(10_000)))
    onnx_file = save(exfiltrating_smoother("absent.bin", KERNEL_BYTES), workdir / "m.onnx")
    code, output, _ = run_measured(["import", str(onnx_file), "--spec", str(spec),
                                    "--repo", str(workdir / "repo"), "--name", "m"], workdir)
    assert code == 2
    assert "key 'unknown_0': unknown key" in output and "and 9980 more key(s)" in output
    assert len(output) < 4096, len(output)


def test_a_graph_shape_inference_cannot_follow_is_refused_by_name_before_any_folding():
    """Constants of shapes [2] and [3] added: strict shape inference fails, so no folded constant's
    size is known. The graph is refused with that reason (it once raised NameError while folding)."""
    from onnx import TensorProto, helper, numpy_helper

    f = TensorProto.FLOAT
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(2, np.float32), "c")),
             helper.make_node("Constant", [], ["d"], value=numpy_helper.from_array(np.ones(3, np.float32), "d")),
             helper.make_node("Add", ["c", "d"], ["e"]),
             helper.make_node("MatMul", ["features", "W"], ["scores"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("features", f, ["batch", 2])],
                              [helper.make_tensor_value_info("scores", f, ["batch", 1])],
                              [numpy_helper.from_array(np.array([[0.5], [0.25]], np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(GraphRefused, match="shape inference fails"):
        check_graph(model, [IoSpec("features", "float32", ["batch", 2])], [IoSpec("scores", "float32", ["batch", 1])])
