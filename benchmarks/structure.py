"""The structure in numbers (docs/architecture.md): modules, lines per module, methods per class.

    .venv/bin/python benchmarks/structure.py                  # this tree's dkron_lab/
    .venv/bin/python benchmarks/structure.py --root /tmp/old  # another checkout, to compare

Lines are physical lines of each ``.py`` file; methods are the ``def``/``async def`` directly in
a class body (properties included), read with ``ast`` without importing anything.
"""

from __future__ import annotations

import argparse
import ast
import statistics
from dataclasses import dataclass
from pathlib import Path

BIG = 400


@dataclass(frozen=True, slots=True)
class Module:
    path: str
    lines: int
    classes: dict[str, int]  # class name -> methods


def measure(package: Path) -> list[Module]:
    modules = []
    for file in sorted(package.rglob("*.py")):
        text = file.read_text(encoding="utf-8")
        tree = ast.parse(text)
        classes = {
            node.name: sum(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in node.body)
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
        }
        modules.append(
            Module(str(file.relative_to(package.parent)), len(text.splitlines()), classes)
        )
    return modules


def report(modules: list[Module]) -> str:
    lines = [m.lines for m in modules]
    classes = [(n, name, m.path) for m in modules for name, n in m.classes.items()]
    largest = sorted(classes, reverse=True)[:5]
    big = sorted((m for m in modules if m.lines > BIG), key=lambda m: -m.lines)
    rows = [
        ("modules", str(len(modules))),
        ("lines in all", f"{sum(lines):,}"),
        ("lines per module: median / p90 / max", _spread(lines)),
        (f"modules over {BIG} lines", str(len(big))),
        ("modules over 1,000 lines", str(sum(m.lines > 1000 for m in modules))),
        ("classes", str(len(classes))),
        ("methods per class: median / p90 / max", _spread([n for n, _, _ in classes])),
    ]
    width = max(len(label) for label, _ in rows)
    out = [f"{label:<{width}}  {value}" for label, value in rows]
    out += ["", f"over {BIG} lines:"] + [f"  {m.lines:>5}  {m.path}" for m in big]
    out += ["", "largest classes (methods):"]
    out += [f"  {n:>5}  {name} ({path})" for n, name, path in largest]
    return "\n".join(out)


def _spread(values: list[int]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered):g} / {p90} / {ordered[-1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).parent.parent)
    args = parser.parse_args()
    print(report(measure(args.root / "dkron_lab")))


if __name__ == "__main__":
    main()
