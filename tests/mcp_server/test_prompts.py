"""The `plan` and `implement` prompts name the task type and the tier it routes to."""

from __future__ import annotations

import pytest

from tests.mcp_server.conftest import Connect

pytestmark = pytest.mark.real


async def test_prompts_are_listed_with_their_arguments(connect: Connect) -> None:
    async with connect() as client:
        listed = await client.list_prompts()
    arguments = {p.name: [a.name for a in p.arguments or []] for p in listed.prompts}
    assert arguments == {"plan": ["goal", "constraints"], "implement": ["task", "target_file"]}


async def test_plan_routes_to_the_architect(connect: Connect) -> None:
    async with connect() as client:
        prompt = await client.get_prompt("plan", {"goal": "A CLI for notes."})
    text = prompt.messages[0].content.text  # type: ignore[union-attr]
    assert '"planning"' in text and "architect tier" in text and "A CLI for notes." in text


async def test_implement_routes_to_the_builder_with_the_target_file(connect: Connect) -> None:
    async with connect() as client:
        prompt = await client.get_prompt(
            "implement", {"task": "Add a --json flag.", "target_file": "cli.py"}
        )
    text = prompt.messages[0].content.text  # type: ignore[union-attr]
    assert '"implementation"' in text and "builder tier" in text and "cli.py" in text
