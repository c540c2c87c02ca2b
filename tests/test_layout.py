"""The package's layout rules (issue 11): short modules, no import cycle, no private name imported across modules,
one import style, and an ``__all__`` in every subpackage. ``python tests/test_layout.py`` prints the import graph."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ddsm"
MAX_LINES = 400


def _modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its ``__init__``)."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, modules: Dict[str, Path]) -> List[Tuple[str, List[str], int, bool]]:
    """(target module, imported names, line, relative?) for every import of ``ddsm`` code in one module, function-level
    imports included. ``from .pkg import mod`` counts as an import of the module ``pkg.mod``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno, False) for a in node.names if a.name.split(".")[0] == "ddsm"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "ddsm":
                target = node.module
            else:
                continue
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if subs:
                out += [(s, [], node.lineno, bool(node.level)) for s in subs]
                names = [n for n in names if f"{target}.{n}" not in modules]
            if names or not subs:
                out.append((target, names, node.lineno, bool(node.level)))
    return out


def import_graph() -> Dict[str, Set[str]]:
    modules = _modules()
    return {m: {t for t, *_ in _imports(m, f, modules) if t in modules and t != m} for m, f in modules.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a list of modules (first == last), or [] when the graph is acyclic."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> List[str]:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                cycle = visit(t)
                if cycle:
                    return cycle
        state[m] = 2
        stack.pop()
        return []

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return []


def test_no_module_is_too_long():
    long = {m: n for m, f in _modules().items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_imported_across_modules():
    modules = _modules()
    bad = [f"{m}:{line} imports {n} from {t}" for m, f in modules.items()
           for t, names, line, _ in _imports(m, f, modules) for n in names
           if n.startswith("_") and n != "__version__"]
    assert not bad, "\n".join(bad)


def test_one_import_style_inside_the_package():
    modules = _modules()
    absolute = [f"{m}:{line} imports {t} absolutely" for m, f in modules.items()
                for t, _, line, rel in _imports(m, f, modules) if not rel]
    assert not absolute, "use relative imports inside ddsm:\n" + "\n".join(absolute)


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_every_subpackage_lists_its_public_names(package):
    import importlib

    mod = importlib.import_module(f"ddsm.{package}")
    public = getattr(mod, "__all__", None)
    assert public, f"ddsm/{package}/__init__.py has no __all__"
    missing = [n for n in public if not hasattr(mod, n)]
    assert not missing, f"ddsm.{package}.__all__ names what it does not define: {missing}"


if __name__ == "__main__":
    graph = import_graph()
    for m in sorted(graph):
        print(f"{m} -> {', '.join(sorted(graph[m])) or '-'}")
    cycle = find_cycle(graph)
    print("cycle: " + " -> ".join(cycle) if cycle else "no import cycle")
    sys.exit(1 if cycle else 0)


def test_script_flags_import_no_torch_so_help_answers_at_once():
    """Every script builds its parser from ddsm.cli before it parses; that must not pull in torch or diffusers
    (``ddsm`` imports its public names on first use), and its StepSaver default must stay the library's."""
    import subprocess
    import sys

    code = ("import sys, ddsm.cli; heavy = [m for m in ('torch', 'diffusers') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import ddsm.cli imported {out}"
    from ddsm.baselines import DEFAULT_CANDIDATES
    from ddsm.cli import STEPSAVER_CANDIDATES

    assert tuple(STEPSAVER_CANDIDATES) == tuple(DEFAULT_CANDIDATES)
