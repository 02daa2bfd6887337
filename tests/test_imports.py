"""The module graph of llmzip/ has no circle, and the torch-free modules stay torch-free.

Every ``import`` and ``from ... import`` statement counts, inside functions too (a lazy
import is still a dependency, only a hidden one): an edge goes from the importing module to
the module it names, to a submodule named in ``from package import name``, and to every
package above them that the importer is not itself inside (importing ``llmzip.kinds.base``
from outside runs ``llmzip/kinds/__init__.py``). docs/DESIGN.md says what may import what.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llmzip"


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: modules it imports} for every .py under ``package`` (names like ``llmzip.kinds.lm``)."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        files[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph = {}
    for module, (path, is_package) in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importer's package up
                    anchor = module if is_package else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in files)
        edges = set()
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                name = ".".join(parts[:end])
                if name in files and name != module and not module.startswith(name + "."):
                    edges.add(name)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle():
    assert cycles(module_graph()) == []


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    """So that the test above has teeth: a lazy import that closes a circle is found; a
    package whose __init__ imports its submodules, which import their siblings through it,
    is not a circle (Python has the package in hand by then)."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\nimport pkg.sub.c\n")
    (package / "b.py").write_text("def f():\n    from . import a\n")
    (package / "sub" / "__init__.py").write_text("from pkg.sub import c, d\n")
    (package / "sub" / "c.py").write_text("from pkg.sub import d\n")
    (package / "sub" / "d.py").write_text("import os\n")
    graph = module_graph(package)
    assert graph["pkg.a"] == {"pkg.b", "pkg.sub", "pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.sub.d"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_wire_is_a_leaf():
    """llmzip.wire imports nothing of llmzip but the errors; the kinds import neither the
    container nor the codec nor the training forms."""
    graph = module_graph()
    assert graph["llmzip.wire"] <= {"llmzip.errors"}
    for module, imported in graph.items():
        if module.startswith("llmzip.kinds"):
            assert not imported & {"llmzip.container", "llmzip.codec", "llmzip.forms", "llmzip.train"}, module


@pytest.mark.parametrize("module", ["llmzip", "llmzip.container", "llmzip.wire", "llmzip.kinds", "llmzip.corrections",
                                    "llmzip.identity", "llmzip.config"])
def test_torch_free_modules_do_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
