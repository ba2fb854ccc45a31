"""Imports flow one way: rubrics <- rm <- eval/app/train/pairdata <- cli, and no module imports itself in a loop.

Every module of every layer is parsed with `ast` (the layers are the folders pyproject.toml maps into `deltarubric`),
and every import counts: at the top, inside functions, under `if TYPE_CHECKING`, and `importlib.import_module` with a
literal name. The allowed edges are the table below; README.md ("Where things are") has the same table.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "deltarubric"

# layer -> the other layers its modules may import. Nothing may import cli: it is the entry layer on top.
ALLOWED: dict[str, set[str]] = {
    "data": set(),  # shipped files and the function that finds them
    "rubrics": set(),  # prompts as data, their renderer and parsers: how a judge thinks, nothing else
    "rm": {"rubrics", "data"},  # types, media, backends, the judge
    "eval": {"rm", "rubrics", "data"},
    "app": {"rm", "rubrics", "data"},
    "train": {"rm", "rubrics", "data"},
    # `data dedup` loads benchmark items with the benchmarks' own loaders (eval's registry), so a benchmark's keys and
    # media paths are read one way; eval never imports pairdata.
    "pairdata": {"rm", "rubrics", "data", "eval"},
    "cli": {"rm", "rubrics", "data", "eval", "app", "train", "pairdata"},
}


def layer_folders() -> dict[str, Path]:
    """The layers pyproject.toml installs under `deltarubric`: `deltarubric.X` mapped to a top-level folder."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name.split(".")[1]: ROOT / folder for name, folder in mapping.items() if name.count(".") == 1}


def module_name(path: Path, layer: str, folder: Path) -> str:
    parts = [PACKAGE, layer, *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module (or the package, for names that are not modules)
    where: str  # file:line


def modules() -> dict[str, Path]:
    found = {}
    for layer, folder in layer_folders().items():
        for path in sorted(folder.rglob("*.py")):
            found[module_name(path, layer, folder)] = path
    return found


def imports_of(source: str, module: str, is_package: bool, known: set[str], filename: str = "") -> list[Edge]:
    """Every import of one of our modules in `source`, wherever it sits in the file."""
    package = module if is_package else module.rpartition(".")[0]
    edges = []

    def add(target: str, node: ast.AST) -> None:
        while target not in known and "." in target:  # `from x import name`: the module x when name is not one
            target = target.rpartition(".")[0]
        if target in known and target != module:
            edges.append(Edge(module, target, f"{filename}:{node.lineno}"))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per extra dot
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                add(f"{origin}.{alias.name}", node)
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in {"importlib.import_module", "import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value, node)
    return edges


def import_graph() -> list[Edge]:
    mods = modules()
    known = set(mods)
    return [
        edge
        for name, path in mods.items()
        for edge in imports_of(path.read_text(), name, path.name == "__init__.py", known, str(path.relative_to(ROOT)))
    ]


def layer_of(module: str) -> str:
    return module.split(".")[1]


def test_every_layer_has_a_rule() -> None:
    assert set(layer_folders()) == set(ALLOWED), "a layer was added or removed: give it a row in ALLOWED (and README)"


def test_imports_flow_one_way() -> None:
    wrong = [
        f"{e.where}: {e.source} imports {e.target} ({layer_of(e.source)} may import only "
        f"{', '.join(sorted(ALLOWED[layer_of(e.source)])) or 'nothing of ours'})"
        for e in import_graph()
        if layer_of(e.target) != layer_of(e.source) and layer_of(e.target) not in ALLOWED[layer_of(e.source)]
    ]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def find_cycle(edges: list[Edge]) -> list[Edge]:
    """One import loop (the edges around it), or [] when there is none."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[Edge] = []

    def visit(node: str) -> list[Edge]:
        state[node] = 1
        for e in graph.get(node, []):
            if state.get(e.target) == 1:
                start = next((i for i, p in enumerate(path) if p.source == e.target), len(path))
                return [*path[start:], e]
            if e.target not in state:
                path.append(e)
                if found := visit(e.target):
                    return found
                path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_loops() -> None:
    cycle = find_cycle(import_graph())
    assert not cycle, "an import loop:\n" + "\n".join(f"{e.where}: {e.source} -> {e.target}" for e in cycle)


# The checker itself: what counts as an import, and a loop it must find.
KNOWN = {"deltarubric.rm", "deltarubric.rm.types", "deltarubric.rm.judge", "deltarubric.cli", "deltarubric.cli.main"}


@pytest.mark.parametrize(
    ("source", "targets"),
    [
        ("from deltarubric.rm.types import JudgeRequest", ["deltarubric.rm.types"]),  # a name: its module
        ("from deltarubric.rm import types", ["deltarubric.rm.types"]),  # a module by name
        ("def f():\n    import deltarubric.cli.main", ["deltarubric.cli.main"]),  # function-local
        ("if TYPE_CHECKING:\n    from deltarubric.cli import main", ["deltarubric.cli.main"]),
        ("from .types import JudgeRequest", ["deltarubric.rm.types"]),  # relative, from deltarubric.rm.judge
        ("from ..cli import main", ["deltarubric.cli.main"]),
        ("importlib.import_module('deltarubric.cli.main')", ["deltarubric.cli.main"]),
        ("import json\nfrom typer import Typer", []),  # not ours
    ],
)
def test_imports_are_read_wherever_they_are(source: str, targets: list[str]) -> None:
    assert [e.target for e in imports_of(source, "deltarubric.rm.judge", False, KNOWN)] == targets


def test_a_loop_through_a_function_local_import_is_found() -> None:
    edges = imports_of("from deltarubric.rm import judge", "deltarubric.rm.types", False, KNOWN)
    edges += imports_of("def f():\n    from deltarubric.rm.types import X", "deltarubric.rm.judge", False, KNOWN)
    assert [(e.source, e.target) for e in find_cycle(edges)] == [
        ("deltarubric.rm.judge", "deltarubric.rm.types"),
        ("deltarubric.rm.types", "deltarubric.rm.judge"),
    ]
