"""host.core is the functional core: neither its modules nor any host module they import
(config, json_text) imports an I/O, concurrency or server library. Read from the source,
`TYPE_CHECKING` imports included; what pydantic or the standard library import for
themselves is theirs."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

import host.core

FORBIDDEN = frozenset(
    {
        "asyncio",
        "httpx",
        "aiosqlite",
        "sqlite3",
        "subprocess",
        "socket",
        "threading",
        "starlette",
        "uvicorn",
        "psutil",
        "pynvml",
    }
)


def core_modules() -> list[str]:
    return [f"host.core.{m.name}" for m in pkgutil.iter_modules(host.core.__path__)]


def imports_of(module: str) -> set[str]:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module in ("host", "host.core"):  # `from host.core import routing`
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if importlib.util.find_spec(name.split(".")[0])}


def forbidden_reach(start: list[str]) -> dict[str, set[str]]:
    """For each host module reachable from `start`, the forbidden modules it imports."""
    seen: set[str] = set()
    reached: dict[str, set[str]] = {}
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        imported = imports_of(module)
        bad = {name for name in imported if name.split(".")[0] in FORBIDDEN}
        if bad:
            reached[module] = bad
        todo.extend(
            name
            for name in imported
            if name.startswith("host.") and importlib.util.find_spec(name) is not None
        )
    return reached


def test_the_core_has_the_policy_modules() -> None:
    names = {name.rsplit(".", 1)[1] for name in core_modules()}
    assert {"scheduler", "batching", "routing", "task_types", "modes", "task_states"} <= names


def test_the_core_imports_no_io_or_concurrency() -> None:
    assert forbidden_reach(core_modules()) == {}


def test_the_check_sees_a_forbidden_import() -> None:
    assert "asyncio" in forbidden_reach(["host.offload"]).get("host.offload", set())
