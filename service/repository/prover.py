"""Loading = proving: the checks a model version must pass before it may serve.

For one version directory (REPO/NAME/VERSION):
0. signature    only with trusted keys (MONOSERVE_TRUSTED_KEYS, contract.signing): VERSION/model.sig
                is a signature by a trusted key over every file of the directory, before any file
                is parsed; without trusted keys the step is absent and the report says "unsigned";
1. manifest     parse manifest.json (contract.manifest.Manifest) and check it names this directory;
2. checksums    sha256 and size of every file against the manifest, each read once (contract.files:
                inside the version directory, under the size cap, hashed while read; the bytes
                the later steps parse are the bytes that were hashed);
3. graph        default deny over the ONNX graph ONNX Runtime will run (contract.graph): io spec
                equal to the manifest's, tensors read as the runtime reads them, only modelled
                ops with checked attributes and dtypes, nothing that makes NaN/Inf from finite input;
4. constraints  the service's policy (contract.policy) against what the manifest declares; the
                policy's rules on each weight as its node consumes it (the smoother's Conv kernel,
                the classifier's output layer); the manifest's own rules on the tensors it names
                (and on the TorchScript parameters when that engine serves), with contract.checks;
5. certificate  a monotonicity proof computed from the ONNX graph (contract.certificate): every
                score in every monotone feature of a scope-"all" classifier and in its output
                layer's input, the output in every sample of a smoother's signal;
6. probe        the manifest's probe input through the engine, compared with its expected output;
7. warmup       a few runs of typical shapes, checking output shapes and finiteness.

The first failed step refuses the version; later steps are then skipped (nothing of a version
that failed a check is executed). torch-free unless the TorchScript engine is chosen.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from contract.checks import MAX_REPORTED, check_rule
from contract.files import DEFAULT_MAX_FILE_BYTES, FileRefusedError, check_inside, read_checked
from contract.manifest import FORMAT_FILES, MANIFEST_NAME, Manifest
from contract.policy import Policy
from service.compute.engines import ENGINE_FORMAT, EngineError, create_engine
from service.compute.version import SIGNATURE_STEP, STEPS, ProvenVersion, Status, StepReport, VersionReport
from service.compute.kinds import service_kind

log = logging.getLogger(__name__)

class StepFailed(Exception):
    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details


def _version_number(version_dir: Path) -> int | None:
    try:
        return int(version_dir.name)
    except ValueError:
        return None


class _Proof:
    """Carries what each step learns (manifest, file bytes, parsed graph) to the next."""

    def __init__(self, version_dir: Path, engine: str, device: str, threads: int, policy: Policy | None = None,
                 repo: Path | None = None, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
        self.dir = version_dir
        self.repo = repo if repo is not None else version_dir.parent.parent
        self.max_file_bytes = max_file_bytes
        self.policy = policy or Policy()
        self.graph_info = None  # contract.certificate.GraphInfo, once the graph step passed
        self.output_layer = None  # a classifier's output layer (contract.certificate.WeightUse)
        self.engine_name = engine
        self.device = device
        self.threads = threads
        self.manifest: Manifest | None = None
        self.file_bytes: dict[str, bytes] = {}
        self.onnx_model = None
        self.engine = None
        self.checked_tensors: dict[str, np.ndarray] = {}

    # 1 ------------------------------------------------------------------------------------
    def step_manifest(self) -> tuple[str, dict]:
        try:
            check_inside(self.dir, self.repo, f"version directory {self.dir}")
            if not (self.dir / MANIFEST_NAME).is_file():
                raise StepFailed(f"{MANIFEST_NAME} not found in {self.dir}")
            manifest = Manifest.read(self.dir, max_bytes=self.max_file_bytes)
        except FileRefusedError as exc:
            raise StepFailed(str(exc)) from exc
        except ValueError as exc:
            raise StepFailed(f"{MANIFEST_NAME} is not a valid manifest: {_first_lines(str(exc))}") from exc
        problems = []
        number = _version_number(self.dir)
        if number is not None and manifest.version != number:
            problems.append(f"manifest version {manifest.version} does not match directory {self.dir.name!r}")
        if manifest.name != self.dir.parent.name:
            problems.append(f"manifest name {manifest.name!r} does not match directory {self.dir.parent.name!r}")
        problems += service_kind(manifest.kind).manifest_problems(manifest)
        listed = [entry.format for entry in manifest.files]
        doubled = sorted({fmt for fmt in listed if listed.count(fmt) > 1})
        if doubled:  # which of two files of a format would be proven, and which served?
            problems.append(f"more than one file listed for format(s) {doubled}")
        if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
            problems.append(f"expected one input and one output, got {len(manifest.inputs)} and {len(manifest.outputs)}")
        needed = {"onnx", ENGINE_FORMAT[self.engine_name]}
        for fmt in sorted(needed):
            if manifest.file_for(fmt) is None:
                problems.append(f"no {fmt} file listed in the manifest (needed by the {'certificate' if fmt == 'onnx' else 'engine'})")
        if problems:
            raise StepFailed("; ".join(problems), problems=problems)
        self.manifest = manifest
        return (f"{manifest.kind} {manifest.name!r} version {manifest.version}",
                {"kind": manifest.kind, "name": manifest.name, "version": manifest.version,
                 "created": manifest.created.isoformat(), "schema_version": manifest.schema_version})

    # 2 ------------------------------------------------------------------------------------
    def step_checksums(self) -> tuple[str, dict]:
        assert self.manifest is not None
        files, problems = [], []
        parsed = {"onnx", ENGINE_FORMAT[self.engine_name]}  # the others are only hashed, never kept
        for entry in self.manifest.files:
            record: dict[str, Any] = {"path": entry.path, "format": entry.format, "sha256": entry.sha256, "size": entry.size}
            try:
                data, _, _ = read_checked(self.dir, entry.path, size=entry.size, sha256=entry.sha256,
                                          max_bytes=self.max_file_bytes, keep=entry.format in parsed)
            except FileRefusedError as exc:
                problems.append(str(exc))
                record["ok"] = False
            else:
                record["ok"] = True
                if data is not None:
                    self.file_bytes[entry.format] = data
            files.append(record)
        if problems:
            raise StepFailed("; ".join(problems), files=files, problems=problems)
        return f"{len(files)} file(s) match their sha256", {"files": files}

    # 3 ------------------------------------------------------------------------------------
    def _onnx(self):
        if self.onnx_model is None:
            import onnx

            try:
                self.onnx_model = onnx.load_from_string(self.file_bytes["onnx"])
            except Exception as exc:  # protobuf DecodeError and friends
                raise StepFailed(f"{self._file('onnx')}: not a readable ONNX model: {exc}") from exc
        return self.onnx_model

    def _file(self, fmt: str) -> str:
        assert self.manifest is not None
        entry = self.manifest.file_for(fmt)
        return entry.path if entry else FORMAT_FILES[fmt]

    def step_graph(self) -> tuple[str, dict]:
        from contract.graph import GraphRefused, IoSpec, check_graph

        assert self.manifest is not None
        model = self._onnx()
        specs = [[IoSpec(t.name, t.dtype, t.shape) for t in tensors] for tensors in (self.manifest.inputs, self.manifest.outputs)]
        try:
            self.graph_info = check_graph(model, specs[0], specs[1], file=self._file("onnx"),
                                          max_tensor_bytes=self.max_file_bytes,
                                          scope=self.manifest.classifier.scope if self.manifest.classifier else None)
        except GraphRefused as exc:
            raise StepFailed(str(exc), problems=exc.problems) from exc
        ops = sorted({node.op_type for node in model.graph.node})
        return (f"{len(model.graph.node)} node(s), only modelled ops ({', '.join(ops)}); io spec as the manifest's",
                {"nodes": len(model.graph.node), "ops": ops, "opset": [o.version for o in model.opset_import]})

    # 4 ------------------------------------------------------------------------------------
    def step_constraints(self) -> tuple[str, dict]:
        assert self.manifest is not None and self.graph_info is not None
        shortfalls = self.policy.shortfalls(self.manifest)
        if shortfalls:
            raise StepFailed("the manifest declares less than the service's policy requires: " + shortfalls[0]
                             + (f" (and {len(shortfalls) - 1} more)" if len(shortfalls) > 1 else ""),
                             problems=shortfalls, policy=self.policy.to_dict())
        checks, problems = self._policy_checks()
        sources: dict[str, tuple[dict[str, np.ndarray], set[str] | None]] = {}
        model = self._onnx()
        consumed = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
        sources["onnx"] = (self.graph_info.constants, consumed)
        if self.engine_name == "torchscript":
            self._load_engine()
            sources["torchscript"] = (self.engine.tensors(), None)
        for entry in self.manifest.constraints:
            for fmt, (tensors, used) in sources.items():
                record: dict[str, Any] = {"tensor": entry.tensor, "rule": entry.rule, "tolerance": entry.tolerance, "format": fmt}
                location = entry.locations.get(fmt)
                record["location"] = location
                if location is None:
                    problems.append(f"{entry.tensor} ({entry.rule}): the manifest gives no location in the {fmt} artifact")
                    record["ok"] = False
                elif location not in tensors:
                    problems.append(f"{entry.tensor} ({entry.rule}): no constant tensor {location!r} in {self._file(fmt)}")
                    record["ok"] = False
                elif used is not None and location not in used:
                    problems.append(f"{entry.tensor}: {self._file(fmt)} holds {location!r} but no node uses it")
                    record["ok"] = False
                else:
                    values = tensors[location]
                    record["shape"] = list(values.shape)
                    try:
                        violations = check_rule(entry.rule, f"{self._file(fmt)}:{location}", values,
                                                tolerance=entry.tolerance, axis=entry.axis, columns=entry.columns)
                    except (ValueError, IndexError) as exc:
                        violations = []
                        problems.append(f"{entry.tensor} ({entry.rule}) cannot be checked on shape {list(values.shape)}: {exc}")
                        record["ok"] = False
                    else:
                        if fmt == "torchscript" and self.engine_name == "torchscript":
                            self.checked_tensors[entry.tensor] = values
                        record["ok"] = not violations
                        record["violations"] = [v.to_dict() for v in violations[:MAX_REPORTED]]
                        record["violation_count"] = len(violations)
                        problems += [str(v) for v in violations]
                checks.append(record)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise StepFailed(problems[0] + more, checks=checks, problems=problems)
        formats = ", ".join(sources)
        return (f"{len(checks)} rule check(s) hold: the policy's on each weight as its node consumes it, "
                f"the manifest's on the tensors it names ({formats})"), {"checks": checks, "policy": self.policy.to_dict()}

    def _policy_checks(self) -> tuple[list[dict], list[str]]:
        """The policy's rules on the tensors at their point of use, whatever the manifest names."""
        assert self.manifest is not None and self.graph_info is not None
        info, file = self.graph_info, self._file("onnx")
        checks: list[dict] = []
        problems: list[str] = []

        def check(rule: str, where: str, values: np.ndarray, **options: Any) -> None:
            violations = check_rule(rule, where, values, **options)
            checks.append({"tensor": where, "rule": rule, "source": "policy", "format": "onnx", "shape": list(values.shape),
                           "ok": not violations, "violation_count": len(violations),
                           "violations": [v.to_dict() for v in violations[:MAX_REPORTED]]})
            problems.extend(str(v) for v in violations)

        try:
            service_kind(self.manifest.kind).policy_checks(self, info, file, check)
        except ValueError as exc:  # the weight the policy names is not where the policy needs it
            return checks, [f"{file}: {exc}"]
        return checks, problems

    # 5 ------------------------------------------------------------------------------------
    def step_certificate(self) -> tuple[Status, str, dict]:
        manifest = self.manifest
        assert manifest is not None and self.graph_info is not None
        output_name = manifest.outputs[0].name
        adapter = service_kind(manifest.kind)
        plan = adapter.certificate_plan(self)
        if plan is None:
            return "skipped", adapter.uncertified_reason(manifest), {}
        proofs, claim = plan
        findings, failures = [], []
        for seed, features in proofs:
            certificate = adapter.certify(self, seed, features, [output_name])
            findings += certificate.findings
            failures += certificate.failures
        details = {"ok": not failures, "findings": [f.to_dict() for f in findings]}
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise StepFailed(failures[0].message + more, node=failures[0].node, problems=[f.message for f in failures], **details)
        problem = adapter.certificate_problem(manifest, findings)
        if problem:
            raise StepFailed(problem, **details)
        return "ok", claim, details

    # 6 ------------------------------------------------------------------------------------
    def _load_engine(self) -> None:
        if self.engine is not None:
            return
        assert self.manifest is not None
        fmt = ENGINE_FORMAT[self.engine_name]
        if fmt == "torchscript":
            self._prove_torchscript()
        # The engine loads the bytes that were hashed and proven, never the file again.
        engine = create_engine(self.engine_name, self.dir, self._file(fmt), self.device, self.threads,
                               model_bytes=self.file_bytes[fmt])
        try:
            engine.load()
        except EngineError as exc:
            raise StepFailed(str(exc)) from exc
        self.engine = engine

    def _run(self, array: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.engine.run(array))
        except Exception as exc:  # any engine failure on a well-formed input refuses the version
            raise StepFailed(f"the {self.engine_name} engine failed on an input of shape {list(array.shape)}: {_first_lines(str(exc))}") from exc

    def _prove_torchscript(self) -> None:
        """model.ts is served only as the trusted reference with the proven tensors (service/repository/torchscript_proof.py)."""
        from service.repository.torchscript_proof import TorchScriptRefused, prove_torchscript

        assert self.manifest is not None
        manifest = self.manifest
        assert self.graph_info is not None  # the graph step read the tensors as ONNX Runtime will
        model = self._onnx()
        tensors = self.graph_info.constants
        consumed = {name for node in model.graph.node for name in node.input}
        adapter = service_kind(manifest.kind)
        try:
            prove_torchscript(self.file_bytes["torchscript"], manifest, tensors, consumed,
                              lambda proven: adapter.reference_rules(manifest, proven))
        except TorchScriptRefused as exc:
            raise StepFailed(str(exc), problems=exc.problems) from exc

    def step_probe(self) -> tuple[str, dict]:
        assert self.manifest is not None
        self._load_engine()
        probe = self.manifest.probe
        try:
            inputs = np.asarray(probe.input, dtype=np.float32)
            expected = np.asarray(probe.expected, dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise StepFailed(f"the manifest's probe is not a numeric array: {exc}") from exc
        self._check_input_shape(inputs)
        output = self._run(inputs).astype(np.float64)
        if output.shape != expected.shape:
            raise StepFailed(f"probe output shape {list(output.shape)} differs from the expected {list(expected.shape)}")
        error = np.abs(output - expected)
        allowed = probe.atol + probe.rtol * np.abs(expected)
        bad = ~(error <= allowed)
        max_error = float(np.max(error)) if error.size else 0.0
        details = {"input_shape": list(inputs.shape), "max_abs_error": max_error, "atol": probe.atol, "rtol": probe.rtol}
        if np.any(bad):
            index = [int(i) for i in np.argwhere(bad)[0]]
            raise StepFailed(
                f"probe output differs from the manifest: at index {index} got {output[tuple(index)]:.8g}, "
                f"expected {expected[tuple(index)]:.8g} (|error| {error[tuple(index)]:.3g} > atol {probe.atol:g} + rtol {probe.rtol:g})",
                **details)
        return f"probe {list(inputs.shape)} matches: max |error| {max_error:.3g} <= atol {probe.atol:g}", details

    def _check_input_shape(self, inputs: np.ndarray) -> None:
        assert self.manifest is not None
        spec = self.manifest.inputs[0]
        if inputs.ndim != len(spec.shape) or any(isinstance(d, int) and d != n for d, n in zip(spec.shape, inputs.shape)):
            raise StepFailed(f"probe input shape {list(inputs.shape)} does not fit the manifest's input {spec.shape}")

    # 7 ------------------------------------------------------------------------------------
    def warmup_inputs(self) -> list[np.ndarray]:
        assert self.manifest is not None
        return service_kind(self.manifest.kind).warmup_inputs(self.manifest, np.random.default_rng(0))

    def expected_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        assert self.manifest is not None
        return service_kind(self.manifest.kind).expected_shape(self.manifest, shape)

    def step_warmup(self) -> tuple[str, dict]:
        runs = []
        for array in self.warmup_inputs():
            output = self._run(array)
            want = self.expected_shape(array.shape)
            if tuple(output.shape) != want:
                raise StepFailed(f"input {list(array.shape)} gave output {list(output.shape)}, expected {list(want)} "
                                 f"(is the manifest's kernel size / feature / label count right?)")
            if not np.all(np.isfinite(output)):
                raise StepFailed(f"input {list(array.shape)} gave non-finite outputs")
            timings = []
            for _ in range(WARMUP_TIMED_RUNS):  # warm now: these time the steady state
                start = time.perf_counter()
                self._run(array)
                timings.append(time.perf_counter() - start)
            runs.append({"input_shape": list(array.shape), "output_shape": list(output.shape),
                         "elements": int(array.size), "seconds": round(min(timings), 7)})
        return f"{len(runs)} warm-up run(s), output shapes as declared", {"runs": runs, "cost": cost_model(runs)}


WARMUP_TIMED_RUNS = 3


def cost_model(runs: list[dict]) -> dict[str, float]:
    """Inference time ~ fixed + per_element * elements, fitted on the smallest and largest warm-up runs."""
    small, large = min(runs, key=lambda r: r["elements"]), max(runs, key=lambda r: r["elements"])
    spread = large["elements"] - small["elements"]
    per_element = max(0.0, (large["seconds"] - small["seconds"]) / spread) if spread else large["seconds"] / large["elements"]
    return {"fixed_seconds": small["seconds"], "seconds_per_element": per_element}


def _first_lines(text: str, count: int = 3) -> str:
    return " ".join(text.strip().splitlines()[:count])


def prove_version(
    version_dir: str | Path, engine: str = "onnx", device: str = "cpu", threads: int = 1, policy: Policy | None = None,
    *, repo: str | Path | None = None, max_file_bytes: int | None = None, trusted_keys: Any = None,
) -> tuple[VersionReport, ProvenVersion | None]:
    """Run every step on one version directory: (report, the loaded version if it passed).

    policy: what the service requires whatever the manifest says (None: the default policy).
    `repo` (default: the directory two levels up, REPO/NAME/VERSION) is where the version must
    resolve to; `max_file_bytes` caps every file read (default: MONOSERVE_MAX_ARTIFACT_BYTES).
    `trusted_keys` (contract.signing.TrustedKeys): when given, the signature step runs first and
    a version not signed by one of them over exactly its files fails it (the others are skipped).
    """
    version_dir = Path(version_dir)
    repo = Path(repo) if repo is not None else version_dir.parent.parent
    if max_file_bytes is None:
        max_file_bytes = _configured_max_file_bytes()
    report = VersionReport(str(version_dir), version_dir.parent.name, _version_number(version_dir), engine, device)
    proof = _Proof(version_dir, engine, device, threads, policy, Path(repo), max_file_bytes)
    failed = False
    if trusted_keys is not None:
        failed = not _signature_step(report, version_dir, repo, trusted_keys, max_file_bytes)
    else:
        _note_unchecked_signature(report, version_dir)
    for step in STEPS:
        if failed:
            report.steps.append(StepReport(step, "skipped", "not run: an earlier step failed"))
            continue
        start = time.perf_counter()
        try:
            result = getattr(proof, f"step_{step}")()
            status, message, details = result if len(result) == 3 else ("ok", *result)
            report.steps.append(StepReport(step, status, message, details, time.perf_counter() - start))
        except StepFailed as exc:
            failed = True
            report.steps.append(StepReport(step, "failed", exc.message, exc.details, time.perf_counter() - start))
        except Exception as exc:  # a bug or an unforeseen artifact defect must refuse, never crash loading
            log.exception("unexpected error in step %s of %s", step, version_dir)
            failed = True
            report.steps.append(StepReport(step, "failed", f"unexpected error: {type(exc).__name__}: {exc}",
                                           {}, time.perf_counter() - start))
    if report.version is None and proof.manifest is not None:  # a directory not named by its version
        report.name, report.version = proof.manifest.name, proof.manifest.version
    if not report.ok:
        return report, None
    assert proof.manifest is not None
    return report, ProvenVersion(proof.manifest, proof.engine, report, version_dir, proof.checked_tensors)


def _signature_step(report: VersionReport, version_dir: Path, repo: Path, trusted_keys: Any, max_file_bytes: int) -> bool:
    from contract.signing import SignatureError, verify_version

    start = time.perf_counter()
    try:
        check_inside(version_dir, repo, f"version directory {version_dir}")
        accepted = verify_version(version_dir, trusted_keys, max_file_bytes)
    except (SignatureError, FileRefusedError, OSError) as exc:
        problems = getattr(exc, "problems", [str(exc)])
        reason = getattr(exc, "reason", "invalid")
        report.signature = {"status": "refused", "reason": reason, "message": str(exc)}
        report.steps.append(StepReport(SIGNATURE_STEP, "failed", str(exc), {"reason": reason, "problems": problems},
                                       time.perf_counter() - start))
        return False
    report.signature = {"status": "verified", **accepted}
    report.steps.append(StepReport(SIGNATURE_STEP, "ok", f"signed by {accepted['signer']} over {accepted['files']} file(s)",
                                   accepted, time.perf_counter() - start))
    return True


def _note_unchecked_signature(report: VersionReport, version_dir: Path) -> None:
    from contract.signing import signature_hint

    try:
        hint = signature_hint(version_dir)
    except OSError:
        hint = None
    if hint is not None:
        report.signature = {"status": "signed, not checked (no MONOSERVE_TRUSTED_KEYS)", "signer": hint}


def _configured_max_file_bytes() -> int:
    """MONOSERVE_MAX_ARTIFACT_BYTES, so `monoserve serve` and `monoserve verify` read the same cap."""
    try:
        from service.settings import get_settings

        return int(get_settings().max_artifact_bytes)
    except Exception:  # an unrelated invalid setting must not make the proof skip its cap
        log.warning("settings unreadable: using the default cap of %d bytes per file", DEFAULT_MAX_FILE_BYTES)
        return DEFAULT_MAX_FILE_BYTES
