"""The code's layout: no import circles, in the library or among the benchmarks (a module that two
others need lives in a third that both import), and the reference holds no compiler plumbing."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def library_imports(path: Path) -> set[str]:
    """The snn_triton modules `path` imports anywhere in it (function-local imports included)."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if node.module:
                found.add(".".join(base + tuple(node.module.split("."))))
            else:  # from . import x
                found.update(".".join(base + (alias.name,)) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("snn_triton."):
            found.add(node.module)
    return found


def bench_imports(path: Path, siblings: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in siblings)
        elif isinstance(node, ast.ImportFrom) and node.module in siblings:
            found.add(node.module)
    return found


def find_cycle(graph: dict[str, set[str]]):
    """A list of modules that import each other in a circle, or None."""
    state, stack = {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[name] = "done"
        stack.pop()
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_library_has_no_import_circle():
    files = sorted((REPO / "snn_triton").rglob("*.py"))
    names = {module_name(p) for p in files}
    # `from . import kernels` inside snn_triton/ names the package; an edge to a package is one to its __init__
    graph = {module_name(p): {m for m in library_imports(p) if m in names} - {module_name(p)} for p in files}
    # a package's __init__ imports its own modules: those edges are how a package is built, not a circle
    for package in [n for n in names if (REPO / n.replace(".", "/") / "__init__.py").exists()]:
        graph[package] = {m for m in graph[package] if not m.startswith(package + ".")}
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_benchmarks_have_no_import_circle():
    files = sorted((REPO / "bench").glob("*.py"))
    siblings = {p.stem for p in files}
    graph = {p.stem: bench_imports(p, siblings) - {p.stem} for p in files}
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("module", ["reference.py", "surrogate.py"])
def test_the_math_imports_nothing_of_the_compiler(module):
    source = (REPO / "snn_triton" / module).read_text()
    assert "torch._inductor" not in source and "torch._dynamo" not in source
