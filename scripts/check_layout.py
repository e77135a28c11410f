"""Check that the package's layout is its architecture: `python scripts/check_layout.py` (exit 1 if not).

1. `import imagenet_zoo` loads no module of `jobs/`, `transfer/` or `server/`, and neither Keras,
   TensorFlow nor OpenVINO (checked in a fresh interpreter).
2. No import circle: the graph of imports between imagenet_zoo's modules, those inside functions (lazy
   ones) included, has no cycle.
3. The lower layers never import the upper ones: nothing below `jobs/`, `transfer/`, `server/` and `cli/`
   imports them at module level (the factory's lazy import of bundles is inside a function).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "imagenet_zoo"
UPPER = ("imagenet_zoo.jobs", "imagenet_zoo.transfer", "imagenet_zoo.server", "imagenet_zoo.cli")
HEAVY = ("keras", "tensorflow", "openvino")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], *, lazy: bool) -> set[str]:
    """imagenet_zoo modules that `path` imports: when it is imported, or (`lazy`) anywhere in it."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree) if lazy else _module_level_statements(tree.body):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def _module_level_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    statements: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            nested = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            for handler in getattr(node, "handlers", []):
                nested.extend(handler.body)
            statements.extend(_module_level_statements(nested))
        else:
            statements.append(node)
    return statements


def import_graph(*, lazy: bool) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths), lazy=lazy) - {name} for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    def layer_of(name: str) -> str | None:
        return next((upper for upper in UPPER if name == upper or name.startswith(upper + ".")), None)

    return [
        f"{name} imports {target}"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(name) is None and layer_of(target) is not None and name != "imagenet_zoo.__main__"
    ]


def loaded_by_plain_import() -> list[str]:
    code = "import sys, imagenet_zoo; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [m for m in loaded.split() if m.startswith(UPPER[:3]) or m.split(".")[0] in HEAVY]


def main() -> int:
    graph, module_level = import_graph(lazy=True), import_graph(lazy=False)
    problems = [f"`import imagenet_zoo` loads {name}" for name in loaded_by_plain_import()]
    problems += [f"import circle: {' <-> '.join(group)}" for group in cycles(graph)]
    problems += [f"a lower layer imports an upper one: {edge}" for edge in upward_imports(module_level)]
    edges = sum(len(targets) for targets in graph.values())
    print(f"{len(graph)} modules, {edges} imports between them")
    print(
        "\n".join(problems)
        if problems
        else "layout ok: a light top-level import, no circle, no upward import"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
