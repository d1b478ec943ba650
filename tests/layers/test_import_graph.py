"""The modules of the Redis and ipc:// layers import each other in one direction only: no cycle.

The graph is read from the source with ``ast``, so it holds every import a module makes:
at the top, inside functions, and under ``if TYPE_CHECKING:`` (a cycle there is still two
modules that each need the other). Importing a package's submodule runs the package's
``__init__`` first; that is Python's doing, not an edge of the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kanal

_SRC = Path(kanal.__file__).parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(_SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules (and, for ``from M import name``, the candidate ``M.name``) ``node`` names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, for every module of ``package``."""
    root = _SRC.joinpath(*package.split("."))
    files = {_module_name(path): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported(node, module, path.name == "__init__.py"):
                    if name in files and name != module:
                        targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or ``None``."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph[node]):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                found = visit(target)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_the_redis_layer_has_no_import_cycle() -> None:
    graph = import_graph("kanal.layers.redis")
    # The graph is the real one: the layer uses the receiver, the receiver the topology,
    # the topology the connections.
    assert "kanal.layers.redis._receiving" in graph["kanal.layers.redis._layer"]
    assert "kanal.layers.redis._topology" in graph["kanal.layers.redis._receiving"]
    assert "kanal.layers.redis._connection" in graph["kanal.layers.redis._topology"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_a_cycle_is_found_even_under_type_checking() -> None:
    """The check can fail: the receiver's old TYPE_CHECKING import of the layer is one."""
    graph = import_graph("kanal.layers.redis")
    source = "if TYPE_CHECKING:\n    from kanal.layers.redis._layer import RedisChannelLayer\n"
    tree = ast.parse(source)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    graph["kanal.layers.redis._receiving"].update(
        name for name in _imported(node, "kanal.layers.redis._receiving", False) if name in graph
    )
    assert find_cycle(graph) == [
        "kanal.layers.redis._layer",
        "kanal.layers.redis._receiving",
        "kanal.layers.redis._layer",
    ]


def test_relative_imports_are_resolved() -> None:
    tree = ast.parse("from . import _connection\nfrom ._scripts import ACK\n")
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    module = "kanal.layers.redis._topology"
    assert _imported(nodes[0], module, False) == [
        "kanal.layers.redis",
        "kanal.layers.redis._connection",
    ]
    assert _imported(nodes[1], module, False)[0] == "kanal.layers.redis._scripts"


def test_the_ipc_layer_has_no_import_cycle() -> None:
    graph = import_graph("kanal.layers.ipc")
    # The layer is built on the peering, which uses the connections, the shared database
    # and the registry of processes; they know nothing of either.
    assert "kanal.layers.ipc._peering" in graph["kanal.layers.ipc._layer"]
    for module in ("_wire", "_state", "_peers", "_paths"):
        assert f"kanal.layers.ipc.{module}" in graph["kanal.layers.ipc._peering"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
