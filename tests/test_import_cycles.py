"""No import cycle between any two modules of the project: the module import graph is computed from
the source (tests/import_graph.py, every import statement, lazy and TYPE_CHECKING ones too) and
its strongly connected components of more than one module are refused, naming the modules."""

from __future__ import annotations

from pathlib import Path

from import_graph import cycles, describe, import_graph, top_level_packages

ROOT = Path(__file__).resolve().parents[1]

def test_the_graph_covers_every_package_of_the_project():
    packages = top_level_packages(ROOT)
    assert {"contract", "models", "export", "service", "monoserve", "torchref"} <= set(packages)
    graph = import_graph(ROOT)
    assert "service.compute.kinds" in graph["service.repository.prover"]  # a plain import
    assert "service.compute.kinds" in graph["service.pipeline.endpoint"]
    assert "service.repository.prover" in graph["export.finalize"]  # a lazy one, inside a function


def test_no_module_imports_itself_through_others():
    graph = import_graph(ROOT)
    found = cycles(graph)
    assert found == [], "import cycles:\n" + "\n".join(describe(component, graph) for component in found)


def test_a_cycle_is_found_and_named(tmp_path):
    """Two packages of a small tree: a cycle through a lazy import, another through a relative one
    and a TYPE_CHECKING block, and a module that only imports downward."""
    for package in ("alpha", "beta"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "alpha" / "one.py").write_text("from beta import two\n")
    (tmp_path / "beta" / "two.py").write_text("def later():\n    import alpha.one\n")
    (tmp_path / "beta" / "three.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import four\n")
    (tmp_path / "beta" / "four.py").write_text("from beta.three import something\n")
    (tmp_path / "beta" / "leaf.py").write_text("from beta import four\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    assert top_level_packages(tmp_path) == ["alpha", "beta"]
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["alpha.one", "beta.two"], ["beta.four", "beta.three"]]
    assert describe(["alpha.one", "beta.two"], graph) == \
        "2 modules import each other: alpha.one -> beta.two; beta.two -> alpha.one"
