"""deploy/ray/rayjob.yaml: validates against deploy/ray/rayjob.schema.json (KubeRay's RayJob, with
Kubernetes' own strict PodTemplateSpec), offline; and agrees with `monoserve batch`: the entrypoint
parses as the command, every pod mounts the paths it names, CPUs match rayStartParams."""

from __future__ import annotations

import copy
import json
import shlex
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from monoserve.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
RAY = ROOT / "deploy" / "ray"
K8S_VERSION = "1.34.0"


def rayjob() -> dict:
    (doc,) = [doc for doc in yaml.safe_load_all((RAY / "rayjob.yaml").read_text()) if doc]
    return doc


def validator() -> jsonschema.Draft202012Validator:
    path = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json"
    definitions = json.loads(resources.files("kubernetes_validate").joinpath(path).read_text())
    schema = json.loads((RAY / "rayjob.schema.json").read_text())
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def pods(doc: dict) -> list[dict]:
    spec = doc["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"]] + spec["workerGroupSpecs"]


def test_rayjob_validates_against_its_schema():
    errors = sorted(validator().iter_errors(rayjob()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("path,value", [
    (("spec", "submissionMode"), "JobMode"),
    (("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0, "imagee"), "x"),
    (("spec", "rayClusterSpec", "workerGroupSpecs", 0, "replicas"), "2"),
    (("spec", "rayClusterSpec", "workerGroupSpecs", 0, "rayStartParams", "num-cpus"), 4),
    (("spec", "entrypointz"), "x"),
])
def test_schema_catches_mistakes(path, value):
    broken = copy.deepcopy(rayjob())
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert list(validator().iter_errors(broken))


def test_entrypoint_is_a_ray_batch_run_on_mounted_paths():
    doc = rayjob()
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "monoserve"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "batch" and args.engine == "ray" and args.ray_address == "auto"
    for group in pods(doc):
        (container,) = group["template"]["spec"]["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for path in (args.repo, args.input, args.output):  # every node reads and writes the same paths
            assert any(Path(path).is_relative_to(mount) for mount in mounts), (group.get("groupName"), path)
        assert mounts[args.repo]["readOnly"] is True
        # actors size their ONNX Runtime threads from the CPUs Ray is told about: the pod's CPUs
        assert group["rayStartParams"]["num-cpus"] == container["resources"]["limits"]["cpu"]
        assert container["resources"]["requests"] == container["resources"]["limits"]


def test_ray_version_is_in_the_extra_s_range():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (spec,) = [item for item in extras["ray"] if item.startswith("ray[")]
    major = int(rayjob()["spec"]["rayClusterSpec"]["rayVersion"].split(".")[0])
    assert f">={major}." in spec and f"<{major + 1}" in spec
