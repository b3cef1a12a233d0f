"""The task tools over every transport, against a real daemon with SmolLM2."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.mcp_server.conftest import Connect, structured, text_of

pytestmark = pytest.mark.real

TERMINAL = {"done", "failed", "cancelled"}
WAIT_S = 240.0


async def test_route_task_returns_the_decision_with_reasons(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool("route_task", {"prompt": "Plan the database schema."})
    decision = structured(result)
    assert (decision["type"], decision["tier"], decision["model"]) == (
        "design",  # the rules tie (plan, schema); the classifier reads a schema as design
        "architect",
        "architect-demo",
    )
    assert decision["reasons"]
    assert "architect-demo" in text_of(result) and decision["reasons"][0] in text_of(result)


async def test_route_task_honours_a_tier_override(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool(
            "route_task", {"prompt": "Plan the database schema.", "tier": "operator"}
        )
    assert structured(result)["tier"] == "operator"


async def test_submit_get_list_and_wait_for_a_task(connect: Connect) -> None:
    with anyio.fail_after(WAIT_S):
        async with connect() as client:
            submitted = await client.call_tool(
                "submit_task",
                {
                    "prompt": "Write a haiku about queues.",
                    "type": "email",
                    "context": {"files": [{"path": "notes.txt", "content": "queues"}]},
                    "max_tokens": 8,
                },
            )
            task = structured(submitted)
            assert task["status"] == "queued" and task["tier"] == "operator"
            assert task["id"] in text_of(submitted)

            fetched = structured(await client.call_tool("get_task", {"task_id": task["id"]}))
            assert fetched["id"] == task["id"] and fetched["events"]

            done = structured(await client.call_tool("wait_task", {"task_id": task["id"]}))
            assert done["status"] == "done" and done["result"] and done["tokens"] > 0

            listed = await client.call_tool("list_tasks", {"type": "email", "status": "done"})
            assert task["id"] in {t["id"] for t in structured(listed)["tasks"]}
            assert task["id"] in text_of(listed)


async def test_submit_with_wait_returns_the_result(connect: Connect) -> None:
    with anyio.fail_after(WAIT_S):
        async with connect() as client:
            result = await client.call_tool(
                "submit_task",
                {"prompt": "Say hello.", "type": "admin", "max_tokens": 8, "wait": True},
            )
    task = structured(result)
    assert task["status"] == "done" and task["result"]
    assert task["result"][:20] in text_of(result)


async def test_cancel_task_cancels_a_held_task(connect: Connect) -> None:
    """Pinning the GPU to the builder holds architect work in the queue, so the cancel
    cannot race the task's end."""
    with anyio.fail_after(WAIT_S):
        async with connect() as client:
            structured(await client.call_tool("set_gpu_mode", {"mode": "builder"}))
            try:
                task = structured(
                    await client.call_tool(
                        "submit_task", {"prompt": "Plan a garden.", "type": "planning"}
                    )
                )
                held = structured(await client.call_tool("get_task", {"task_id": task["id"]}))
                assert held["status"] == "queued" and held["waiting_because"]
                cancelled = await client.call_tool("cancel_task", {"task_id": task["id"]})
                assert structured(cancelled)["status"] == "cancelled"
                assert "cancelled" in text_of(cancelled)
            finally:
                structured(await client.call_tool("set_gpu_mode", {"mode": "auto"}))


async def _run_until_running(
    client: Any, arguments: dict[str, Any], reports: list[tuple[float, str | None]]
) -> None:
    """Call submit_task with wait, and cancel the call once the task is generating."""
    running = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, message))
        if message and message.startswith("running"):
            running.set()

    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: client.call_tool("submit_task", arguments, progress_callback=on_progress)
        )
        await running.wait()
        group.cancel_scope.cancel()


async def test_a_long_task_reports_progress_and_is_cancelled_with_the_call(
    connect: Connect,
) -> None:
    reports: list[tuple[float, str | None]] = []
    prompt = "Plan, step by step, a long detailed migration of a large web shop to a new stack."
    with anyio.fail_after(WAIT_S):
        async with connect() as client:
            # the builder on gpu0 first, so the planning task has to wait for a swap
            builder = {"prompt": "Say hi.", "type": "implementation", "max_tokens": 1}
            structured(await client.call_tool("submit_task", {**builder, "wait": True}))
            await _run_until_running(
                client,
                {"prompt": prompt, "type": "planning", "max_tokens": 200, "wait": True},
                reports,
            )
            messages = [m or "" for _, m in reports]
            assert any(m.startswith(("queued", "swapping", "waiting")) for m in messages), messages
            assert [p for p, _ in reports] == sorted(p for p, _ in reports)

            listed = structured(await client.call_tool("list_tasks", {"type": "planning"}))
            mine = next(t for t in listed["tasks"] if t["prompt"] == prompt)
            while mine["status"] not in TERMINAL:
                await anyio.sleep(0.05)
                mine = structured(await client.call_tool("get_task", {"task_id": mine["id"]}))
    assert mine["status"] == "cancelled", mine


async def test_wait_task_reports_tokens_while_a_task_runs(connect: Connect) -> None:
    reports: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append(message or "")

    with anyio.fail_after(WAIT_S):
        async with connect() as client:
            task = structured(
                await client.call_tool(
                    "submit_task",
                    {"prompt": "Plan a small library app.", "type": "planning", "max_tokens": 64},
                )
            )
            done = structured(
                await client.call_tool(
                    "wait_task", {"task_id": task["id"]}, progress_callback=on_progress
                )
            )
    assert done["status"] == "done"
    assert any(m.startswith("running on architect-demo") for m in reports), reports


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("get_task", {"task_id": "no-such-task"}, "no-such-task"),
        ("cancel_task", {"task_id": "no-such-task"}, "no-such-task"),
        ("wait_task", {"task_id": "no-such-task"}, "no-such-task"),
        ("submit_task", {"prompt": "x", "type": "juggling"}, "juggling"),
        ("route_task", {"prompt": "x", "type": "juggling"}, "juggling"),
        ("route_task", {"prompt": "x", "tier": "nobody"}, "nobody"),
        ("list_tasks", {"status": "sleeping"}, "status"),
        ("submit_task", {"prompt": ""}, "prompt"),
    ],
)
async def test_bad_arguments_are_tool_errors_with_a_clear_message(
    connect: Connect, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    async with connect() as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    message = text_of(result)
    assert expected in message and "Traceback" not in message
