"""deploy/: the Kubernetes manifests validate strictly (kubernetes-validate's bundled schemas,
offline), the KServe InferenceService validates against deploy/kserve/inferenceservice.schema.json
(with Kubernetes' own Container/Volume/ObjectMeta schemas), and the manifests agree with the
service: probe paths are real routes, ports and the memory/CPU budget match the image and compose."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from importlib import resources
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve"
K8S_VERSIONS = ("1.30.0", "1.34.0")  # the oldest and a recent minor release still commonly run
SELECTOR = {"app.kubernetes.io/name": "monoserve", "app.kubernetes.io/component": "api"}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in documents(path):
            found[doc["kind"]] = doc
    return found


def container(doc: dict) -> dict:
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]["predictor"]
    (only,) = spec["containers"]
    return only


def env(item: dict) -> dict[str, str]:
    return {var["name"]: var["value"] for var in item.get("env", []) if "value" in var}


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_validate_strictly(version):
    docs = manifests()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(docs)
    for kind, doc in docs.items():
        if kind == "Kustomization":
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises with the path and message


def test_the_cli_validates_them_too():
    files = [str(path) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"]
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSIONS[-1], *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(files)


def test_strict_validation_catches_a_typo():
    deployment = copy.deepcopy(manifests()["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = documents(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def kserve_validator() -> jsonschema.Draft202012Validator:
    definitions_path = f"kubernetes-json-schema/v{K8S_VERSIONS[-1]}-local-strict/_definitions.json"
    definitions = json.loads(resources.files("kubernetes_validate").joinpath(definitions_path).read_text())
    schema = json.loads((KSERVE / "inferenceservice.schema.json").read_text())
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_inferenceservice_validates_against_its_schema():
    (service,) = documents(KSERVE / "inferenceservice.yaml")
    validator = kserve_validator()
    errors = sorted(validator.iter_errors(service), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("path,value", [
    (("spec", "predictor", "scaleMetric"), "latency"),
    (("spec", "predictor", "minReplica"), 1),
    (("spec", "predictor", "containers", 0, "imagee"), "x"),
    (("spec", "predictor", "containers", 0, "ports", 0, "containerPort"), "8080"),
    (("kind",), "InferenceServices"),
])
def test_inferenceservice_schema_catches_mistakes(path, value):
    (service,) = documents(KSERVE / "inferenceservice.yaml")
    broken = copy.deepcopy(service)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert list(kserve_validator().iter_errors(broken))


# -- agreement with the service ----------------------------------------------------------------
def app_paths(tmp_path: Path) -> set[str]:
    from service.app import create_app
    from service.settings import Settings

    return set(create_app(Settings(repo=tmp_path)).openapi()["paths"])


def test_probes_hit_real_routes_on_the_served_port(tmp_path):
    paths = app_paths(tmp_path)
    deployment = manifests()["Deployment"]
    (isvc,) = documents(KSERVE / "inferenceservice.yaml")
    for doc, port, grpc_port, grpc_name in ((deployment, "8000", "8001", "grpc"), (isvc, "8080", "8081", "h2c")):
        item = container(doc)
        assert env(item)["MONOSERVE_PORT"] == port and env(item)["MONOSERVE_HOST"] == "0.0.0.0"
        assert [p["containerPort"] for p in item["ports"]] == [int(port), int(grpc_port)]
        # the gRPC port: MONOSERVE_GRPC_PORT, named as the platform expects (KServe: h2c)
        assert env(item)["MONOSERVE_GRPC_PORT"] == grpc_port and item["ports"][1]["name"] == grpc_name
        assert item["readinessProbe"]["httpGet"]["path"] in {"/readyz", "/v2/health/ready"}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in item:
                assert item[probe]["httpGet"]["path"] in paths, probe
                assert item[probe]["httpGet"]["port"] in ("http", int(port))


def test_service_hpa_and_pdb_select_the_deployment():
    docs = manifests()
    deployment = docs["Deployment"]
    assert deployment["spec"]["selector"]["matchLabels"] == SELECTOR
    assert SELECTOR.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert docs["Service"]["spec"]["selector"] == SELECTOR
    assert [port["targetPort"] for port in docs["Service"]["spec"]["ports"]] == \
        [port["name"] for port in container(deployment)["ports"]]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == SELECTOR
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # A drain can always evict one pod: more replicas than the PDB keeps.
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] > docs["PodDisruptionBudget"]["spec"]["minAvailable"]


def test_resources_match_the_container_budget():
    """Memory and CPU as docker-compose.yml's api service (mem_limit 2g, cpus 2), threads = CPUs,
    and the pod's user is the image's."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    assert str(compose["mem_limit"]).lower() == "2g" and int(compose["cpus"]) == 2
    (isvc,) = documents(KSERVE / "inferenceservice.yaml")
    for item in (container(manifests()["Deployment"]), container(isvc)):
        resources_ = item["resources"]
        assert resources_["limits"]["memory"] == resources_["requests"]["memory"] == "2Gi"
        assert resources_["limits"]["cpu"] == resources_["requests"]["cpu"] == str(compose["cpus"])
        assert env(item)["MONOSERVE_CPU_THREADS"] == str(compose["cpus"])
    user = re.search(r"^USER (\d+):(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user and manifests()["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user[1])


def test_admin_token_comes_from_an_optional_secret():
    """The control API stays closed unless the operator creates the Secret; the pod starts without it."""
    (isvc,) = documents(KSERVE / "inferenceservice.yaml")
    for doc in (manifests()["Deployment"], isvc):
        (var,) = [var for var in container(doc)["env"] if var["name"] == "MONOSERVE_ADMIN_TOKEN"]
        assert var["valueFrom"]["secretKeyRef"] == {"name": "monoserve-admin", "key": "token", "optional": True}
        assert "value" not in var  # never a token written into the manifest
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["api"]["environment"]["MONOSERVE_ADMIN_TOKEN"] == "${MONOSERVE_ADMIN_TOKEN:-}"
