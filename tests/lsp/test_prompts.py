"""Which task each command submits, and the editor context that travels with it."""

from __future__ import annotations

import pytest

from lsp.prompts import build

TEXT = "def f():\n    pass\n"


@pytest.mark.parametrize(
    ("command", "task_type"),
    [
        ("tierhost.plan", "planning"),
        ("tierhost.design", "design"),
        ("tierhost.review", "review"),
        ("tierhost.implement", "implementation"),
        ("tierhost.explain", "planning"),
    ],
)
def test_each_command_submits_its_task_type(command: str, task_type: str) -> None:
    request = build(
        command, path="src/f.py", text=TEXT, selection="    pass\n", first_line=2, last_line=2
    )
    assert request.type == task_type
    assert "src/f.py" in request.prompt and "lines 2-2" in request.prompt
    assert request.context["files"] == [{"path": "src/f.py", "content": TEXT}]
    assert request.context["selection"] == "    pass\n"


def test_only_an_implementation_names_a_target_file() -> None:
    implement = build("tierhost.implement", path="f.py", text=TEXT, selection=None)
    plan = build("tierhost.plan", path="f.py", text=TEXT, selection=None)
    assert implement.context["target_file"] == "f.py"
    assert "target_file" not in plan.context


def test_the_whole_file_without_a_selection() -> None:
    request = build("tierhost.review", path="f.py", text=TEXT, selection=None)
    assert "selection" not in request.context
    assert "lines" not in request.prompt.split("`line N:`")[0]
