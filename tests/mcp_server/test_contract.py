"""The tool contract: names, annotations and schemas that MCP clients depend on.

Agents and their users' configs name these tools and arguments, and hosts decide from
the annotations whether to ask before a call. A change here breaks them, so it must be
deliberate: the full input schemas are pinned in `tool_contract.json` (rewrite it from
`list_tools()` only when the change is meant).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mcp import Client

from mcp_server.server import build_server

CONTRACT = Path(__file__).with_name("tool_contract.json")
NOWHERE = "http://127.0.0.1:9"  # listing tools must not need a daemon

READS = {"route_task", "get_task", "list_tasks", "wait_task", "get_gpu_mode", "get_routing"}
READS |= {"host_status"}
CHANGES = {"set_gpu_mode", "set_routing", "cancel_task"}
ADDITIVE = {"submit_task"}


async def _tools() -> dict[str, Any]:
    async with Client(build_server(NOWHERE)) as client:
        return {tool.name: tool for tool in (await client.list_tools()).tools}


async def test_the_tool_set_and_annotations() -> None:
    tools = await _tools()
    assert set(tools) == READS | CHANGES | ADDITIVE
    for name, tool in tools.items():
        assert re.fullmatch(r"[a-z][a-z_]{0,63}", name), name
        assert tool.description and tool.output_schema, name
        hints = tool.annotations
        assert hints is not None and hints.open_world_hint is False, name
        if name in READS:
            assert hints.read_only_hint is True and not hints.destructive_hint, name
        elif name in CHANGES:
            assert hints.read_only_hint is False and hints.destructive_hint is True, name
        else:
            assert hints.read_only_hint is False and hints.destructive_hint is False, name


async def test_schemas_match_the_pinned_contract() -> None:
    tools = await _tools()
    actual = {
        name: {
            "annotations": tool.annotations.model_dump(exclude_none=True, by_alias=True),
            "input_schema": tool.input_schema,
            "output": (tool.output_schema or {}).get("title"),
        }
        for name, tool in tools.items()
    }
    pinned = json.loads(CONTRACT.read_text())
    for name in sorted(pinned):
        assert actual[name] == pinned[name], f"{name} changed; see the module docstring"
    assert set(actual) == set(pinned)


async def test_key_arguments() -> None:
    """The arguments the issue names, spelled out where a reader looks first."""
    tools = await _tools()

    def properties(name: str) -> set[str]:
        return set(tools[name].input_schema["properties"])

    assert {"prompt", "type", "tier", "model", "force_big", "context", "wait"} <= properties(
        "submit_task"
    )
    assert tools["submit_task"].input_schema["required"] == ["prompt"]
    assert properties("wait_task") == {"task_id", "timeout_s"}
    assert properties("set_gpu_mode") == {"mode", "device"}
    assert properties("set_routing") == {"routes", "replace"}
    status = tools["list_tasks"].input_schema["properties"]["status"]
    assert "cancelled" in json.dumps(status)
