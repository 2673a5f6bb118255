"""
The job core's layers: no module imports one of a higher layer, and no two
modules of these layers import each other, even through a chain or under
C{TYPE_CHECKING} (every C{import} statement counts).

Lowest first; a module may import its own layer and those below:

 0. C{errors}, C{wire_json}, C{logs}, C{paths}, C{interfaces}, C{decorators},
    C{log_excerpt}, C{reactor_loop}
 1. C{lifecycle} (job states and phases, the observer interfaces), C{query},
    C{pipe}, C{arguments}, C{log_files}, C{events} (the hub, wire-agnostic),
    C{transfers} (downloads waiting to begin)
 2. C{store}
 3. C{job} (L{midjobs.job.Job}, L{midjobs.job.JobsQueue}), C{job_events},
    C{progress}, C{transfer_progress}, C{drain}, C{health}, C{metrics}
 4. C{middleware}, C{access}
 5. C{service}, C{log_events}, C{rpc}, C{http._download}, C{http._health}
 6. C{plugins}
 7. C{daemon}
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "midjobs"

LAYERS: list[tuple[str, ...]] = [
    (
        "midjobs.errors",
        "midjobs.wire_json",
        "midjobs.logs",
        "midjobs.paths",
        "midjobs.interfaces",
        "midjobs.decorators",
        "midjobs.log_excerpt",
        "midjobs.reactor_loop",
    ),
    (
        "midjobs.lifecycle",
        "midjobs.query",
        "midjobs.pipe",
        "midjobs.arguments",
        "midjobs.log_files",
        "midjobs.events",
        "midjobs.transfers",
    ),
    ("midjobs.store",),
    (
        "midjobs.job",
        "midjobs.job_events",
        "midjobs.progress",
        "midjobs.transfer_progress",
        "midjobs.drain",
        "midjobs.health",
        "midjobs.metrics",
    ),
    ("midjobs.middleware", "midjobs.access"),
    ("midjobs.service", "midjobs.log_events", "midjobs.rpc", "midjobs.http._download", "midjobs.http._health"),
    ("midjobs.plugins",),
    ("midjobs.daemon",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """
    The C{midjobs} modules C{path} imports, as dotted names (a name imported
    from a package counts as the package, or the module if it is one).
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}")
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {imported for imported in found if imported.startswith("midjobs")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = {imported for imported in imports_of(path) if imported in modules and imported != name}
    return edges


def layer_of(module: str) -> int | None:
    """
    The layer of C{module}: that of the longest listed prefix.
    """
    best: tuple[int, int] | None = None
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for module, imported in graph().items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target in imported:
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    assert upward == []


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """
    The strongly connected components of more than one module (Tarjan).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_the_layered_modules_are_in_no_import_cycle() -> None:
    layered = [c for c in cycles(graph()) if any(layer_of(m) is not None for m in c)]
    assert layered == []


@pytest.mark.parametrize(
    "edges, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_a_cycle_is_found(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_modules_are_placed_by_their_longest_listed_prefix() -> None:
    assert layer_of("midjobs.store.jobs") == 2 and layer_of("midjobs.job") == 3
    assert layer_of("midjobs.http._download") == 5 and layer_of("midjobs.http._upload") is None
    assert "midjobs.job" in imports_of(PACKAGE / "drain.py")
