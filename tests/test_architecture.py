"""The package's layering, read from its own imports (ARCHITECTURE.md draws it).

Every import in deployhook/ (module level or inside a function) is an arrow. The rules:

1. No circle: no module reaches itself through its imports.
2. Imports point down the floors, never up:
       edges   cli -> server -> web        (cli also reaches web's app through server)
       service service.py, preflight.py, summary.py, tail.py
       wings   intake/ | deploy/           (neither imports the other)
       clients forges/
       data    registry/ | store/          (neither imports the other)
       base    errors, models, text, config, log, retry
3. Inside deploy/, a step or a reporter imports the context, never the pipeline that runs
   it nor the worker: tools (process, compose, project, engine) < context < steps and
   reporters < pipeline < worker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deployhook"

# Wing -> floor. A module belongs to the first wing its dotted name starts with.
FLOORS: dict[str, int] = {
    "deployhook": 0,
    "deployhook.errors": 0,
    "deployhook.models": 0,
    "deployhook.text": 0,
    "deployhook.config": 0,
    "deployhook.log": 0,
    "deployhook.retry": 0,
    "deployhook.registry": 1,
    "deployhook.store": 1,
    "deployhook.forges": 2,
    "deployhook.intake": 3,
    "deployhook.deploy": 3,
    "deployhook.service": 4,
    "deployhook.preflight": 4,
    "deployhook.summary": 4,
    "deployhook.tail": 4,
    "deployhook.web": 5,
    "deployhook.server": 6,
    "deployhook.cli": 7,
    "deployhook.__main__": 8,
}
BASE = {w for w, floor in FLOORS.items() if floor == 0}
SERVICE_LAYER = {w for w, floor in FLOORS.items() if floor == 4}
# Inside deploy/: the order a newcomer reads it in.
DEPLOY_ORDER: dict[str, int] = {
    "deployhook.deploy.process": 0,
    "deployhook.deploy.compose": 0,
    "deployhook.deploy.project": 0,
    "deployhook.deploy.engine": 0,
    "deployhook.deploy.context": 1,
    "deployhook.deploy.steps": 2,
    "deployhook.deploy.reporters": 2,
    "deployhook.deploy.pipeline": 3,
    "deployhook.deploy.worker": 4,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The deployhook modules `name` imports: `from pkg import sub` counts as pkg.sub."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH: dict[str, set[str]] = {name: imports_of(name) for name in MODULES}


def wing(name: str, table: dict[str, int]) -> str:
    matches = [w for w in table if name == w or name.startswith(w + ".")]
    return max(matches, key=len)


def test_the_graph_is_read() -> None:
    assert len(MODULES) > 40
    assert "deployhook.deploy.context" in GRAPH["deployhook.deploy.pipeline"]
    assert "deployhook.store.ledger" in GRAPH["deployhook.store"]


def test_no_import_circle() -> None:
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        seen[name] = 1
        for target in sorted(GRAPH[name]):
            if seen.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in seen:
                visit(target, [*path, target])
        seen[name] = 2

    for name in sorted(GRAPH):
        if name not in seen:
            visit(name, [name])
    assert circles == []


def _upward(name: str, target: str) -> str | None:
    """Why the arrow name -> target breaks the floors, or None."""
    here, there = wing(name, FLOORS), wing(target, FLOORS)
    if FLOORS[there] > FLOORS[here]:
        return f"{name} (floor {FLOORS[here]}) imports {target} (floor {FLOORS[there]})"
    same_floor = FLOORS[there] == FLOORS[here] and here != there
    allowed_sideways = (here in BASE and there in BASE) or (
        here in SERVICE_LAYER and there in SERVICE_LAYER and here == "deployhook.service"
    )
    if same_floor and not allowed_sideways:
        return f"{name} imports {target}: two wings of floor {FLOORS[here]} must not meet"
    return None


def test_imports_point_down_the_floors() -> None:
    broken = [why for name, targets in GRAPH.items() for t in targets if (why := _upward(name, t))]
    assert broken == []


def test_steps_and_reporters_never_import_the_pipeline() -> None:
    broken = []
    for name, targets in GRAPH.items():
        if not name.startswith("deployhook.deploy."):
            continue
        for target in targets:
            if not target.startswith("deployhook.deploy."):
                continue
            here, there = wing(name, DEPLOY_ORDER), wing(target, DEPLOY_ORDER)
            if DEPLOY_ORDER[there] > DEPLOY_ORDER[here]:
                broken.append(f"{name} imports {target}")
    assert broken == []


@pytest.mark.parametrize(
    ("name", "target", "broken"),
    [
        ("deployhook.store.ledger", "deployhook.service", True),
        ("deployhook.intake.receive", "deployhook.deploy.worker", True),
        ("deployhook.registry.live", "deployhook.store", True),
        ("deployhook.web.status", "deployhook.service", False),
        ("deployhook.deploy.worker", "deployhook.store", False),
        ("deployhook.config", "deployhook.errors", False),
    ],
)
def test_the_rules_tell_up_from_down(name: str, target: str, broken: bool) -> None:
    assert (_upward(name, target) is not None) is broken
