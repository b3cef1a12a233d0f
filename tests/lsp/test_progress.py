"""The progress line for each phase of a task, and the percentage when it is known."""

from __future__ import annotations

from typing import Any

import pytest

from host.wire import Task
from lsp.progress import percentage, phase


def task_of(fields: dict[str, Any]) -> Task:
    """The task as `HostClient` hands it over: the JSON checked against `host.wire.Task`."""
    return Task.model_validate({"id": "t-1", **fields})


@pytest.mark.parametrize(
    ("task", "state", "message"),
    [
        ({"status": "queued", "queue_position": 2}, None, "queued (position 2)"),
        (
            {"status": "queued", "queue_position": 1, "waiting_because": "gpu0 is in gaming mode"},
            None,
            "queued (position 1) — gpu0 is in gaming mode",
        ),
        ({"status": "queued"}, None, "queued (position ?)"),
        (
            {"status": "waiting_device", "model": "architect-demo"},
            "starting",
            "swapping in architect-demo",
        ),
        (
            {"status": "waiting_device", "model": "architect-demo"},
            "stopped",
            "waiting for architect-demo to get its device",
        ),
        (
            {"status": "running", "model": "builder-demo", "tokens": 17},
            None,
            "running on builder-demo: 17 tokens",
        ),
        ({"status": "validating", "tokens": 40}, None, "validating: 40 tokens generated"),
        ({"status": "done", "tokens": 40, "model": "m"}, None, "done: 40 tokens from m"),
        ({"status": "failed", "error": "boom"}, None, "failed: boom"),
        ({"status": "cancelled"}, None, "cancelled"),
    ],
)
def test_phase(task: dict[str, Any], state: str | None, message: str) -> None:
    assert phase(task_of(task), state) == message


@pytest.mark.parametrize(
    ("task", "max_tokens", "expected"),
    [
        ({"status": "running", "tokens": 5}, None, None),
        ({"status": "running", "tokens": 5}, 20, 25),
        ({"status": "running", "tokens": 40}, 20, 99),  # never 100 before the end
        ({"status": "queued"}, 20, 0),
        ({"status": "done", "tokens": 3}, 20, 100),
    ],
)
def test_percentage(task: dict[str, Any], max_tokens: int | None, expected: int | None) -> None:
    assert percentage(task_of(task), max_tokens) == expected
