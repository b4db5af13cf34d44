"""detect/ imports point one way: no module of detect/ imports another that (directly or not)
imports it back, none reaches another module's private names, and none imports the CLI layer."""

from __future__ import annotations

import ast
from pathlib import Path

import callgate.detect

ROOT = Path(callgate.detect.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """module → [(imported module, names taken from it)]"""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        edges: list[tuple[str, list[str]]] = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [alias.name for alias in node.names]
                submodules = [f"{node.module}.{n}" for n in names]
                edges.append((node.module, names))
                edges.extend((m, []) for m in submodules)
            elif isinstance(node, ast.Import):
                edges.extend((alias.name, []) for alias in node.names)
        found[_module(path)] = edges
    return found


def test_no_import_cycles_inside_detect() -> None:
    graph = {
        mod: {target for target, _ in edges if target in _imports_keys()}
        for mod, edges in _imports().items()
    }
    for package in [m for m in graph if (ROOT.parent.parent / m.replace(".", "/")).is_dir()]:
        for mod in graph:  # a package's __init__ is imported with any of its modules: no edge
            graph[mod].discard(package)
    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph[mod]):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, mod, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])


def _imports_keys() -> set[str]:
    return {_module(p) for p in ROOT.rglob("*.py")}


def test_no_private_names_across_detect_modules() -> None:
    for mod, edges in _imports().items():
        for target, names in edges:
            if target.startswith("callgate.detect"):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{mod} imports private {private} from {target}"


def test_detect_does_not_import_the_cli_layer() -> None:
    for mod, edges in _imports().items():
        for target, _ in edges:
            assert not target.startswith(("callgate.cli", "typer")), f"{mod} imports {target}"
