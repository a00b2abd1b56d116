"""The import architecture (issue 17): the contracts of ``.importlinter`` hold, and no module takes part in an import
cycle.

``lint-imports`` checks the layers, keeps the synthetic-data generator apart and refuses a cycle between the children
of any package (``acyclic_siblings``). The strongly-connected-component check below also catches what that contract
does not look at — a cycle through a package's ``__init__`` and one of its own modules — over the same import graph
(grimp, lazy imports inside functions included), minus the debts the acyclic contract names.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CONFIG = ROOT / ".importlinter"
ACYCLIC = "No import cycles: the children of every package import each other acyclically"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--config",
            str(CONFIG),
            "--no-cache",
            "--no-logo",
            *args,
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_import_contracts_are_kept() -> None:
    """Every contract of ``.importlinter`` is kept (the report of a broken one is the failure message)."""
    done = _lint_imports()
    report = done.stdout + done.stderr
    broken = report[report.find("Broken contracts") :] if "Broken contracts" in report else report
    assert done.returncode == 0, f"lint-imports failed (exit {done.returncode}):\n{broken}"
    assert "0 broken" in report


def strongly_connected(graph: grimp.ImportGraph, ignored: Iterable[tuple[str, str]] = ()) -> list[list[str]]:
    """Import cycles of ``graph``: its strongly connected components of more than one module (Tarjan, iterative),
    without the ``ignored`` (importer, imported) pairs, each sorted, largest first."""
    skip = set(ignored)
    edges: Mapping[str, list[str]] = {
        m: sorted(d for d in graph.find_modules_directly_imported_by(m) if (m, d) not in skip) for m in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            succ = edges.get(v, [])
            if i < len(succ):
                work.append((v, i + 1))
                w = succ[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return sorted(out, key=lambda c: (-len(c), c))


def _debts() -> list[tuple[str, str]]:
    """The (importer, imported) pairs the acyclic contract ignores: the named debts."""
    from importlinter import api

    contracts = api.read_configuration(str(CONFIG))["contracts_options"]
    (acyclic,) = [c for c in contracts if c["name"] == ACYCLIC]
    pairs = []
    for expr in acyclic.get("ignore_imports", []):
        importer, _, imported = expr.partition("->")
        pairs.append((importer.strip(), imported.strip()))
    return pairs


def test_the_cycle_finder_finds_cycles() -> None:
    """The checker is not vacuous: a three-module cycle and a package/child cycle are found, a chain is not."""
    g = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("q", "q.x"), ("q.x", "q"), ("r.a", "r.b")]:
        g.add_import(importer=a, imported=b)
    assert strongly_connected(g) == [["p.a", "p.b", "p.c"], ["q", "q.x"]]
    assert strongly_connected(g, [("p.c", "p.a")]) == [["q", "q.x"]]


def test_no_module_is_in_an_import_cycle() -> None:
    """No strongly connected component of more than one module in immunoguide's import graph (debts aside)."""
    import immunoguide

    here = Path(immunoguide.__file__).resolve()
    if SRC not in here.parents:
        pytest.fail(f"immunoguide is imported from {here}, not from this checkout ({SRC}): put src first on the path")
    graph = grimp.build_graph("immunoguide", cache_dir=None)
    cycles = strongly_connected(graph, _debts())
    assert not cycles, "import cycles (strongly connected components):\n" + "\n".join(" <-> ".join(c) for c in cycles)
