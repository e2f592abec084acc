"""The package's import graph, read from the source (every import statement, inside functions too): no cycle among
hrpose's modules outside commands/ and cli.py, and every import goes down the layers of the import-linter
contract in pyproject.toml. `lint-imports` checks the same contract, but a contract checker that skipped imports
inside functions could be met by hiding an import in one: this test counts them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "hrpose"
#: where lazy imports are the rule (start-up time of the command line): left out of the cycle check
LAZY_OK = ("hrpose.commands", "hrpose.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The hrpose modules `name` imports anywhere in its file (module level, functions, TYPE_CHECKING blocks)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule where there is one, else a name of pkg
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import hrpose.models.weights as W` -> that module
                target = target.rpartition(".")[0]
            if target.startswith("hrpose") and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `g` (a list of modules, first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def layers() -> list[list[str]]:
    """The layers contract of pyproject.toml, top first: each layer a list of sibling units (`|` or `:`)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    assert contract["containers"] == ["hrpose"]
    return [[f"hrpose.{u.strip()}" for u in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def unit_of(module: str, units: set[str]) -> str | None:
    while module and module not in units:
        module = module.rpartition(".")[0]
    return module or None


def test_the_graph_reads_imports_inside_functions():
    """The reader sees a function-local import (what a contract met by hiding imports would miss)."""
    g = graph()
    assert "hrpose.runtime.onnx_cache" in g and "hrpose.zoo" in g["hrpose.runtime.onnx_cache"]  # in cache_dir()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_outside_the_command_line():
    g = {n: {m for m in deps if not m.startswith(LAZY_OK)} for n, deps in graph().items() if not n.startswith(LAZY_OK)}
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_layers_contract_names_every_subpackage_and_top_level_module():
    named = {u for layer in layers() for u in layer}
    top = {m for m in modules() if m.count(".") == 1}  # hrpose.<subpackage or module>
    assert named == top, f"not in the contract: {sorted(top - named)}; not in the package: {sorted(named - top)}"


@pytest.mark.parametrize("lazy_too", [True])
def test_every_import_goes_down_the_layers(lazy_too):
    order = layers()
    units = {u for layer in order for u in layer}
    rank = {u: i for i, layer in enumerate(order) for u in layer}
    independent = {u: set(layer) - {u} for layer, text in zip(order, _raw_layers()) if "|" in text for u in layer}
    wrong = []
    for module, deps in graph().items():
        a = unit_of(module, units)
        for dep in deps:
            b = unit_of(dep, units)
            if a is None or b is None or a == b:
                continue
            if rank[b] < rank[a] or b in independent.get(a, ()):
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports up (or across independent siblings of) the layers: " + ", ".join(sorted(wrong))


def _raw_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
