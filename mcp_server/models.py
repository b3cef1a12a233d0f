"""The pydantic shapes of the MCP tools' arguments and structured results.

The daemon's JSON is the source of truth; these models pin the part of it that MCP
clients may rely on (the published output schema), and drop anything else, so a new
field in the daemon never breaks a client that validates against the schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatusName = Literal[
    "queued", "waiting_device", "running", "validating", "done", "failed", "cancelled"
]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})


class _Out(BaseModel):
    """Results: unknown keys from the daemon are dropped, not refused."""

    model_config = ConfigDict(extra="ignore")


class _In(BaseModel):
    """Arguments: a misspelt key is an error the model can read and correct."""

    model_config = ConfigDict(extra="forbid")


# -- arguments -----------------------------------------------------------------------


class ContextFile(_In):
    """One file the task should see, with its content as the editor has it."""

    path: str = Field(min_length=1, max_length=4096, description="Path of the file")
    content: str = Field("", description="The file's text (unsaved edits included)")


class TaskContext(_In):
    """What the editor knows: open files, the selection, the file a patch is for."""

    files: list[ContextFile] = Field(default_factory=list, max_length=200)
    selection: str | None = Field(None, description="The selected text, if any")
    target_file: str | None = Field(
        None, description="The file an implementation is for; its result is offered as a patch"
    )


# -- results -------------------------------------------------------------------------


class Decision(_Out):
    """Where a prompt goes, and the ordered reasons the router gave."""

    type: str | None = None
    tier: str | None = None
    model: str | None = None
    device: str | None = None
    reasons: list[str] = Field(default_factory=list)
    force_big: bool = False
    wait_reason: str | None = None
    estimated_tokens: int = 0


class TaskEvent(_Out):
    status: str
    reason: str | None = None
    at: float


class Finding(_Out):
    """A problem a validator pass found, pointing at a line of a code block (1-based)."""

    line: int
    message: str
    severity: Literal["error", "warning"]
    source: str
    block: int | None = None


class Task(_Out):
    """A task as the daemon reports it; `events` only where the daemon sends them."""

    id: str
    status: TaskStatusName
    type: str | None = None
    tier: str | None = None
    model: str | None = None
    priority: int = 0
    validation: str | None = None
    prompt: str = ""
    override: dict[str, Any] = Field(default_factory=dict)
    decision: Decision | None = None
    result: str | None = None
    error: str | None = None
    tokens: int = 0
    created: float | None = None
    updated: float | None = None
    queue_position: int | None = None
    waiting_because: str | None = None
    events: list[TaskEvent] | None = None
    validated: bool | None = Field(
        None, description="Validator pass outcome; null when not validated (yet)"
    )
    attempts: int = Field(0, description="Builder attempts the validator pass took")
    findings: list[Finding] = Field(default_factory=list)
    patch: str | None = Field(
        None, description="Unified diff of the accepted result against context.target_file"
    )


class TaskList(_Out):
    tasks: list[Task]


class Modes(_Out):
    """The GPU mode of each device (`auto`, a tier name, or `gaming`)."""

    modes: dict[str, str]


class RoutingTable(_Out):
    """Task type → tier."""

    routes: dict[str, str]


class DeviceStatus(_Out):
    name: str
    kind: str | None = None
    budget_mb: int | None = None
    used_mb: int | None = None
    mode: str | None = None
    hold: str | None = None
    residents: list[str] = Field(default_factory=list)
    queue: int = 0


class ModelStatus(_Out):
    name: str
    tier: str | None = None
    kind: str | None = None
    device: str | None = None
    state: str | None = None
    pid: int | None = None
    port: int | None = None
    in_flight: int = 0
    queued: int = 0


class HostStatus(_Out):
    """Devices with their residents and queues, every model's state, task counts."""

    url: str
    devices: list[DeviceStatus]
    models: list[ModelStatus]
    tasks: dict[str, Any] = Field(default_factory=dict)
