"""The package graph of `app/` points down: shared leaves → domains → processes, with no cycle.

Every `import app...` in every module (function-level imports included) is checked, so this fails the
moment a module reaches back up a layer or two packages import each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

#: Layer of each top-level module or package of `app`; a module may import only its own layer or lower.
LAYERS = {
    # shared leaves
    "sections": 0, "config": 0, "ids": 0, "metrics": 0,
    "records": 1, "topics": 1, "kafka": 1, "broker": 1, "spawner": 2,
    # domains and what their agents run on
    "attribution": 3, "mapping": 3, "identity": 3, "dlq": 3, "lifecycle": 3, "runtime": 3, "admin": 3,
    "sinks": 4, "pipeline": 4, "audiences": 4, "warehouse": 4, "digest": 4, "loadgen": 4, "trace": 4,
    "privacy": 4,
    # processes: the roof
    "receiver": 5, "console": 5, "worker": 6, "supervisor": 7, "cli": 8,
}  # fmt: skip


#: The processes' roots: only they build or pass the whole `Settings` (`app.config`); every other module
#: takes the one section of `app.sections` it reads. Besides these, every `cli.py` is a root.
SETTINGS_ROOTS = {
    "app.config",  # the whole itself
    "app.worker.app",  # the worker's composition root
    "app.worker.main",  # `kseg worker`
    "app.receiver.server",  # the receiver's app factory and `kseg receiver`
    "app.supervisor",  # `kseg run`
}


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "app" or a.name.startswith("app.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "app":
                found |= {f"app.{a.name}" for a in node.names}
            elif node.module.startswith("app."):
                found.add(node.module)
    return found


def top(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def graph() -> dict[str, set[str]]:
    return {module_name(p): app_imports(p) for p in APP.rglob("*.py")}


def test_every_package_has_a_layer() -> None:
    missing = {top(m) for m in graph() if m != "app"} - LAYERS.keys()
    assert not missing, f"give these packages a layer in LAYERS: {sorted(missing)}"


def test_no_import_runs_up_the_layers() -> None:
    upward = [
        f"{m} (layer {LAYERS[top(m)]}) imports {i} (layer {LAYERS[top(i)]})"
        for m, imports in graph().items()
        if m != "app"
        for i in imports
        if top(i) in LAYERS and LAYERS[top(i)] > LAYERS[top(m)]
    ]
    assert not upward, "\n".join(upward)


def test_no_package_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for m, imports in graph().items():
        if m != "app":
            edges.setdefault(top(m), set()).update(top(i) for i in imports if top(i) != top(m))
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif len(path) < len(edges):
                visit(nxt, [*path, nxt])

    for start in sorted(edges):
        visit(start, [start])
    assert not cycles, "package cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def is_settings_root(module: str) -> bool:
    return module in SETTINGS_ROOTS or module == "app.cli" or module.endswith(".cli")


def test_only_the_roots_import_the_whole_settings() -> None:
    """A domain that imports `Settings` could read any other domain's keys; it takes its section instead."""
    reaching = [
        f"{m} imports {i}"
        for m, imports in graph().items()
        if not is_settings_root(m)
        for i in imports
        if i == "app.config"
    ]
    assert not reaching, "use a section of app.sections instead:\n" + "\n".join(sorted(reaching))


def test_the_settings_rule_sees_every_form_of_import(tmp_path: Path) -> None:
    """The rule above cannot pass by missing an import form, or by taking a domain for a root."""
    forms = [
        "from app.config import Settings",
        "from app import config",
        "import app.config",
        "def f():\n    from app.config import get_settings",
    ]
    for n, code in enumerate(forms):
        path = tmp_path / f"m{n}.py"
        path.write_text(code + "\n")
        assert "app.config" in app_imports(path), code
    assert is_settings_root("app.dlq.cli") and is_settings_root("app.cli")
    assert not is_settings_root("app.sinks.segment.agent") and not is_settings_root("app.kafka")


def test_importing_the_processing_agent_builds_nothing(tmp_path: Path) -> None:
    """No faust app, no environment read, no directory: importing is free (the composition root builds)."""
    code = (
        "import os, sys\n"
        "os.environ['KSEG_TOPIC_PARTITIONS'] = 'not-a-number'\n"  # any Settings() built now would fail
        "import app.pipeline.process, app.identity.agents, app.sinks.segment.agents, app.worker.app\n"
        "import gc, faust\n"
        "assert not [o for o in gc.get_objects() if isinstance(o, faust.App)], 'a faust App was built'\n"
        "print(sorted(os.listdir('.')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(APP.parent), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout  # nothing created in the working directory
