"""The import graph of ``crlm``, read statically from the source: no circles, deferred imports explained.

Every ``import crlm...`` / ``from crlm... import ...`` (and relative import) is an edge from the importing
module to the imported one, wherever it stands: at module level, inside a function, under ``if
TYPE_CHECKING`` (a type-only import still says the lower layer knows the upper one). Importing
``crlm.a.b`` from outside ``crlm.a`` also runs ``crlm/a/__init__.py``: that is an edge too (the circle
``scores -> cohort.base`` -> ``cohort/__init__`` -> ``cohort.simulate`` -> ... -> ``scores`` hid there). A
circle among these edges is a circle of the design, even when deferring an import hides it at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = "crlm"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(target: str, known: set[str]) -> str | None:
    """The module an imported dotted name lives in (``crlm.scores.SCORES`` -> ``crlm.scores``)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def _initialised_by(target: str, importer: str, known: set[str]) -> list[str]:
    """What importing ``target`` from ``importer`` runs: the target and every package ``__init__`` above it
    that the importer is not itself inside (those are initialised already when the importer runs)."""
    chain = [target]
    parent = target.rpartition(".")[0]
    while parent:
        chain.append(parent)
        parent = parent.rpartition(".")[0]
    return [m for m in chain if m in known and m != importer and not importer.startswith(m + ".")]


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, ast.stmt, bool]]:
    """(imported crlm module, the statement, whether it stands inside a function) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                targets = [f"{prefix}.{alias.name}" for alias in child.names]
            else:
                visit(child, nested)
                continue
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    resolved = _resolve(target, known)
                    for module in _initialised_by(resolved, name, known) if resolved else ():
                        found.append((module, child, in_function))
    visit(tree, False)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, _, _ in imports_of(name, path, known):
            graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one circle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
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
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_circle_through(graph, comp) for comp in components]


def _circle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete circle inside a strongly connected component, for a readable failure message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    frontier = [(start, [start])]
    while frontier:
        node, path = frontier.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                frontier.append((nxt, path + [nxt]))
    return component


def test_the_graph_sees_module_level_and_deferred_imports():
    graph = import_graph()
    assert "crlm.cohort.base" in graph["crlm.cohort.loader"]        # a module-level import
    assert "crlm.cohort.loader" in graph["crlm.cohort"]             # a package re-export
    assert "crlm.cohort" in graph["crlm.scores"]                    # cohort.base from outside runs cohort/__init__
    assert "crlm.cohort" not in graph["crlm.cohort.loader"]         # ... but not from inside the package
    assert "crlm.training" in graph["crlm.cli_output"]              # a deferred import counts
    assert len(graph) == len(modules()) > 50


def test_find_cycles_names_a_circle_and_passes_a_tree():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    (circle,) = find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert circle[0] == circle[-1] and set(circle) == {"a", "b", "c"}


def test_no_import_circle_inside_crlm():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def unexplained_deferred_imports(source: str) -> list[int]:
    """Lines of imports inside functions that say nothing about why they are deferred.

    An import is explained by a comment on its own line or on the line above it; a run of imports directly
    below an explained one (blank lines between allowed) shares its comment.
    """
    lines = source.splitlines()
    tree = ast.parse(source)
    nodes = sorted({node.lineno: node for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}.values(),
                   key=lambda node: node.lineno)
    explained_ends: set[int] = set()  # last line (1-based) of every explained deferred import
    silent = []
    for node in nodes:
        above = node.lineno - 1
        while above >= 1 and not lines[above - 1].strip():
            above -= 1
        ok = ("#" in "".join(lines[node.lineno - 1: node.end_lineno])
              or (above >= 1 and lines[above - 1].strip().startswith("#") and above == node.lineno - 1)
              or above in explained_ends)
        if ok:
            explained_ends.add(node.end_lineno)
        else:
            silent.append(node.lineno)
    return silent


def test_the_comment_rule_reads_runs_of_imports():
    source = ("def f():\n    # deferred: heavy\n    import a\n\n    from b import c\n    return a\n\n"
              "def g():\n    import d\n    x = 1\n    import e  # why\n    import f\n")
    assert unexplained_deferred_imports(source) == [9]


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_deferred_import_says_why(name):
    path = modules()[name]
    silent = [f"{path.relative_to(SRC)}:{line}: {path.read_text().splitlines()[line - 1].strip()}"
              for line in unexplained_deferred_imports(path.read_text())]
    assert not silent, "deferred imports without a comment saying why:\n" + "\n".join(silent)
