"""Who imports whom inside ``dkron_lab``: read from the source with ``ast``, drawn by Graphviz.

Nothing is imported or executed: every ``.py`` file of the package is parsed and its
``import``/``from ... import`` statements are sorted into three kinds:

* **eager**: at module level; runs when the module is imported (solid arrow);
* **lazy**: inside a function or method; runs on first call (dashed arrow), which is how a
  cycle is usually hidden;
* **typing**: under ``if TYPE_CHECKING:``; never runs, left out of the picture.

Two directives, for MyST pages::

    ```{dkron-importgraph}
    :level: package        (or: module; default package)
    :hide: errors, _version
    ```

    ```{dkron-importtable}
    ```

``:hide:`` leaves out modules that nearly every module imports, which only add clutter. The
graph is followed by the import cycles found (strongly connected components of the eager and
lazy arrows), whose arrows are drawn red; the table lists every module with its lines and its
imports in and out. The picture is drawn by ``sphinx.ext.graphviz``, so the build needs
Graphviz's ``dot`` (``apt-get install graphviz``). Run as a script to print the DOT text:
``python docs/_ext/importgraph.py [module|package]``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "dkron_lab"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class Import:
    source: str
    target: str
    kind: str  # "eager", "lazy" or "typing"


@dataclass(slots=True, kw_only=True)
class Module:
    name: str
    path: Path
    lines: int
    imports: list[Import] = field(default_factory=list)


# -- reading the package --------------------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def scan(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the package, with the package-internal imports of each."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        text = path.read_text("utf-8")
        modules[name] = Module(name=name, path=path, lines=text.count("\n"))
    for module in modules.values():
        tree = ast.parse(module.path.read_text("utf-8"), str(module.path))
        is_package = module.path.name == "__init__.py"
        for node, kind in _walk(tree.body, "eager"):
            for target in _targets(node, module.name, is_package, modules):
                if target != module.name:
                    module.imports.append(Import(source=module.name, target=target, kind=kind))
    return modules


def _walk(body: Iterable[ast.stmt], kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Import statements with their kind; a function body makes them lazy."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, kind
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, "typing")
            yield from _walk(node.orelse, kind)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(node.body, "lazy" if kind == "eager" else kind)
        else:
            for child_body in _bodies(node):
                yield from _walk(child_body, kind)


def _bodies(node: ast.stmt) -> Iterator[list[ast.stmt]]:
    for name in ("body", "orelse", "finalbody"):
        value = getattr(node, name, None)
        if isinstance(value, list):
            yield value
    for handler in getattr(node, "handlers", []):
        yield handler.body
    for case in getattr(node, "cases", []):
        yield case.body


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(
    node: ast.Import | ast.ImportFrom, current: str, is_package: bool, modules: dict[str, Module]
) -> Iterator[str]:
    """The package's modules a statement loads (``from pkg import mod`` names the module)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            found = _known(alias.name, modules)
            if found:
                yield found
        return
    base = node.module or ""
    if node.level:
        anchor = current.split(".")
        if not is_package:
            anchor.pop()
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
        return
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in modules else (_known(base, modules) or base)


def _known(name: str, modules: dict[str, Module]) -> str | None:
    """The nearest enclosing module of the package that exists (``a.b.c`` → ``a.b``)."""
    while name:
        if name in modules:
            return name if name.split(".")[0] == PACKAGE else None
        name = name.rpartition(".")[0]
    return None


# -- graphs ---------------------------------------------------------------------------------------


def group(name: str, level: str) -> str:
    """The node a module is drawn as: itself, or its top-level sub-package."""
    parts = name.split(".")
    if level == "package" and len(parts) > 2:
        return ".".join(parts[:2])
    return name


def edges(modules: dict[str, Module], level: str) -> dict[tuple[str, str], str]:
    """Arrows ``(from, to) → kind`` at a level; eager wins over lazy; typing is left out."""
    found: dict[tuple[str, str], str] = {}
    for module in modules.values():
        for imp in module.imports:
            if imp.kind == "typing":
                continue
            key = (group(imp.source, level), group(imp.target, level))
            if key[0] != key[1] and found.get(key) != "eager":
                found[key] = imp.kind
    return found


def cycles(arrows: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one node, each sorted.

    Two modules are in one component when each reaches the other; the graphs are small (under
    a hundred modules), so reachability from every node is cheap enough.
    """
    graph: dict[str, set[str]] = {}
    for a, b in arrows:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    reach = {node: _reachable(graph, node) for node in graph}
    components = {
        frozenset({node, *(other for other in reach[node] if node in reach[other])})
        for node in graph
    }
    return sorted(sorted(component) for component in components if len(component) > 1)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in graph[stack.pop()] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return seen


def _short(name: str) -> str:
    return name.removeprefix(PACKAGE + ".") if name != PACKAGE else PACKAGE


def _id(name: str) -> str:
    return '"' + name + '"'


def dot(modules: dict[str, Module], level: str = "package", hide: Iterable[str] = ()) -> str:
    """A Graphviz digraph; at module level each sub-package is a box around its modules.

    Dashed arrows are lazy imports; red arrows close a cycle (both ends in one cycle). Modules
    named in ``hide`` (short names, e.g. ``errors``) and modules without arrows are left out.
    """
    hidden = {f"{PACKAGE}.{name}" for name in hide}
    arrows = {
        key: kind
        for key, kind in edges(modules, level).items()
        if key[0] not in hidden and key[1] not in hidden
    }
    in_cycle = {name: i for i, component in enumerate(cycles(arrows)) for name in component}
    names = sorted({name for arrow in arrows for name in arrow})
    lines = [
        "digraph imports {",
        "  rankdir=LR; ranksep=0.5; nodesep=0.12; concentrate=true;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef2f8", color="#5b6b86",'
        ' fontname="Helvetica", fontsize=11, height=0.3];',
        '  edge [color="#7a869a", arrowsize=0.6];',
    ]
    by_package: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        is_init = name in modules and modules[name].path.name == "__init__.py"
        in_sub_package = len(parts) > 2 or (is_init and len(parts) == 2)
        package = ".".join(parts[:2]) if level == "module" and in_sub_package else ""
        by_package.setdefault(package, []).append(name)
    for package, members in by_package.items():
        indent = "    " if package else "  "
        if package:
            lines.append(f'  subgraph "cluster_{package}" {{')
            lines.append(f'    label="{_short(package)}/"; style="rounded"; color="#9aa5b8";')
            lines.append('    fontname="Helvetica"; fontsize=12;')
        for name in members:
            label = name.rsplit(".", 1)[-1] if package else _short(name)
            if package and name == package:
                label = "__init__"
            lines.append(f'{indent}{_id(name)} [label="{label}"];')
        if package:
            lines.append("  }")
    for (a, b), kind in sorted(arrows.items()):
        style = ["style=dashed"] if kind == "lazy" else []
        if a in in_cycle and in_cycle.get(a) == in_cycle.get(b):
            style.append('color="#c0392b"')
        attributes = f" [{', '.join(style)}]" if style else ""
        lines.append(f"  {_id(a)} -> {_id(b)}{attributes};")
    lines.append("}")
    return "\n".join(lines)


def table(modules: dict[str, Module]) -> list[tuple[str, int, int, int]]:
    """``(module, lines, imports out, imported by)``, runtime imports only, biggest first."""
    arrows = edges(modules, "module")
    out: dict[str, int] = {}
    into: dict[str, int] = {}
    for a, b in arrows:
        out[a] = out.get(a, 0) + 1
        into[b] = into.get(b, 0) + 1
    rows = [(n, m.lines, out.get(n, 0), into.get(n, 0)) for n, m in modules.items()]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


# -- Sphinx ---------------------------------------------------------------------------------------


def _markdown_graph(modules: dict[str, Module], level: str, hide: list[str]) -> list[str]:
    arrows = edges(modules, level)
    lines = ["```{graphviz}", dot(modules, level, hide), "```", ""]
    found = cycles(arrows)
    if not found:
        lines.append(f"No import cycle at {level} level.")
    else:
        lines.append(f"Import cycles at {level} level (eager and lazy imports together):")
        lines.append("")
        for component in found:
            lines.append("- " + ", ".join(f"`{_short(name)}`" for name in component))
    lines.append("")
    return lines


def _markdown_table(modules: dict[str, Module]) -> list[str]:
    lines = ["| module | lines | imports | imported by |", "| --- | ---: | ---: | ---: |"]
    for name, count, out, into in table(modules):
        lines.append(f"| `{_short(name)}` | {count} | {out} | {into} |")
    return [*lines, ""]


def setup(app: Any) -> dict[str, Any]:
    from docutils import nodes
    from docutils.parsers.rst import directives
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    class _Generated(SphinxDirective):
        has_content = False

        def lines(self, modules: dict[str, Module]) -> list[str]:
            raise NotImplementedError

        def run(self) -> list[nodes.Node]:
            modules = scan()
            self.env.note_dependency(__file__)
            for module in modules.values():
                self.env.note_dependency(str(module.path))
            content = StringList()
            for line in "\n".join(self.lines(modules)).splitlines():
                content.append(line, "<importgraph>")
            container = nodes.section()
            container.document = self.state.document
            nested_parse_with_titles(self.state, content, container)
            return list(container.children)

    class GraphDirective(_Generated):
        option_spec = {
            "level": lambda arg: directives.choice(arg, ("package", "module")),
            "hide": lambda arg: [name.strip() for name in (arg or "").split(",") if name.strip()],
        }

        def lines(self, modules: dict[str, Module]) -> list[str]:
            level = self.options.get("level", "package")
            return _markdown_graph(modules, level, self.options.get("hide", []))

    class TableDirective(_Generated):
        def lines(self, modules: dict[str, Module]) -> list[str]:
            return _markdown_table(modules)

    app.add_directive("dkron-importgraph", GraphDirective)
    app.add_directive("dkron-importtable", TableDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    print(dot(scan(), sys.argv[1] if len(sys.argv) > 1 else "package"))
