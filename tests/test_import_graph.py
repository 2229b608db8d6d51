"""No dependency cycle: the import graph of host/, python/ and sim/, and the C dependency graph of
usermod/. Each cycle found is printed as a path, each step with where it comes from.

Python: every import statement counts, at module level or inside a function, a try or an if
(found with ast). Relative imports are resolved against the importing file's package; `from P
import n` is an edge to the submodule P.n when there is one, else to P itself (a name defined in
P's __init__.py). Names are looked up as the interpreter would, along a search path: the PC's
(host/, sim/) and the simulated device's under each runtime (mpota.simdev.device_path: its
modules, espsim, the ota package). An import of a standard library name is the platform's, not
an edge: the simulator's modules that shadow one (sim/espsim/modules/mp/os.py, ...) wrap the
interpreter's own, which they import under their own name.

C: a .c file and its .h are one node; X depends on Y when X (its .c or .h) includes a header of
usermod/ that declares a function defined in Y.c, or calls a function defined in Y.c (static
functions are their file's own)."""

from __future__ import annotations

import ast
import functools
import re
import sys
from collections import defaultdict, deque
from pathlib import Path

import pytest
from conftest import ROOT
from mpota import simdev

# -- cycles ----------------------------------------------------------------------------------


def find_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The cycles of the graph (node -> {successor: why}), each a path [a, b, ..., a]: in each
    strongly connected component (Tarjan's algorithm, iterative), the shortest cycle through
    each of its nodes. Sorted, each cycle from its smallest node."""
    nodes = sorted(set(graph) | {m for succ in graph.values() for m in succ})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    scc = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        scc.append(w)
                        if w == v:
                            break
                    if len(scc) > 1 or v in graph.get(v, ()):
                        sccs.append(set(scc))
    cycles = set()
    for scc in sccs:
        for start in sorted(scc):
            cycle = _shortest_cycle(graph, scc, start)
            i = cycle.index(min(cycle))  # each cycle once, from its smallest node
            cycles.add(tuple(cycle[i:-1] + cycle[:i] + [cycle[i]]))
    return sorted(map(list, cycles))


def _shortest_cycle(graph, scc, start):
    """The shortest way from `start` back to it within its component (breadth first)."""
    prev: dict[str, str | None] = {start: None}
    queue = deque([start])
    while True:
        v = queue.popleft()
        if start in graph.get(v, ()):
            break
        for w in sorted(graph.get(v, ())):
            if w in scc and w not in prev:
                prev[w] = v
                queue.append(w)
    path = [v]
    while prev[path[-1]] is not None:
        path.append(prev[path[-1]])
    return [*reversed(path), start]


def describe(cycle: list[str], graph: dict[str, dict[str, str]]) -> str:
    steps = [cycle[0]]
    for a, b in zip(cycle, cycle[1:], strict=False):
        steps.append(f"-> {b}   [{graph[a][b]}]")
    return "\n      ".join(steps)


# -- Python ----------------------------------------------------------------------------------

PY_TREES = ("host", "python", "sim")


def py_files() -> list[Path]:
    return sorted(p for t in PY_TREES for p in (ROOT / t).rglob("*.py"))


def search_paths() -> dict[str, list[Path]]:
    """The module search path of each place the code runs."""
    paths = {"pc": [ROOT / "host", ROOT / "sim"]}
    for rt in simdev.RUNTIMES:
        paths["device " + rt] = [Path(p) for p in simdev.device_path(rt)]
    return paths


def module_of(path: Path, roots: list[Path]) -> str | None:
    """The module name of `path` along the search path `roots` (None: not importable there, or
    hidden by a file of the same name earlier on the path)."""
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        # Every directory on the way must be a package.
        if not parts or any(
            not (root.joinpath(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))
        ):
            continue
        name = ".".join(parts)
        return name if find_module(name, roots) == path else None
    return None


def find_module(name: str, roots: list[Path]) -> Path | None:
    parts = name.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.exists() and all(
                (root.joinpath(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))
            ):
                return cand
        if (root / parts[0]).is_dir() or (root / (parts[0] + ".py")).exists():
            return None  # the first root that has the top-level name is the one imported
    return None


def imports(path: Path, module: str) -> list[tuple[str, str | None, int]]:
    """(module, name or None, line) of each import in the file: absolute module names."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                up = node.level - 1
                if up > len(parts) or (up == len(parts) and not node.module):
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond the top")
                base = parts[: len(parts) - up]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out += [(mod, a.name, node.lineno) for a in node.names]
    return out


def py_graph(files: list[Path], roots: list[Path], top: Path) -> dict[str, dict[str, str]]:
    """The import graph of `files` on the search path `roots`: file -> {file: 'file:line'}
    (names relative to `top`)."""
    stdlib = set(sys.stdlib_module_names)
    graph: dict[str, dict[str, str]] = {}
    for path in files:
        module = module_of(path, roots)
        if module is None:
            continue
        src = str(path.relative_to(top))
        edges = graph.setdefault(src, {})
        for mod, name, line in imports(path, module):
            if mod.split(".")[0] in stdlib:
                continue
            target = None
            if name and name != "*":
                target = find_module(mod + "." + name, roots)
            target = target or find_module(mod, roots)
            if target is None or target == path:
                continue  # not ours (an installed package, the firmware's), or a shadowed name
            edges.setdefault(str(target.relative_to(top)), f"{src}:{line}")
    return graph


@functools.cache
def python_cycles() -> dict[str, tuple[list[str], str]]:
    """Each cycle (as its text) -> (its files, where: the search paths that have it)."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    for where, roots in search_paths().items():
        graph = py_graph(py_files(), roots, ROOT)
        for c in find_cycles(graph):
            text = describe(c, graph)
            found.setdefault(text, (c, []))[1].append(where)
    return {t: (c, ", ".join(w)) for t, (c, w) in found.items()}


@pytest.mark.parametrize("tree", PY_TREES)
def test_no_python_import_cycle(tree):
    every = set()
    for roots in search_paths().values():
        every |= set(py_graph(py_files(), roots, ROOT))
    mine = {str(p.relative_to(ROOT)) for p in py_files() if p.parts[len(ROOT.parts)] == tree}
    assert mine <= every, f"files no search path imports: {sorted(mine - every)}"
    cycles = [
        f"  ({where})\n      {text}"
        for text, (files, where) in python_cycles().items()
        if any(f.startswith(tree + "/") for f in files)
    ]
    assert not cycles, f"import cycles through {tree}/:\n" + "\n".join(cycles)


# -- C ---------------------------------------------------------------------------------------

C_TREE = ROOT / "usermod"
_COMMENT_OR_STRING = re.compile(
    r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.S
)
_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
_DIRECTIVE = re.compile(r"^\s*#(?:[^\n]*\\\n)*[^\n]*", re.M)
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "defined", "__has_include"}


def _strip(text: str) -> str:
    return _COMMENT_OR_STRING.sub(lambda m: " " if m.group(0)[0] in "/" else '""', text)


def definitions(code: str) -> dict[str, bool]:
    """Functions defined in C source (comments, strings and directives stripped): name ->
    static."""
    code = _DIRECTIVE.sub("", code)
    out = {}
    depth = 0
    i = 0
    decl_start = 0
    n = len(code)
    while i < n:
        c = code[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                decl_start = i + 1
        elif c == ";" and depth == 0:
            decl_start = i + 1
        elif depth == 0 and (c.isalpha() or c == "_"):
            m = re.compile(r"[A-Za-z_]\w*").match(code, i)
            name = m.group(0)
            j = m.end()
            while j < n and code[j].isspace():
                j += 1
            if j < n and code[j] == "(" and name not in _KEYWORDS:
                k, level = j, 0
                while k < n:
                    level += {"(": 1, ")": -1}.get(code[k], 0)
                    if level == 0:
                        break
                    k += 1
                rest = code[k + 1 :].lstrip()
                if rest.startswith("{"):
                    out[name] = bool(re.search(r"\bstatic\b", code[decl_start:i]))
                i = k + 1
                continue
            i = m.end()
            continue
        i += 1
    return out


def c_graph(tree: Path) -> dict[str, dict[str, str]]:
    """node ('dir/stem' of a .c and its .h) -> {node: why}."""
    files = sorted(p for p in tree.rglob("*") if p.suffix in (".c", ".h"))
    text = {p: _strip(p.read_text(errors="replace")) for p in files}
    headers = defaultdict(list)
    for p in files:
        if p.suffix == ".h":
            headers[p.name].append(p)
    defined: dict[str, set[str]] = defaultdict(set)  # function -> nodes that define it
    statics: dict[str, set[str]] = defaultdict(set)  # node -> its static functions

    def node(p: Path) -> str:
        return str(p.with_suffix("").relative_to(tree))

    for p in files:
        if p.suffix == ".c":
            for name, static in definitions(text[p]).items():
                (statics[node(p)].add(name) if static else defined[name].add(node(p)))
    graph: dict[str, dict[str, str]] = {}
    for p in files:
        me = node(p)
        if p.suffix == ".h" and not p.with_suffix(".c").exists():
            continue  # a header alone is no node: its includers depend on what it declares
        edges = graph.setdefault(me, {})
        for inc in _INCLUDE.findall(p.read_text(errors="replace")):
            cands = headers.get(Path(inc).name, [])
            cands = [h for h in cands if h.parent == p.parent] or cands
            for h in cands:
                for name in sorted(set(_CALL.findall(_DIRECTIVE.sub("", text[h])))):
                    for other in sorted(defined.get(name, ())):
                        if other != me:
                            edges.setdefault(
                                other,
                                f"{p.relative_to(tree)} includes {h.name}, "
                                f"which declares {name}()",
                            )
        for name in sorted(set(_CALL.findall(_INCLUDE.sub("", text[p])))):
            if name in statics[me]:
                continue
            for other in sorted(defined.get(name, ())):
                if other != me:
                    edges.setdefault(other, f"{p.relative_to(tree)} calls {name}()")
    return graph


def test_no_c_dependency_cycle():
    graph = c_graph(C_TREE)
    assert len(graph) >= 5, graph  # the files were found
    cycles = [describe(c, graph) for c in find_cycles(graph)]
    assert not cycles, "dependency cycles in usermod/:\n      " + "\n      ".join(cycles)


# -- the checks can fail ---------------------------------------------------------------------


def test_find_cycles_on_synthetic_graphs():
    assert find_cycles({"a": {"b": ""}, "b": {"c": ""}, "c": {}}) == []
    g = {"a": {"b": ""}, "b": {"c": "", "d": ""}, "c": {"a": ""}, "d": {}, "e": {"e": ""}}
    assert find_cycles(g) == [["a", "b", "c", "a"], ["e", "e"]]
    g = {"x": {"y": "x.py:3"}, "y": {"x": "y.py:9"}}
    assert describe(find_cycles(g)[0], g) == "x\n      -> y   [x.py:3]\n      -> x   [y.py:9]"


def test_python_graph_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def ready():\n    from . import a\n")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    try:\n        from pkg import ready\n    except E:\n"
                              "        pass\n")  # fmt: skip
    (pkg / "c.py").write_text("import os\nimport pkg.b\n")
    graph = py_graph(sorted(pkg.glob("*.py")), [tmp_path], tmp_path)
    assert graph["pkg/c.py"] == {"pkg/b.py": "pkg/c.py:2"}  # os: the platform's
    assert find_cycles(graph) == [["pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/__init__.py"]]


def test_c_graph_sees_includes_and_calls(tmp_path):
    (tmp_path / "x.h").write_text("int x_get(void);\n")
    (tmp_path / "x.c").write_text(
        '#include "y.h"\n/* y_put(1) */\nint x_get(void) { return y_put(1); }\n'
    )
    (tmp_path / "y.h").write_text("int y_put(int v);\n")
    (tmp_path / "y.c").write_text("static int helper(int v) { return v; }\nint y_put(int v) {\n"
                                  "    return helper(v) + x_get();\n}\n")  # fmt: skip
    (tmp_path / "z.c").write_text("static int x_get(void) { return 0; }\nint z(void) "
                                  "{ return x_get(); }\n")  # fmt: skip
    graph = c_graph(tmp_path)
    assert graph["x"] == {"y": "x.c includes y.h, which declares y_put()"}
    assert graph["y"] == {"x": "y.c calls x_get()"}
    assert graph["z"] == {}  # its own static x_get
    assert find_cycles(graph) == [["x", "y", "x"]]
