"""The `task://{id}` and `routing://table` resources over every transport."""

from __future__ import annotations

import json

import pytest
from mcp import MCPError

from tests.mcp_server.conftest import Connect, structured

pytestmark = pytest.mark.real


async def test_routing_table_resource(connect: Connect) -> None:
    async with connect() as client:
        listed = await client.list_resources()
        assert "routing://table" in {str(r.uri) for r in listed.resources}
        read = await client.read_resource("routing://table")
    document = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert document["version"] == 1 and document["routes"]["planning"] == "architect"


async def test_task_resource(connect: Connect) -> None:
    async with connect() as client:
        templates = await client.list_resource_templates()
        assert "task://{task_id}" in {t.uri_template for t in templates.resource_templates}
        task = structured(
            await client.call_tool("route_task", {"prompt": "x"})
        )  # a cheap call first: the resource must work on a warm connection too
        assert task["reasons"]
        submitted = structured(
            await client.call_tool("submit_task", {"prompt": "Say hi.", "type": "admin"})
        )
        read = await client.read_resource(f"task://{submitted['id']}")
    document = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert document["id"] == submitted["id"] and document["events"]


async def test_an_unknown_task_resource_is_a_clear_error(connect: Connect) -> None:
    async with connect() as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource("task://no-such-task")
    assert "no-such-task" in str(caught.value)
