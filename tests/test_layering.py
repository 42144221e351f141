"""The package's dependency rules (docs: DESIGN.md, "Dependency direction"), checked on the
source with `ast`: every import counts, the ones inside functions too, so a cycle cannot
hide behind a lazy import. A package's `__init__` counts as a module: it may import its
submodules (re-exports, built-ins that register themselves), so a submodule never imports
its own package (registries live in a submodule, e.g. rewards/base.py).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "grpokit"

# Who may import grpokit.engine: build.py, which plugs the speed paths in behind Sampler
# and TrainingPass, the console script's launcher and bench/.
ENGINE_IMPORTERS = {
    "grpokit.build",
    # console_main re-executes the process under the engine's malloc settings before
    # anything else runs (engine.allocator, stdlib only): it has to run before build.py
    # could be imported, so it cannot live behind it.
    "grpokit.cli",
    "grpokit.bench.__main__",
    "grpokit.bench.machine",
    "grpokit.bench.run",
}

ALGO_STDLIB = {"__future__", "math", "typing", "itertools", "dataclasses", "functools", "collections"}
# algo/ may use grpokit.registry (stdlib-only, below everything) for its estimator and loss
# registries, and its own modules.
ALGO_GRPOKIT = ("grpokit.types", "grpokit.registry", "grpokit.algo")
LEAF_PACKAGES = ("grpokit.rewards", "grpokit.grouping", "grpokit.tools")
LEAF_FORBIDDEN = ("grpokit.train", "grpokit.build", "grpokit.config", "grpokit.cli")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _absolute(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in `module`;
    `from pkg import sub` yields the submodule itself."""
    path, is_pkg = MODULES[module]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, is_pkg, node)
            for a in node.names:
                full = f"{target}.{a.name}"
                out.append((full, None, node.lineno) if full in MODULES else (target, a.name, node.lineno))
    return out


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _name, _line in _imports(m):
            if target not in MODULES or target == m:
                continue
            edges[m].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_scan_sees_the_package():
    assert len(MODULES) > 60 and "grpokit.config.io" in MODULES and "grpokit.engine.native" in MODULES
    assert "grpokit.config.schema" in _edges()["grpokit.config.io"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(_edges()) == []


def test_no_private_name_imported_from_another_module():
    bad = []
    for m in MODULES:
        module_aliases = {}  # local name -> grpokit module, for `mod._x` attribute access
        path, _ = MODULES[m]
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        module_aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    full = f"{_absolute(m, MODULES[m][1], node)}.{a.name}"
                    if full in MODULES:
                        module_aliases[a.asname or a.name] = full
        for target, name, line in _imports(m):
            if target.startswith("grpokit") and name and name.startswith("_") and not name.startswith("__"):
                bad.append(f"{path.relative_to(SRC)}:{line}: {target}.{name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__") and module_aliases[node.value.id] != m):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {module_aliases[node.value.id]}.{node.attr}")
    assert bad == []


def test_algo_imports_only_torch_stdlib_math_and_types():
    bad = []
    for m in MODULES:
        if not (m == "grpokit.algo" or m.startswith("grpokit.algo.")):
            continue
        for target, _name, line in _imports(m):
            top = target.split(".")[0]
            if top == "torch" or top in ALGO_STDLIB:
                continue
            if any(target == p or target.startswith(p + ".") for p in ALGO_GRPOKIT):
                continue
            bad.append(f"{m}:{line}: {target}")
    assert bad == []


@pytest.mark.parametrize("package", LEAF_PACKAGES)
def test_rewards_grouping_tools_know_no_trainer_or_config(package):
    bad = []
    for m in MODULES:
        if m == package or m.startswith(package + "."):
            for target, _name, line in _imports(m):
                if any(target == f or target.startswith(f + ".") for f in LEAF_FORBIDDEN):
                    bad.append(f"{m}:{line}: {target}")
    assert bad == []


def test_engine_is_imported_only_from_the_allowlist():
    importers = set()
    for m in MODULES:
        if m == "grpokit.engine" or m.startswith("grpokit.engine."):
            continue
        if any(t == "grpokit.engine" or t.startswith("grpokit.engine.") for t, _n, _l in _imports(m)):
            importers.add(m)
    assert importers <= ENGINE_IMPORTERS, sorted(importers - ENGINE_IMPORTERS)
