"""The layers of the README's "Layout" picture hold against the code's imports.

Every import of a gnj module by another, at module level or inside a function, is read from the
source (``ast``); a module may import only from a layer below its own, the core never imports
``gnj.proj``, a paper never imports another paper, and no two modules import each other in a
circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gnj"
#: subpackages that are one unit of the picture
UNIT_PACKAGES = ("nn", "models", "data", "analysis", "interop", "proj")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """``gnj.nn.norms`` → ``nn``; ``gnj.train`` → ``train``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(path: Path) -> set[str]:
    """Every gnj module that ``path`` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gnj":
                found.update(f"gnj.{a.name}" for a in node.names)
            elif node.module.startswith("gnj."):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names
                             if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")
                                 ).with_suffix(".py").exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gnj."))
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {m: {t for t in imports_of(p) if t in MODULES and t != m} for m, p in MODULES.items()}


def readme_layers() -> dict[str, int]:
    """``{unit: layer}`` from the fenced picture under the README's "## Layout"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    picture = re.search(r"```\n(.*?)```", section, re.DOTALL).group(1)
    layers: dict[str, int] = {}
    for line in picture.splitlines():
        row = re.match(r"\s*(\d+)\s{2,}(.+?)(\s{2,}|$)", line)
        if row:
            for name in row.group(2).strip(" ,").split(","):
                layers[name.strip().removeprefix("gnj/")] = int(row.group(1))
    return layers


LAYERS = readme_layers()


def test_the_picture_places_every_module():
    units = {unit(m) for m in MODULES} - {""}
    assert units - set(LAYERS) == set(), "modules missing from the README's Layout picture"
    assert set(LAYERS) - units == set(), "the picture names modules that do not exist"


def test_every_import_goes_down_a_layer():
    upward = sorted(f"{m} ({LAYERS[unit(m)]}) imports {t} ({LAYERS[unit(t)]})"
                    for m, targets in GRAPH.items() if unit(m) for t in targets
                    if unit(t) and unit(t) != unit(m) and LAYERS[unit(t)] >= LAYERS[unit(m)])
    assert upward == []


def test_the_core_never_imports_a_paper_and_papers_stay_apart():
    core = [f"{m} imports {t}" for m, ts in GRAPH.items() if unit(m) != "proj"
            for t in ts if unit(t) == "proj"]
    assert core == []
    paper = lambda m: m.split(".")[2] if m.startswith("gnj.proj.") else None  # noqa: E731
    across = [f"{m} imports {t}" for m, ts in GRAPH.items() if paper(m)
              for t in ts if paper(t) and paper(t) != paper(m)]
    assert across == []


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m]):
            # a package's __init__ importing its own modules is not a cycle with them
            if m == t.rsplit(".", 1)[0] or t == m.rsplit(".", 1)[0]:
                continue
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [t] if t in path else [m, t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert cycles == []


@pytest.mark.parametrize("module", ["gnj.registry", "gnj.settings", "gnj.config_args"])
def test_the_foundation_imports_nothing_of_gnj_at_import_time(module):
    assert {t for t in GRAPH[module] if t != "gnj"} == set()
