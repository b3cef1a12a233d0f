"""`tierhost submit --wait`'s progress line for each phase of a task, pure."""

from __future__ import annotations

from typing import Any

import pytest

from host.cli.tasks import phase
from host.wire import Task


@pytest.mark.parametrize(
    ("answer", "state", "line"),
    [
        # the answer to the submission carries no position: none is made up
        ({"status": "queued"}, None, "queued"),
        ({"status": "queued", "queue_position": 3}, None, "queued (position 3)"),
        (
            {"status": "queued", "queue_position": 1, "waiting_because": "gpu0 is gaming"},
            None,
            "queued (position 1) — gpu0 is gaming",
        ),
        ({"status": "waiting_device", "model": "m"}, "starting", "swapping in m"),
        ({"status": "waiting_device", "model": "m"}, "waking", "swapping in m"),
        ({"status": "waiting_device", "model": "m"}, "stopped", "waiting for device"),
        ({"status": "running", "model": "m", "tokens": 9}, None, "running on m: 9 tokens"),
        ({"status": "validating"}, None, "validating"),
    ],
)
def test_the_progress_line_says_where_the_task_is(
    answer: dict[str, Any], state: str | None, line: str
) -> None:
    assert phase(Task.model_validate({"id": "t-1", **answer}), state) == line
