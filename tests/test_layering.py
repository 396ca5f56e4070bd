"""The layering, checked: import-linter contracts (pyproject.toml [tool.importlinter]) and the
serving path's imports in a fresh interpreter (nothing of torch, training or export)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports; raise SystemExit(lint_imports(no_cache=True, no_logo=True))"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", LINT], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _contract_names() -> list[str]:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [contract["name"] for contract in config["tool"]["importlinter"]["contracts"]]


def test_import_linter_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    names = _contract_names()
    assert any(name.startswith("service rooms are one-way layers") for name in names)
    out = " ".join(result.stdout.split())  # import-linter wraps long names
    assert f"{len(names)} kept, 0 broken" in out
    for name in names:
        assert f"{name} KEPT" in out, name


def test_import_linter_catches_an_upward_import_between_rooms(tmp_path):
    """The layers contracts over a small tree: the compute room reaching up into the pipeline, and
    export's kinds reaching up into byom (two of the cycles this layout removed), are reported,
    naming the imports."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    for package in ("contract", "models", "export", "monoserve", "torchref", "batch"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    service = tmp_path / "service"
    _layer_modules(tmp_path)
    (service / "edge" / "fastpath.py").write_text("from service.pipeline import endpoint\n")
    (service / "pipeline" / "endpoint.py").write_text("from service.compute import kinds\n")
    (service / "compute" / "kinds.py").write_text("from service.pipeline.endpoint import InferRequest\n")
    (service / "compute" / "engines.py").write_text("def load():\n    import torch\n")
    (service / "repository" / "torchscript_proof.py").write_text("def prove():\n    import torch\n    from torchref import modules\n")
    (tmp_path / "torchref" / "modules.py").write_text("import torch\n")
    (tmp_path / "export" / "kinds.py").write_text("def prepare():\n    from export.byom import Prepared\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    out = " ".join(result.stdout.split())
    assert "service rooms are one-way layers" in out and "export is one-way layers" in out
    assert "service.compute.kinds -> service.pipeline.endpoint" in out
    assert "export.kinds -> export.byom" in out
    assert "2 broken" in out


def _layer_modules(tree: Path) -> None:
    """Every module the layers contracts name, empty (import-linter refuses a missing layer)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for contract in config["tool"]["importlinter"]["contracts"]:
        for layer in contract.get("layers", []):
            for module in layer.replace(":", "|").split("|"):
                parts = module.strip().split(".")
                for depth in range(1, len(parts)):
                    package = tree.joinpath(*parts[:depth])
                    package.mkdir(exist_ok=True)
                    (package / "__init__.py").touch()
                if (tree.joinpath(*parts) / "__init__.py").exists():
                    continue
                if (ROOT.joinpath(*parts) / "__init__.py").exists():  # a package in the project: a package here
                    tree.joinpath(*parts).mkdir(exist_ok=True)
                    (tree.joinpath(*parts) / "__init__.py").touch()
                else:
                    tree.joinpath(*parts[:-1], parts[-1] + ".py").touch()


def test_import_linter_catches_a_broken_layer(tmp_path):
    """The same contracts over a small tree whose contract package imports torch and models."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    for package in ("contract", "models", "export", "service", "monoserve", "torchref", "batch"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "contract" / "rules.py").write_text("import torch\nfrom models import smoother\n")
    (tmp_path / "models" / "smoother.py").write_text("")
    # the allowed lazy imports (pyproject's ignore_imports must all match)
    _layer_modules(tmp_path)
    (tmp_path / "service" / "compute" / "engines.py").write_text("def load():\n    import torch\n")
    (tmp_path / "service" / "repository" / "torchscript_proof.py").write_text("def prove():\n    import torch\n    from torchref import modules\n")
    (tmp_path / "torchref" / "modules.py").write_text("import torch\n")
    # the service may not reach export/ even lazily (the TorchScript reference lives in torchref)
    (tmp_path / "service" / "reference.py").write_text("def build():\n    from export import kinds\n")
    (tmp_path / "export" / "kinds.py").write_text("")
    (tmp_path / "service" / "app.py").write_text("from export import core\n")
    (tmp_path / "export" / "core.py").write_text("")
    (tmp_path / "service" / "offline.py").write_text("from batch import job\n")  # batch builds on service, not back
    (tmp_path / "batch" / "job.py").write_text("")
    result = _lint(tmp_path)
    assert result.returncode != 0
    out = result.stdout
    assert "contract imports nothing of models, export, service or torch BROKEN" in out
    assert "contract.rules -> torch" in out and "contract.rules -> models.smoother" in out
    assert "service.app -> export.core" in out and "service.reference -> export.kinds" in out
    assert "models never imports export or service KEPT" in out
    assert "service.offline -> batch.job" in out


SERVING_MODULES = [
    "service.app", "service.cli", "service.repository.prover", "service.compute.engines", "service.repository.registry", "service.compute.inference",
    "contract.checks", "contract.modes", "contract.manifest", "contract.certificate", "contract.files",
    "export.cli", "export.validation", "export.publish", "monoserve.cli", "batch.job", "batch.local",
]


@pytest.mark.parametrize("module", SERVING_MODULES)
def test_importing_the_serving_path_leaves_torch_out(module):
    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'models')"
            f" or m in ('export.core', 'export.artifacts', 'export.parity')); print(bad)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing {module} imported {result.stdout.strip()}"


def test_one_registry_of_kinds_serves_the_prover_and_the_pipeline():
    """One adapter object per manifest kind, the same for the proof and for every endpoint; no
    module of the service branches on a kind's name instead."""
    import re

    from contract.manifest import KINDS
    from service.pipeline import endpoint as pipeline
    from service.compute.kinds import SERVICE_KINDS, ServiceKind, service_kind

    assert pipeline._kinds() is SERVICE_KINDS and tuple(SERVICE_KINDS) == KINDS
    for name, adapter in SERVICE_KINDS.items():
        assert isinstance(adapter, ServiceKind) and adapter.name == name and service_kind(name) is adapter
    branches = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                for path in sorted((ROOT / "service").rglob("*.py"))
                for number, line in enumerate(path.read_text().splitlines(), 1)
                if re.search(r"\bkind\s*==\s*['\"]", line)]
    assert branches == []


@pytest.mark.parametrize("absent", ["batch", "pyarrow"])
def test_the_console_script_works_without_an_optional_package(absent):
    """The serving image has neither batch/ nor pyarrow: `monoserve` must still parse its commands
    (the image's build runs `monoserve train --help`), and `monoserve batch` says which extra it needs."""
    code = ("import sys\n"  # a finder that says the package is not installed, as pip would leave it
            "class Absent:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] == {absent!r}:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Absent())\n"
            "from monoserve.cli import build_parser, main\n"
            "commands = build_parser()._subparsers._group_actions[0].choices\n"
            "print(sorted(commands))\n"
            "if 'batch' in commands: print('exit', main(['batch', '--repo', 'r', '--model', 'm', '--input', 'i', '--output', 'o']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "'serve'" in result.stdout and "'train'" in result.stdout and "'export'" in result.stdout
    if absent == "batch":
        assert "'batch'" not in result.stdout
    else:
        assert "exit 2" in result.stdout and "needs the batch extra" in result.stderr
