"""The library's shape, checked: no import cycle (module-level or inside functions), no private
name imported from another module, no Prefect import, and modules over ~500 lines say why."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.conftest import REPO

ROOT = REPO / "pipeline"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(REPO).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _imports(mods: dict[str, Path]):
    graph, private, prefect = defaultdict(set), [], []
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(parts + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    if f"{target}.{a.name}" in mods:
                        graph[name].add(f"{target}.{a.name}")
                    elif target in mods:
                        graph[name].add(target)
                    if a.name.startswith("_") and target.startswith("pipeline") and target != name:
                        private.append(f"{name} imports {target}.{a.name}")
                if target.split(".")[0] == "prefect":
                    prefect.append(name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods:
                        graph[name].add(a.name)
                    if a.name.split(".")[0] == "prefect":
                        prefect.append(name)
    return graph, private, prefect


def _cycles(graph, nodes) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def test_the_library_has_no_import_cycle_not_even_through_function_level_imports():
    mods = _modules()
    graph, _, _ = _imports(mods)
    assert _cycles(graph, list(mods)) == []


def test_no_private_name_crosses_a_module_boundary_and_prefect_stays_out_of_the_library():
    _, private, prefect = _imports(_modules())
    assert private == []
    assert prefect == []


def test_modules_over_500_lines_state_why_at_their_top():
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 500:
            assert "on purpose" in text[:1500], f"{name}: {len(text.splitlines())} lines and no reason at its top"
