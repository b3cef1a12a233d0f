"""The HTTP contract between the daemon and its clients, written once.

The daemon validates its request bodies with these models, and the MCP server, the CLI
and the LSP bridge read its answers with them, so a field, a limit or a status name is
changed in one place and every side sees the change. The descriptions here are the
API's documentation and what MCP clients are shown in the tools' schemas.

Two policies, on purpose:

- requests refuse unknown keys (`extra="forbid"`): a misspelt field is an error its
  sender can read and correct, not a setting silently ignored;
- results drop unknown keys (`extra="ignore"`): a new field in the daemon's answer must
  not break a client that validates against an older schema.

Every client imports this module, so it imports only pydantic, typing and the task
state machine: no HTTP, server or event-loop library (`tests/host/test_wire.py` checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from host.core.task_states import ACTIVE, TERMINAL, TaskStatus

__all__ = [
    "ACTIVE",
    "STATUS_NAMES",
    "TERMINAL",
    "BoxMode",
    "ContextFile",
    "Decision",
    "DeviceStatus",
    "Finding",
    "GenerationParams",
    "GivenContext",
    "GivenFile",
    "Health",
    "HostStatus",
    "ModeChange",
    "ModelStatus",
    "Modes",
    "RouteQuery",
    "RoutingChange",
    "RoutingTable",
    "ScratchpadEntry",
    "SleepRam",
    "SleepStats",
    "Sleeper",
    "SlotStats",
    "Swap",
    "SwapList",
    "Task",
    "TaskContext",
    "TaskCounts",
    "TaskEvent",
    "TaskList",
    "TaskStatus",
    "TaskStatusName",
    "TaskSubmission",
]

# -- task statuses -------------------------------------------------------------------
#
# The state machine in `host.core.task_states` is the one definition; `TERMINAL` and
# `ACTIVE` are re-exported from it unchanged. `TaskStatus` is a StrEnum, so its members
# equal (and hash like) the plain strings a client holds from the JSON: `"done" in
# TERMINAL` is true.

STATUS_NAMES: tuple[str, ...] = tuple(status.value for status in TaskStatus)
"""Every status a task can have, in the order of its life."""

# A status in a model field or a tool argument, a `TaskStatus` once validated. It is
# checked and published as a Literal of the names, not as the enum: pydantic publishes an
# enum as a `$ref` to a definition and drops the field's title, while MCP clients have
# always been given a plain string enum (`tests/mcp_server/tool_contract.json` pins it);
# and a wrong status is answered with the names as a user types them. A type checker
# cannot read a Literal built from a tuple, hence two spellings of the one type.
if TYPE_CHECKING:
    TaskStatusName = TaskStatus
else:
    TaskStatusName = Annotated[Literal[STATUS_NAMES], AfterValidator(TaskStatus)]


class _Request(BaseModel):
    """Request bodies: a misspelt key is an error the sender can read and correct."""

    model_config = ConfigDict(extra="forbid")


class _Result(BaseModel):
    """The daemon's answers: unknown keys are dropped, not refused."""

    model_config = ConfigDict(extra="ignore")


# -- requests: what the daemon accepts -----------------------------------------------


class ContextFile(_Request):
    """One file the task should see, with its content as the editor has it."""

    path: str = Field(min_length=1, max_length=4096, description="Path of the file")
    content: str = Field("", description="The file's text (unsaved edits included)")


class TaskContext(_Request):
    """What the editor knows: open files, the selection, the file a patch is for."""

    files: list[ContextFile] = Field(default_factory=list, max_length=200)
    selection: str | None = Field(None, description="The selected text, if any")
    target_file: str | None = Field(
        None, description="The file an implementation is for; its result is offered as a patch"
    )


class GenerationParams(_Request):
    """The few sampling settings a task may choose; the command line stays in config."""

    max_tokens: int | None = Field(None, ge=1, le=131072)
    temperature: float | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None


class TaskSubmission(_Request):
    """The body of `POST /api/tasks`: a prompt, how to route it, what it may see."""

    prompt: str = Field(min_length=1, max_length=4_000_000)
    type: str | None = None
    tier: str | None = None
    model: str | None = None
    force_big: bool = False
    priority: int = Field(0, ge=-100, le=100)
    validation: Literal["none", "final", "block_by_block"] | None = None
    context: TaskContext = Field(default_factory=TaskContext)
    params: GenerationParams = Field(default_factory=GenerationParams)


class RouteQuery(_Request):
    """The body of `POST /api/route`: the router's dry run, which runs nothing."""

    prompt: str = Field(max_length=4_000_000)
    type: str | None = None
    tier: str | None = None
    model: str | None = None
    force_big: bool = False
    context_files: list[str] = Field(default_factory=list, max_length=200)


class RoutingChange(_Request):
    """The body of `PUT /api/routing`: the whole new table, task type → tier.

    Named for the change, like `ModeChange`; the table the daemon answers with is the
    result `RoutingTable`, which ignores unknown keys where this one refuses them."""

    routes: dict[str, str]


class ModeChange(_Request):
    """The body of `PUT /api/mode`: a mode for one device, or for every GPU."""

    mode: str
    device: str | None = None


# -- results: what the daemon answers ------------------------------------------------


class TypeProbability(_Result):
    type: str
    probability: float


class ClassifierOpinion(_Result):
    """What the statistical classifier thought, and how sure it had to be to decide."""

    type: str
    confidence: float
    words: list[str] = Field(default_factory=list)
    ranking: list[TypeProbability] = Field(default_factory=list)
    needed: float | None = None


class ClassifierModelAnswer(_Result):
    """What the classifier model was asked to choose among, and what it said."""

    model: str
    choices: list[str] = Field(default_factory=list)
    answer: str | None = None
    error: str | None = None


class TypeEvidence(_Result):
    """Every step's evidence for an inferred type (`tierhost route --explain`)."""

    decided_by: str
    """`rule`, `classifier`, `weak rule`, `classifier model` or `default`."""
    rule: str
    rule_scores: dict[str, float] = Field(default_factory=dict)
    strong_rule: bool = False
    classifier: ClassifierOpinion | None = None
    classifier_model: ClassifierModelAnswer | None = None


class Decision(_Result):
    """Where a prompt goes, and the ordered reasons the router gave."""

    type: str | None = None
    tier: str | None = None
    model: str | None = None
    device: str | None = None
    reasons: list[str] = Field(default_factory=list)
    force_big: bool = False
    wait_reason: str | None = None
    estimated_tokens: int = 0
    type_evidence: TypeEvidence | None = None
    """None when the request gave the type."""


class GivenFile(_Result):
    """A file of the context a task was given, as the daemon keeps it."""

    path: str
    content: str = ""


class GivenContext(_Result):
    """The context a task was given (`TaskContext` as the daemon answers it)."""

    files: list[GivenFile] = Field(default_factory=list)
    selection: str | None = None
    target_file: str | None = None


class ScratchpadEntry(_Result):
    """One turn of a validated task's conversation: the builder's answer, a check's or
    the validator's verdict, a correction (clipped)."""

    role: str
    content: str
    attempt: int
    block: int | None = None
    """The code block a block-by-block pass was on."""


class TaskEvent(_Result):
    status: str
    reason: str | None = None
    at: float
    data: dict[str, Any] | None = None
    """What the step that moved it knew: the validation attempt and phase, say."""


class Finding(_Result):
    """A problem a validator pass found, pointing at a line of a code block (1-based)."""

    line: int
    message: str
    severity: Literal["error", "warning"]
    source: str
    block: int | None = None


class Task(_Result):
    """A task as the daemon reports it; `events` only where the daemon sends them."""

    id: str
    status: TaskStatusName
    type: str | None = None
    tier: str | None = None
    model: str | None = None
    priority: int = 0
    validation: str | None = None
    prompt: str = ""
    context: GivenContext | None = None
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
    scratchpad: list[ScratchpadEntry] = Field(default_factory=list)


class TaskList(_Result):
    tasks: list[Task]


class Modes(_Result):
    """The GPU mode of each device (`auto`, a tier name, or `gaming`)."""

    modes: dict[str, str]


class RoutingTable(_Result):
    """Task type → tier."""

    routes: dict[str, str]


class QueuedWork(_Result):
    """One waiter in a device's queue, in the order the policy serves them."""

    model: str
    work: str
    """`request` (the proxy, validator, classifier) or `task` (a task's model)."""
    priority: int = 0
    waited_s: float = 0.0
    max_wait_s: float | None = None
    held: bool = False
    """The device's mode holds its model back."""


class QueueOrder(_Result):
    """Which rule of the policy ordered a device's queue (host.core.batching)."""

    rule: str
    model: str | None = None
    why: str = ""


class DeviceStatus(_Result):
    name: str
    kind: str | None = None
    budget_mb: int | None = None
    used_mb: int | None = None
    """What the models placed here are counted at (the budget's side)."""
    gpu_used_mb: int | None = None
    """What NVML measures in use on the card, by anyone (None without a real card)."""
    mode: str | None = None
    hold: str | None = None
    residents: list[str] = Field(default_factory=list)
    asleep: list[str] = Field(default_factory=list)
    """Models asleep here: their process is up, their memory given back."""
    queue: int = 0
    waiting: list[QueuedWork] = Field(default_factory=list)
    order: QueueOrder | None = None


class SlotStats(_Result):
    """A model's saved KV slots (`host.models.kv_slots`): what is kept on disk, and what
    restoring it saved."""

    saved: int = 0
    saved_bytes: int = 0
    saves: int = 0
    restores: int = 0
    restores_missed: int = 0
    tokens_saved: int = 0


class SleepStats(_Result):
    """A model that sleeps instead of stopping: how often and how fast."""

    asleep: bool = False
    asleep_since: float | None = None
    sleeps: int = 0
    wakes: int = 0
    last_sleep_s: float | None = None
    last_wake_s: float | None = None
    rss_mb: int | None = None
    """What its process holds in RAM while asleep (None while awake)."""


class BoxMode(_Result):
    """The other box's own GPU mode, as its mode endpoint last said."""

    gaming: bool
    reason: str | None = None
    checked_at: float | None = None


class ModelStatus(_Result):
    name: str
    tier: str | None = None
    kind: str | None = None
    device: str | None = None
    """The device it is placed on; several joined by `+` for a model across GPUs."""
    devices: list[str] = Field(default_factory=list)
    memory_by_device: dict[str, int] = Field(default_factory=dict)
    state: str | None = None
    pid: int | None = None
    port: int | None = None
    in_flight: int = 0
    queued: int = 0
    memory_mb: int | None = None
    warm: float | None = None
    """The share of its weights in the page cache (`host.models.warm_pool`)."""
    persistent: bool = False
    restarts: int = 0
    last_error: str | None = None
    log: str | None = None
    profile: str | None = None
    kv_slots: SlotStats | None = None
    sleep: SleepStats | None = None
    # a remote model: where it is and its last health probe (None for one run here)
    base_url: str | None = None
    reachable: bool | None = None
    probed: bool | None = None
    probe_ms: float | None = None
    checked_at: float | None = None
    reachable_since: float | None = None
    unreachable_since: float | None = None
    box_mode: BoxMode | None = None


class Sleeper(_Result):
    model: str
    ram_mb: int
    rss_mb: int | None = None


class SleepRam(_Result):
    """The RAM that sleeping models may hold, and who holds it."""

    budget_mb: int | None = None
    used_mb: int = 0
    sleepers: list[Sleeper] = Field(default_factory=list)


class TaskCounts(_Result):
    by_status: dict[str, int] = Field(default_factory=dict)
    running: int = 0


class HostStatus(_Result):
    """Devices with their residents and queues, every model's state, task counts."""

    uptime_s: float | None = None
    devices: list[DeviceStatus]
    models: list[ModelStatus]
    sleep_ram: SleepRam | None = None
    tasks: TaskCounts = Field(default_factory=TaskCounts)


class Health(_Result):
    """`GET /health`: the daemon is up. Nothing is read to say so (no NVML, no status)."""

    status: str
    uptime_s: float | None = None


class Swap(_Result):
    """One swap from `GET /api/swaps`: a model brought onto a device, and what it evicted."""

    id: int
    model: str
    device: str
    started: float
    ready: float | None = None
    duration_s: float | None = None
    evicted: list[str] = Field(default_factory=list)
    reason: str = ""
    outcome: str = ""


class SwapList(_Result):
    swaps: list[Swap]
