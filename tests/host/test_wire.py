"""host.wire, the HTTP contract: requests refuse what the API refuses, results ignore what
they do not know, the statuses are the state machine's, and nobody keeps a copy.

The API's own behaviour over HTTP is in tests/host/api (test_bodies, test_api_fuzz);
these check the models without a daemon, and that the API validates with them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from host import wire
from host.core import task_states
from host.core.task_states import TaskStatus

ROOT = Path(__file__).resolve().parents[2]

# -- requests ------------------------------------------------------------------------

SUBMISSION: dict[str, Any] = {"prompt": "Plan a small CLI tool."}

SMALLEST_BODIES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (wire.ContextFile, {"path": "a.py"}),
    (wire.TaskContext, {}),
    (wire.GenerationParams, {}),
    (wire.TaskSubmission, SUBMISSION),
    (wire.RouteQuery, {"prompt": "x"}),
    (wire.RoutingChange, {"routes": {"review": "builder"}}),
    (wire.ModeChange, {"mode": "auto"}),
]


def _named(param: object) -> str | None:
    """Test ids by model name; the bodies keep pytest's own ids."""
    return param.__name__ if isinstance(param, type) else None


def _refusal(model: type[BaseModel], body: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The type and location of the first error, as `host.errors.read_model` reports it."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    first = caught.value.errors()[0]
    return first["type"], tuple(first["loc"])


@pytest.mark.parametrize(("model", "body"), SMALLEST_BODIES, ids=_named)
def test_a_request_takes_its_smallest_body_and_refuses_an_unknown_key(
    model: type[BaseModel], body: dict[str, Any]
) -> None:
    model.model_validate(body)
    assert _refusal(model, {**body, "colour": "red"}) == ("extra_forbidden", ("colour",))


def test_an_unknown_key_deep_in_a_submission_is_refused_where_it_is() -> None:
    deep = {**SUBMISSION, "context": {"files": [{"path": "a.py", "mode": "rw"}]}}
    assert _refusal(wire.TaskSubmission, deep) == (
        "extra_forbidden",
        ("context", "files", 0, "mode"),
    )
    params = {**SUBMISSION, "params": {"max_tokens": 5, "stop": ["\n"]}}
    assert _refusal(wire.TaskSubmission, params) == ("extra_forbidden", ("params", "stop"))


FILE = {"path": "a.py"}

OVER_THE_LIMIT: list[tuple[type[BaseModel], dict[str, Any], tuple[Any, ...]]] = [
    (wire.TaskSubmission, {"prompt": ""}, ("prompt",)),
    (wire.TaskSubmission, {"prompt": "x" * 4_000_001}, ("prompt",)),
    (wire.TaskSubmission, {**SUBMISSION, "priority": 101}, ("priority",)),
    (wire.TaskSubmission, {**SUBMISSION, "priority": -101}, ("priority",)),
    (wire.TaskSubmission, {**SUBMISSION, "validation": "sometimes"}, ("validation",)),
    (wire.TaskSubmission, {**SUBMISSION, "params": {"max_tokens": 0}}, ("params", "max_tokens")),
    (
        wire.TaskSubmission,
        {**SUBMISSION, "params": {"max_tokens": 131073}},
        ("params", "max_tokens"),
    ),
    (wire.GenerationParams, {"temperature": 5.01}, ("temperature",)),
    (wire.GenerationParams, {"temperature": -0.01}, ("temperature",)),
    (wire.GenerationParams, {"top_p": 1.01}, ("top_p",)),
    (wire.ContextFile, {"path": ""}, ("path",)),
    (wire.ContextFile, {"path": "a" * 4097}, ("path",)),
    (wire.TaskContext, {"files": [FILE] * 201}, ("files",)),
    (wire.RouteQuery, {"prompt": "x" * 4_000_001}, ("prompt",)),
    (wire.RouteQuery, {"prompt": "x", "context_files": ["a.py"] * 201}, ("context_files",)),
    (wire.RoutingChange, {"routes": {"review": 3}}, ("routes", "review")),
    (wire.ModeChange, {"device": "gpu0"}, ("mode",)),
]


@pytest.mark.parametrize(("model", "body", "where"), OVER_THE_LIMIT)
def test_a_request_refuses_what_the_api_refuses(
    model: type[BaseModel], body: dict[str, Any], where: tuple[Any, ...]
) -> None:
    assert _refusal(model, body)[1] == where


def test_the_limits_themselves_are_accepted() -> None:
    wire.TaskSubmission.model_validate(
        {
            "prompt": "x" * 4_000_000,
            "priority": -100,
            "validation": "block_by_block",
            "context": {"files": [{"path": "a" * 4096}] * 200, "target_file": "a.py"},
            "params": {"max_tokens": 131072, "temperature": 5, "top_p": 1, "seed": 7},
        }
    )
    wire.RouteQuery.model_validate({"prompt": "", "context_files": ["a.py"] * 200})


def test_the_api_validates_its_bodies_with_the_wire_models() -> None:
    """No handler module keeps a body model of its own beside the shared one."""
    from host.api import control, routing, tasks

    for module in (control, routing, tasks):
        models = [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, BaseModel)
        ]
        assert models, module.__name__
        assert {model.__module__ for model in models} == {"host.wire"}, module.__name__


# -- results -------------------------------------------------------------------------

TASK: dict[str, Any] = {"id": "t1", "status": "running"}

SMALLEST_RESULTS: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (wire.Decision, {}),
    (wire.TaskEvent, {"status": "queued", "at": 1.5}),
    (wire.Finding, {"line": 3, "message": "x", "severity": "error", "source": "ruff"}),
    (wire.Task, TASK),
    (wire.TaskList, {"tasks": [TASK]}),
    (wire.Modes, {"modes": {"gpu0": "auto"}}),
    (wire.RoutingTable, {"routes": {"review": "builder"}}),
    (wire.DeviceStatus, {"name": "gpu0"}),
    (wire.ModelStatus, {"name": "builder-demo"}),
    (wire.HostStatus, {"devices": [], "models": []}),
    (wire.Health, {"status": "ok"}),
    (wire.SwapList, {"swaps": [{"id": 1, "model": "m", "device": "gpu0", "started": 1.0}]}),
]


@pytest.mark.parametrize(("model", "answer"), SMALLEST_RESULTS, ids=_named)
def test_a_result_drops_a_key_it_does_not_know(
    model: type[BaseModel], answer: dict[str, Any]
) -> None:
    read = model.model_validate({**answer, "added_in_a_later_daemon": [1, 2]})
    assert "added_in_a_later_daemon" not in read.model_dump()


def test_a_task_reads_the_daemon_s_answer_with_new_keys_at_every_depth() -> None:
    answer = {
        **TASK,
        "decision": {"tier": "builder", "reasons": ["type"], "new": 1},
        "events": [{"status": "queued", "at": 1.0, "new": 2}],
        "findings": [{"line": 1, "message": "m", "severity": "warning", "source": "s", "new": 3}],
    }
    task = wire.Task.model_validate(answer)
    assert task.decision is not None and task.decision.tier == "builder"
    assert "new" not in str(task.model_dump())


def test_the_host_status_is_the_daemon_s_document_without_an_address() -> None:
    """`/api/status` names no URL; the MCP server adds the one it asked."""
    assert "url" not in wire.HostStatus.model_fields


# -- statuses ------------------------------------------------------------------------


def test_the_status_names_are_the_state_machine_s() -> None:
    assert tuple(status.value for status in TaskStatus) == wire.STATUS_NAMES
    assert wire.STATUS_NAMES == (
        "queued",
        "waiting_device",
        "running",
        "validating",
        "done",
        "failed",
        "cancelled",
    )


def test_terminal_is_the_state_machine_s_and_means_no_way_out() -> None:
    assert wire.TERMINAL is task_states.TERMINAL
    assert {"done", "failed", "cancelled"} == wire.TERMINAL  # as a client's strings compare
    for status in TaskStatus:
        leaves = any(task_states.can_move(status, other) for other in TaskStatus)
        assert leaves is (status not in wire.TERMINAL), status


def test_a_status_is_read_into_the_enum_and_published_as_its_names() -> None:
    names = TypeAdapter(wire.TaskStatusName)
    for name in wire.STATUS_NAMES:
        assert names.validate_python(name) is TaskStatus(name)
        assert names.validate_json(f'"{name}"') is TaskStatus(name)
    with pytest.raises(ValidationError, match="'queued', 'waiting_device'"):
        names.validate_python("finished")
    assert names.json_schema() == {"enum": list(wire.STATUS_NAMES), "type": "string"}
    task = wire.Task.model_validate({"id": "t", "status": "done"})
    assert task.status is TaskStatus.DONE and task.status in wire.TERMINAL
    assert task.model_dump(mode="json")["status"] == "done"


# -- purity --------------------------------------------------------------------------

ALLOWED_IMPORTS = {"__future__", "typing", "pydantic", "host.core.task_states"}


def test_wire_imports_only_pydantic_typing_and_the_task_states() -> None:
    tree = ast.parse((ROOT / "host" / "wire.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            imported.add(node.module)
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS


def test_importing_wire_loads_no_other_host_module_nor_a_network_library() -> None:
    """Every client imports it: it must cost pydantic and nothing of ours."""
    probe = (
        "import sys, host.wire; "
        "print(' '.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'host', 'httpx', 'starlette', 'uvicorn', 'anyio'})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == ["host", "host.core", "host.core.task_states", "host.wire"]


# -- no copies -----------------------------------------------------------------------

STATUS_SETS = {
    "TERMINAL": frozenset(task_states.TERMINAL),
    "ACTIVE": frozenset(task_states.ACTIVE),
    "every status": frozenset(wire.STATUS_NAMES),
}
DEFINED_ONCE = {"TERMINAL", "ACTIVE", "STATUS_NAMES", "TaskStatusName"}
DEFINERS = {"host/core/task_states.py", "host/wire.py"}


def _strings(nodes: list[ast.expr]) -> frozenset[str] | None:
    """The strings of a literal collection, or None when it holds anything else."""
    values = [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return frozenset(values) if len(values) == len(nodes) and values else None


def status_copies(source: str) -> list[str]:
    """Where a module spells out one of the state machine's sets of statuses, as a tuple,
    list or set of strings or a `Literal[...]`, or binds a name only the definers may."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        strings: frozenset[str] | None = None
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            strings = _strings(node.elts)
        elif isinstance(node, ast.Subscript) and (
            (isinstance(node.value, ast.Name) and node.value.id == "Literal")
            or (isinstance(node.value, ast.Attribute) and node.value.attr == "Literal")
        ):
            inner = node.slice
            strings = _strings(inner.elts if isinstance(inner, ast.Tuple) else [inner])
        for name, statuses in STATUS_SETS.items():
            if strings == statuses:
                found.append(f"line {node.lineno}: {name} spelt out")
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name) and target.id in DEFINED_ONCE:
                found.append(f"line {node.lineno}: {target.id} defined")
    return found


@pytest.mark.parametrize(
    "source",
    [
        'TERMINAL = {"done", "failed", "cancelled"}',
        'TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})',
        'if t.status not in ("done", "failed", "cancelled"): pass',
        'Name = Literal["queued", "waiting_device", "running", "validating", "done", '
        '"failed", "cancelled"]',
        'busy = ["waiting_device", "running", "validating"]',
        "TERMINAL = frozenset(s for s in TaskStatus if s.value[0] in 'dfc')",
    ],
)
def test_the_scan_sees_every_old_spelling(source: str) -> None:
    assert status_copies(source), source


def test_the_scan_lets_other_sets_of_statuses_be() -> None:
    """A test of two statuses that means something else ("ended with an answer to show")
    is not a copy of the state machine's sets."""
    assert status_copies('if status in ("done", "failed"): pass') == []
    assert status_copies("from host.wire import TERMINAL") == []


def test_no_module_keeps_its_own_statuses() -> None:
    copies = {
        str(path.relative_to(ROOT)): found
        for package in ("host", "mcp_server", "lsp")
        for path in sorted((ROOT / package).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in DEFINERS
        and (found := status_copies(path.read_text()))
    }
    assert copies == {}, "import TERMINAL / STATUS_NAMES / TaskStatusName from host.wire"
