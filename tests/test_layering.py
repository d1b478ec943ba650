"""Imports point down the layers: each package imports only the packages the architecture allows.

The table is docs/architecture.md's, as code. Only imports at module level count (an import
inside a function or under ``TYPE_CHECKING`` is not a load-time dependency); modules of one
package must also not import each other in a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import kanal

ROOT = Path(kanal.__file__).parent

#: What each top-level part of kanal may import (besides itself). Leaves that every part may
#: use are listed in BASE. Keep in step with docs/architecture.md.
BASE = {
    "__init__",
    "exceptions",
    "typing",
    "_backoff",
    "_histogram",
    "_logging",
    "_signals",
    "_tasks",
}
# The packages above the framework may use everything below them.
_ALL = {
    "layers",
    "protocols",
    "server",
    "routing",
    "consumers",
    "middleware",
    "worker",
    "bridge",
    "classic",
    "mqtt",
    "inspect",
    "metrics",
    "testing",
    "cli",
    "django",
}
ALLOWED: dict[str, set[str]] = {
    "typing": set(),
    "exceptions": set(),
    "_backoff": set(),
    "_signals": set(),
    "_logging": set(),
    "_histogram": set(),
    "_tasks": set(),
    "__init__": set(),
    "layers": set(),
    "protocols": set(),
    "server": {"protocols"},
    "routing": {"layers"},
    "consumers": {"layers", "routing"},
    "middleware": {"layers", "routing"},
    "worker": {"layers", "consumers", "routing"},
    "bridge": {"layers", "routing", "worker"},
    "classic": {"layers", "consumers", "routing"},
    "mqtt": {"layers", "routing", "consumers"},
    "inspect": {"layers", "server", "worker"},
    "metrics": {"inspect", "layers", "server", "worker"},
    "testing": _ALL - {"cli", "django"},
    "cli": _ALL - {"testing", "django"},
    "django": _ALL - {"django"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _load_time_imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """The kanal modules ``tree`` imports when it loads (module level, not TYPE_CHECKING)."""
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
            if isinstance(sub, ast.Import):
                yield from (a.name for a in sub.names if a.name.startswith("kanal"))
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = module.split(".")
                    base = base[: len(base) - sub.level + (1 if is_package else 0)]
                    target = ".".join([*base, sub.module] if sub.module else base)
                else:
                    target = sub.module or ""
                if target.startswith("kanal"):
                    yield target


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = set(_load_time_imports(tree, module, path.name == "__init__.py"))
    return graph


GRAPH = _graph()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module: str) -> None:
    part = _part(module)
    assert part in ALLOWED, f"{part} is not in the architecture's table: add it there and here"
    allowed = ALLOWED[part] | BASE | {part}
    wrong = sorted(t for t in GRAPH[module] if _part(t) not in allowed)
    assert not wrong, f"{module} imports {wrong}; {part} may import only {sorted(allowed)}"


def test_no_module_imports_itself_in_a_cycle() -> None:
    known = set(GRAPH)

    def resolve(target: str) -> str | None:
        # "from kanal.layers import x" may name a module or a name in the package.
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges[module]):
            # A package's __init__ importing its own submodules is how packages are built.
            if module == target.rpartition(".")[0] or target.startswith(module + "."):
                continue
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
