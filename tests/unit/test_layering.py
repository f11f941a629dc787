"""The tree's dependency rules, read from the source with `ast` alone (nothing is imported):

- the client imports neither the server nor the model nor torch;
- the model knows nothing of the server;
- the pipeline schedules only: no edge, no replica, no sockets, no torch, no HTTP;
- the two edges (ZeroMQ, HTTP) import neither each other nor the composition (`service`);
- no import cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "bert_serving"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, at any depth of its code (lazy imports too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            # `from . import protocol` imports a module, not a name
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {i for i in imports_of(path) if i in MODULES and i != name} for name, path in MODULES.items()}


def imports_in(prefix: str) -> dict[str, set[str]]:
    """All imports (also outside the package) of every module under ``prefix``."""
    return {name: imports_of(MODULES[name]) for name in MODULES if name == prefix or name.startswith(prefix + ".")}


def offenders(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{module} imports {target}"
                  for module, targets in imports_in(prefix).items() for target in targets
                  if any(target == f or target.startswith(f + ".") for f in forbidden))


def test_the_tree_has_the_rooms_the_layout_promises() -> None:
    for room in ("client", "model", "model.architectures", "server.pipeline", "server.replicas", "server.zmq",
                 "server.http"):
        assert f"bert_serving.{room}" in MODULES, room


@pytest.mark.parametrize(("prefix", "forbidden"), [
    ("bert_serving.client", ("bert_serving.server", "bert_serving.model", "torch", "transformers", "fastapi",
                             "tokenizers")),
    ("bert_serving.model", ("bert_serving.server", "zmq", "fastapi", "starlette", "uvicorn")),
    ("bert_serving.server.pipeline", ("bert_serving.server.zmq", "bert_serving.server.http",
                                      "bert_serving.server.replicas", "bert_serving.server.service", "torch", "zmq",
                                      "fastapi", "starlette", "uvicorn", "bert_serving.model.encoder")),
    ("bert_serving.server.zmq", ("bert_serving.server.http", "bert_serving.server.service",
                                 "bert_serving.server.replicas")),
    ("bert_serving.server.http", ("bert_serving.server.zmq", "bert_serving.server.service",
                                  "bert_serving.server.replicas", "zmq")),
    ("bert_serving.server.replicas", ("bert_serving.server.zmq", "bert_serving.server.http",
                                      "bert_serving.server.service")),
])
def test_dependencies_point_one_way(prefix: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(prefix, forbidden) == []


def test_no_import_cycles() -> None:
    # a package and its own modules (an __init__ re-exporting them) are plumbing, not the data path
    graph = {name: {t for t in targets if not (t.startswith(name + ".") or name.startswith(t + "."))}
             for name, targets in GRAPH.items()}
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rules above would catch a violation: the parser resolves relative imports."""
    path = PACKAGE / "server" / "pipeline" / "batcher.py"
    found = imports_of(path)
    assert "bert_serving.model.features" in found and "bert_serving.errors" in found
    edge = imports_of(PACKAGE / "server" / "http" / "app.py")
    assert "bert_serving.server.pipeline.gateway" in edge


def test_importing_the_pipeline_loads_no_torch() -> None:
    import subprocess
    import sys

    script = ("import sys, bert_serving.server.pipeline.batcher, bert_serving.server.pipeline.sink, "
              "bert_serving.server.pipeline.gateway; print('torch' in sys.modules, 'zmq' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_the_commands_parse_their_flags_without_torch() -> None:
    """``bert-serving-terminate`` and ``bert-serving-start --help`` answer at once: the CLI, the
    configuration and 1.10.0's ``graph.PoolingStrategy`` import no torch (2 s here)."""
    import subprocess
    import sys

    script = ("import sys, bert_serving.server.cli, bert_serving.server.config, bert_serving.server.graph; "
              "from bert_serving.server.config import ServerConfig; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


def test_nothing_the_server_receives_is_unpickled() -> None:
    """Frames from clients and from worker processes are JSON and raw arrays, never pickles."""
    assert offenders("bert_serving", ("pickle", "cPickle", "dill", "cloudpickle", "marshal")) == []
