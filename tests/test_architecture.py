"""The kernel's import structure (docs/architecture.md): layers, and no import cycle.

The layers are declared once, in pyproject.toml's ``[tool.importlinter]`` (run by hand with
``lint-imports``); these tests run that contract and add what it does not check: no two
kernel modules import each other, directly or through others, even for type hints only.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest
from importlinter import configuration
from importlinter.application import use_cases

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dataworkflows"


def layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return contract["layers"]


def grimp_layers(declared: Iterable[str]) -> list[grimp.Layer]:
    """import-linter's layer syntax (``a | b`` independent, ``a : b`` not) for grimp."""
    out = []
    for layer in declared:
        independent = "|" in layer
        names = [n.strip() for n in layer.replace("|", ":").split(":")]
        out.append(grimp.Layer(*names, independent=independent))
    return out


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=False, cache_dir=None)


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every set of modules that import each other (strongly connected, more than one)."""
    edges: Mapping[str, set[str]] = {
        m: graph.find_modules_directly_imported_by(m) for m in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges)))
    try:
        for module in sorted(edges):
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return cycles


def test_the_layer_contract_is_kept() -> None:
    # the use case, not the CLI function: that one reconfigures logging for the process
    configuration.configure()
    assert use_cases.lint_imports(cache_dir=None, no_logo=True) is True


def test_no_kernel_module_imports_one_that_imports_it_back(graph: grimp.ImportGraph) -> None:
    assert import_cycles(graph) == []


def test_nothing_below_the_entry_points_imports_the_composition_root(
    graph: grimp.ImportGraph,
) -> None:
    importers = graph.find_modules_that_directly_import(f"{PACKAGE}.kernel")
    assert {m.split(".")[1] for m in importers} <= {"cli", "testing"}


def test_a_deliberate_cycle_is_caught(graph: grimp.ImportGraph) -> None:
    """The checks above can fail: an import from the ledger back into the service (the
    service imports the ledger) is a cycle and breaks the layers."""
    graph.add_import(
        importer=f"{PACKAGE}.ledger.run_ledger",
        imported=f"{PACKAGE}.service.runs",
        line_number=1,
        line_contents="from dataworkflows.service.runs import RunOperations",
    )
    try:
        cycles = import_cycles(graph)
        assert any(
            {f"{PACKAGE}.ledger.run_ledger", f"{PACKAGE}.service.runs"} <= set(c) for c in cycles
        )
        illegal = graph.find_illegal_dependencies_for_layers(
            layers=grimp_layers(layers()), containers=set()
        )
        assert any(
            d.importer == f"{PACKAGE}.ledger" and d.imported == f"{PACKAGE}.service"
            for d in illegal
        )
    finally:
        graph.remove_import(
            importer=f"{PACKAGE}.ledger.run_ledger", imported=f"{PACKAGE}.service.runs"
        )


def test_the_layers_hold_in_the_graph_the_test_builds(graph: grimp.ImportGraph) -> None:
    """The same contract through grimp directly: what the deliberate-cycle test relies on."""
    assert (
        graph.find_illegal_dependencies_for_layers(layers=grimp_layers(layers()), containers=set())
        == set()
    )
