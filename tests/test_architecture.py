"""
The layers of C{docs/architecture.rst}, checked on the source.

The import graph of the C{midjobs} package is read from the code with
L{ast}: every C{import} and C{from ... import}, absolute or relative, at
module level, under C{if TYPE_CHECKING:} or inside a function alike, since
each is a dependency a reader has to follow.  Then:

  - no two modules import each other, directly or around a cycle;
  - no module imports a module of a higher layer;
  - the client (L{APART}) imports nothing of the daemon above the layers it
    shares, and no module of the daemon imports it;
  - every module is in a layer, so a new one cannot slip past.

The layers are read from C{docs/architecture.rst} (L{documented}): the page
is the table.  A module is in the layer of the longest prefix that names it
or a package that holds it; a tree apart (the client) may import the layers
its section says, and nothing of the daemon imports it.

The checker is tried first on small packages made in C{tmp_path}, so it is
shown to find what it should independently of the tree.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "midjobs"
ARCHITECTURE = ROOT / "docs" / "architecture.rst"

class Import(NamedTuple):
    """
    One import of one module of the package by another.

    @ivar source: the importing module's dotted name.
    @ivar target: the imported module's dotted name.
    @ivar where: C{path:line} of the import statement.
    """

    source: str
    target: str
    where: str


def _modules(root: Path, package: str) -> dict[str, Path]:
    """
    Every module of C{package} (a directory under C{root}) by dotted name;
    a package's C{__init__.py} is the package itself.
    """
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Mapping[str, Path]) -> Iterable[str]:
    """
    The modules of the package that C{node}, in C{module}, imports: for
    C{from X import name}, X.name when that is a module, else X.
    """

    def known(name: str) -> str | None:
        # import a.b.c names a.b.c, or the deepest package of it we have.
        parts = name.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    if isinstance(node, ast.Import):
        for alias in node.names:
            target = known(alias.name)
            if target is not None:
                yield target
        return
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        if submodule in modules:
            yield submodule
        else:
            target = known(origin)
            if target is not None:
                yield target


def import_graph(root: Path, package: str) -> tuple[list[str], list[Import]]:
    """
    The modules of C{package} under C{root}, and every import of one by
    another, wherever the statement is (C{TYPE_CHECKING}, a function).
    """
    modules = _modules(root, package)
    imports: dict[Import, None] = {}  # each once, in the order of the source
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(root)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, module, path.name == "__init__.py", modules):
                    if target != module:
                        imports[Import(module, target, f"{where}:{node.lineno}")] = None
    return list(modules), list(imports)


def _strongly_connected(modules: list[str], imports: list[Import]) -> list[list[str]]:
    """
    Tarjan's strongly connected components of more than one module.
    """
    edges: dict[str, list[str]] = {m: [] for m in modules}
    for i in imports:
        edges[i.source].append(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in modules:
        if v not in index:
            visit(v)
    return sorted(components)


def cycles(modules: list[str], imports: list[Import]) -> list[tuple[list[Import], list[str]]]:
    """
    One import cycle in each group of modules that import each other: the
    shortest from the group's first module (by name) back to it, as the
    imports that make it, and the whole group.
    """
    found = []
    for component in _strongly_connected(modules, imports):
        members = set(component)
        inner = [i for i in imports if i.source in members and i.target in members]
        start = component[0]
        # Breadth first from start, back to start.
        came_by: dict[str, Import] = {}
        frontier = [start]
        while frontier and start not in came_by:
            following = []
            for v in frontier:
                for i in inner:
                    if i.source == v and i.target not in came_by:
                        came_by[i.target] = i
                        following.append(i.target)
            frontier = following
        path = [came_by[start]]
        while path[0].source != start:
            path.insert(0, came_by[path[0].source])
        found.append((path, component))
    return found


def layer(module: str, layers: Mapping[str, int]) -> int | None:
    """
    The rank of C{module}: that of the longest prefix of L{LAYERS} naming it
    or a package holding it, or L{None}.
    """
    best: tuple[int, int] | None = None
    for prefix, rank in layers.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > best[0]:
                best = (len(prefix), rank)
    return None if best is None else best[1]


def unassigned(modules: list[str], layers: Mapping[str, int], apart: Mapping[str, int]) -> list[str]:
    """
    The modules that are in no layer and in no tree apart.
    """
    return [m for m in modules if layer(m, layers) is None and layer(m, apart) is None]


def upward(imports: list[Import], layers: Mapping[str, int], apart: Mapping[str, int]) -> list[str]:
    """
    Each import that breaks the layering, as C{path:line: what is wrong}.
    """
    wrong = []
    for i in imports:
        source_tree = next((t for t in apart if layer(i.source, {t: 0}) is not None), None)
        target_tree = next((t for t in apart if layer(i.target, {t: 0}) is not None), None)
        if source_tree == target_tree and source_tree is not None:
            continue
        if target_tree is not None:
            wrong.append(f"{i.where}: {i.source} imports {i.target}, of {target_tree}, which stands apart")
            continue
        target_rank = layer(i.target, layers)
        if target_rank is None:
            continue  # reported by unassigned()
        if source_tree is not None:
            ceiling = apart[source_tree]
            if target_rank > ceiling:
                wrong.append(
                    f"{i.where}: {i.source} (apart, up to layer {ceiling}) imports {i.target} (layer {target_rank})"
                )
            continue
        source_rank = layer(i.source, layers)
        if source_rank is not None and target_rank > source_rank:
            wrong.append(f"{i.where}: {i.source} (layer {source_rank}) imports {i.target} (layer {target_rank})")
    return wrong


def _describe(cycle: tuple[list[Import], list[str]]) -> str:
    path, group = cycle
    text = " -> ".join([path[0].source] + [f"{i.target} ({i.where})" for i in path])
    if len(group) > len(path):
        text += f"; in all, these {len(group)} import each other: {', '.join(group)}"
    return text


_SECTION = re.compile(r"^(?P<title>\S[^\n]*)\n(?P<rule>[=]+)\n", re.MULTILINE)
_MODULES = re.compile(r"^:modules:(?P<list>.*(?:\n[ \t]+.*)*)", re.MULTILINE)
_MODULE = re.compile(r":mod:`([\w.]+)`")
_LAYER_TITLE = re.compile(r"Layer (\d+)\b")
_APART_RULE = re.compile(r"^:imports: layers 0 to (\d+)", re.MULTILINE)


def documented(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """
    The layer table and the trees apart that C{docs/architecture.rst} gives:
    the C{:modules:} of each section titled C{Layer N: ...}, and of each
    section with an C{:imports: layers 0 to N} field.
    """
    layers: dict[str, int] = {}
    apart: dict[str, int] = {}
    sections = list(_SECTION.finditer(text))
    for n, section in enumerate(sections):
        end = sections[n + 1].start() if n + 1 < len(sections) else len(text)
        body = text[section.end() : end]
        listed = [name for m in _MODULES.finditer(body) for name in _MODULE.findall(m.group("list"))]
        title = _LAYER_TITLE.match(section.group("title"))
        rule = _APART_RULE.search(body)
        if title is not None:
            layers.update((name, int(title.group(1))) for name in listed)
        elif rule is not None:
            apart.update((name, int(rule.group(1))) for name in listed)
    return layers, apart


# The checker, on small packages made for it.


def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_graph_reads_every_kind_of_import(tmp_path: Path) -> None:
    """
    Absolute and relative imports, of a module or of a name in it, at module
    level, under C{TYPE_CHECKING} and inside a function, all count; imports
    from outside the package do not.
    """
    root = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\nimport os\n",
            "pkg/b.py": "from . import c\nfrom .sub import thing\n",
            "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.d import D\n",
            "pkg/sub/__init__.py": "thing = 1\n",
            "pkg/sub/d.py": "def f():\n    from ..a import x\n    from .. import c\n",
        },
    )
    modules, imports = import_graph(root, "pkg")
    assert sorted(modules) == ["pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d"]
    assert sorted(imports) == [
        Import("pkg.a", "pkg.b", "pkg/a.py:1"),
        Import("pkg.b", "pkg.c", "pkg/b.py:1"),
        Import("pkg.b", "pkg.sub", "pkg/b.py:2"),
        Import("pkg.c", "pkg.sub.d", "pkg/c.py:3"),
        Import("pkg.sub.d", "pkg.a", "pkg/sub/d.py:2"),
        Import("pkg.sub.d", "pkg.c", "pkg/sub/d.py:3"),
    ]


def test_checker_finds_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """
    A low module that imports a high one inside a function, which imports
    it back, is a cycle and an upward import; both are reported with where
    they are.
    """
    root = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": "def later():\n    from .high import H\n",
            "pkg/high.py": "from .low import later\n",
            "pkg/ok.py": "from .low import later\n",
        },
    )
    layers = {"pkg": 0, "pkg.low": 0, "pkg.ok": 1, "pkg.high": 1}
    modules, imports = import_graph(root, "pkg")
    assert [_describe(c) for c in cycles(modules, imports)] == [
        "pkg.high -> pkg.low (pkg/high.py:1) -> pkg.high (pkg/low.py:2)"
    ]
    assert upward(imports, layers, {}) == ["pkg/low.py:2: pkg.low (layer 0) imports pkg.high (layer 1)"]
    assert unassigned(modules, layers, {}) == []


def test_checker_keeps_a_tree_apart(tmp_path: Path) -> None:
    """
    A tree apart may import the layers up to its ceiling, not above; nothing
    outside it imports it; a module in no layer is reported.  (C{pkg} is a
    namespace package, as C{midjobs} is.)
    """
    root = _package(
        tmp_path,
        {
            "pkg/base.py": "",
            "pkg/core.py": "from pkg.client import Client\n",
            "pkg/new.py": "",
            "pkg/client/__init__.py": "from ._impl import Client\n",
            "pkg/client/_impl.py": "from ..base import x\nfrom ..core import y\n",
        },
    )
    layers = {"pkg.base": 0, "pkg.core": 1}
    modules, imports = import_graph(root, "pkg")
    assert upward(imports, layers, {"pkg.client": 0}) == [
        "pkg/client/_impl.py:2: pkg.client._impl (apart, up to layer 0) imports pkg.core (layer 1)",
        "pkg/core.py:1: pkg.core imports pkg.client, of pkg.client, which stands apart",
    ]
    assert unassigned(modules, layers, {"pkg.client": 0}) == ["pkg.new"]


def test_documented_table_is_read_from_sections() -> None:
    """
    L{documented} reads the C{:modules:} of C{Layer N} sections and of the
    sections apart, and nothing else.
    """
    text = """\
Title
#####

Intro :mod:`pkg.not_a_layer`.

Layer 0: base
=============

:modules: :mod:`pkg.a`,
   :mod:`pkg.b`

Text :mod:`pkg.mentioned`.

Layer 1: top
============

:modules: :mod:`pkg.c`

The client
==========

:modules: :mod:`pkg.client`
:imports: layers 0 to 0
"""
    assert documented(text) == ({"pkg.a": 0, "pkg.b": 0, "pkg.c": 1}, {"pkg.client": 0})


# The package as it is.


#: Module prefix -> layer rank, and trees apart -> the highest layer they may import.
LAYERS, APART = documented(ARCHITECTURE.read_text())


@pytest.fixture(scope="module")
def graph() -> tuple[list[str], list[Import]]:
    return import_graph(ROOT, PACKAGE)


def test_the_page_lists_layers() -> None:
    """
    C{docs/architecture.rst} gives the eight layers, bottom to top, and the client apart.
    """
    layers, apart = LAYERS, APART
    assert sorted(set(layers.values())) == list(range(8))
    assert apart == {"midjobs.client": 1}


def test_every_module_has_a_layer(graph: tuple[list[str], list[Import]]) -> None:
    modules, _ = graph
    missing = unassigned(modules, LAYERS, APART)
    assert not missing, "in no layer of docs/architecture.rst:\n" + "\n".join(missing)


def test_no_import_cycles(graph: tuple[list[str], list[Import]]) -> None:
    found = [_describe(c) for c in cycles(*graph)]
    assert not found, "import cycles:\n" + "\n".join(found)


def test_no_upward_imports(graph: tuple[list[str], list[Import]]) -> None:
    _, imports = graph
    wrong = upward(imports, LAYERS, APART)
    assert not wrong, "imports of a higher layer:\n" + "\n".join(wrong)


_IMPORT_EACH_FIRST = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "midjobs" or m.startswith("midjobs.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
"""


def test_every_module_imports_first() -> None:
    """
    Each module can be the first of the package a program imports (a
    plugin's test starting with C{from midjobs.job import Job}): a package's
    C{__init__} importing back into a half-loaded module is a cycle the
    graph above does not see.
    """
    names = sorted(_modules(ROOT, PACKAGE))
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_FIRST, *names], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == ""
