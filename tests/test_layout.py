"""The library's layout, read from its imports: wings import only the wings below them, no module
imports itself back through others, and no module grows past 700 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "restoration"

# Each wing may import the wings of a lower rank (and itself); wings of one rank are independent.
RANKS: dict[str, int] = {
    "config": 0, "stopping": 0, "durations": 0,
    "io": 1,
    "tasks": 2,
    "models": 3,
    "quality": 4,
    "restore": 5, "finetune": 5,
    "pages": 6, "distill": 6,
    "cli": 7,
}
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ``restoration`` modules ``path`` imports (at any depth of the file, lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "restoration")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "restoration":
            for alias in node.names:  # ``from restoration.io import storage`` imports a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _exists(candidate) else node.module)
    return found


def _exists(module: str) -> bool:
    path = ROOT / module.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in LIBRARY.rglob("*.py")}


def test_every_module_belongs_to_a_wing_and_imports_only_wings_below() -> None:
    graph = _graph()
    wrong = []
    for module, imported in graph.items():
        if module == "restoration":
            continue
        wing = _wing(module)
        assert wing in RANKS, f"{module} is in no wing; add it to a package (or to RANKS with a reason)"
        for target in imported:
            other = _wing(target)
            if other and other != wing and RANKS[other] >= RANKS[wing]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that run sideways or up: " + ", ".join(sorted(wrong))


def test_no_import_circles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target not in graph or target == module or target in ("restoration",):
                continue
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif state.get(target) is None:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, circles


def test_no_module_over_700_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for folder in ("restoration", "jobs", "local")
            for path in (ROOT / folder).rglob("*.py") if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long
