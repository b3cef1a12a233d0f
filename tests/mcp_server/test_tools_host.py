"""GPU mode, routing table and host status tools over every transport."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.mcp_server.conftest import Connect, structured, text_of

pytestmark = pytest.mark.real

WAIT_S = 120.0


async def test_get_and_set_the_gpu_mode(connect: Connect) -> None:
    with anyio.fail_after(WAIT_S):
        async with connect() as client:
            before = await client.call_tool("get_gpu_mode", {})
            assert structured(before) == {"modes": {"gpu0": "auto"}}
            assert "gpu0: auto" in text_of(before)
            try:
                pinned = await client.call_tool(
                    "set_gpu_mode", {"mode": "builder", "device": "gpu0"}
                )
                assert structured(pinned) == {"modes": {"gpu0": "builder"}}
                assert "gpu0: builder" in text_of(pinned)
            finally:
                structured(await client.call_tool("set_gpu_mode", {"mode": "auto"}))


async def test_get_and_set_the_routing_table(connect: Connect) -> None:
    with anyio.fail_after(WAIT_S):
        async with connect() as client:
            table = structured(await client.call_tool("get_routing", {}))["routes"]
            assert table["planning"] == "architect" and table["implementation"] == "builder"
            try:
                changed = await client.call_tool("set_routing", {"routes": {"review": "builder"}})
                assert structured(changed)["routes"] == {**table, "review": "builder"}
                assert "review: builder" in text_of(changed)
                decision = await client.call_tool(
                    "route_task", {"prompt": "Look this over.", "type": "review"}
                )
                assert structured(decision)["tier"] == "builder"
            finally:
                restored = await client.call_tool("set_routing", {"routes": table, "replace": True})
                assert structured(restored)["routes"] == table


async def test_host_status_lists_devices_residents_and_models(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool("host_status", {})
    status = structured(result)
    devices = {d["name"]: d for d in status["devices"]}
    assert set(devices) == {"gpu0", "cpu"}
    assert set(devices["cpu"]["residents"]) == {"operator-demo", "validator-demo"}
    models = {m["name"]: m for m in status["models"]}
    assert models["validator-demo"]["state"] == "ready"
    text = text_of(result)
    assert "device gpu0" in text and "model validator-demo" in text and status["url"] in text
    # every transport reached a daemon that was already running: none was started for it
    assert status["daemon"] == f"attached {status['url']}" and status["daemon"] in text


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("set_gpu_mode", {"mode": "turbo"}, "turbo"),
        ("set_gpu_mode", {"mode": "gaming", "device": "cpu"}, "unknown GPU device 'cpu'"),
        ("set_routing", {"routes": {"planning": "nobody"}}, "nobody"),
        ("set_routing", {"routes": "planning=builder"}, "routes"),
    ],
)
async def test_bad_changes_are_tool_errors_and_change_nothing(
    connect: Connect, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    async with connect() as client:
        result = await client.call_tool(tool, arguments)
        assert result.is_error and expected in text_of(result)
        assert "Traceback" not in text_of(result)
        assert structured(await client.call_tool("get_gpu_mode", {}))["modes"] == {"gpu0": "auto"}
        routes = structured(await client.call_tool("get_routing", {}))["routes"]
        assert routes["planning"] == "architect"
