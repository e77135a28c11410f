"""Check that the package's layout is its architecture: `python scripts/check_layout.py` (exit 1 if not).

1. `import imagenet_zoo` loads no module of `jobs/`, `transfer/` or `server/`, and neither Keras,
   TensorFlow nor OpenVINO (checked in a fresh interpreter).
2. No import circle: the graph of imports between imagenet_zoo's modules, those inside functions (lazy
   ones) included, has no cycle.
3. Layers, lazy imports included: a module imports only its own layer and those below (`LAYERS`, lowest
   first); the packages of the applications' layer (`jobs/`, `transfer/`, `selftest/`) never import each
   other; an engine's implementation is imported only by the engines themselves (everything else asks
   the engine registry).
4. torch (and torchvision) is imported only by the torch engine's own modules (`engines/torch*.py`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "imagenet_zoo"
UPPER = ("imagenet_zoo.jobs", "imagenet_zoo.transfer", "imagenet_zoo.server", "imagenet_zoo.cli")
HEAVY = ("keras", "tensorflow", "openvino")
TORCH = ("torch", "torchvision")
TORCH_ENGINE = "imagenet_zoo.engines.torch"  # the module and its siblings engines/torch_*.py
# Lowest first; a module not listed is in the lowest layer (the data, models, weights and their types).
LAYERS = (
    (),
    ("imagenet_zoo.engines",),
    ("imagenet_zoo.pipeline", "imagenet_zoo.classifier", "imagenet_zoo.api"),
    ("imagenet_zoo.jobs", "imagenet_zoo.transfer", "imagenet_zoo.selftest", "imagenet_zoo.export"),
    ("imagenet_zoo.server",),
    ("imagenet_zoo.cli", "imagenet_zoo.__main__"),
)
PUBLIC_API_LAYER = 2  # `imagenet_zoo` itself: the public API, the factory's layer
APPLICATIONS = 3  # the layer whose packages are independent of each other
ENGINE_SEAMS = {
    "imagenet_zoo.engines",
    "imagenet_zoo.engines.graph",  # the description every engine and exported format is made from
    "imagenet_zoo.engines.network",
    "imagenet_zoo.engines.registry",
    "imagenet_zoo.engines.base",
    "imagenet_zoo.engines.batching",
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """imagenet_zoo modules that `path` imports, anywhere in it (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) - {name} for name, path in paths.items()}


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


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_of(name: str) -> tuple[int, str]:
    """A module's layer, and the package of that layer it belongs to."""
    if name == "imagenet_zoo":
        return PUBLIC_API_LAYER, name
    for number, packages in enumerate(LAYERS):
        for package in packages:
            if _in(name, package):
                return number, package
    return 0, ""


def layering_problems(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a layer, sideways between applications, or past the engine registry."""
    problems = []
    for name, targets in sorted(graph.items()):
        (layer, package) = layer_of(name)
        for target in sorted(targets):
            (target_layer, target_package) = layer_of(target)
            if target_layer > layer:
                problems.append(f"a lower layer imports an upper one: {name} imports {target}")
            elif target_layer == layer == APPLICATIONS and package != target_package:
                problems.append(f"one application imports another: {name} imports {target}")
            elif (
                _in(target, "imagenet_zoo.engines")
                and target not in ENGINE_SEAMS
                and not _in(name, "imagenet_zoo.engines")
            ):
                problems.append(f"an engine is imported past the registry: {name} imports {target}")
    return problems


def torch_importers(package: Path = PACKAGE) -> list[str]:
    """Modules outside the torch engine that import torch or torchvision (inside functions too)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        if name == TORCH_ENGINE or name.startswith(TORCH_ENGINE + "_"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n.split(".")[0] in TORCH for n in names):
                found.append(name)
                break
    return found


def loaded_by_plain_import() -> list[str]:
    code = "import sys, imagenet_zoo; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [m for m in loaded.split() if m.startswith(UPPER[:3]) or m.split(".")[0] in HEAVY]


def main() -> int:
    graph = import_graph()
    problems = [f"`import imagenet_zoo` loads {name}" for name in loaded_by_plain_import()]
    problems += [f"import circle: {' <-> '.join(group)}" for group in cycles(graph)]
    problems += layering_problems(graph)
    problems += [f"torch is imported outside the torch engine: {name}" for name in torch_importers()]
    edges = sum(len(targets) for targets in graph.values())
    print(f"{len(graph)} modules, {edges} imports between them")
    print(
        "\n".join(problems)
        if problems
        else "layout ok: a light top-level import, no circle, no upward or sideways import, torch in its "
        "engine alone"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
