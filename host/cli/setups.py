"""What each editor agent needs to run on the host's tiers: pure, so every line
`tierhost connect` prints can be tested without a daemon, a file or a shell.

A `Target` is the daemon as a client will see it (its URL, the token when the daemon
needs one, its tiers, the absolute `tierhost mcp` command); a `Setup` is what one client
is given: environment variables, commands to run once, and the keys to merge into the
client's own files. The tier each role gets is decided here, once, for all clients:
planning and review on the architect tier, coding on the builder, quick look-ups on the
operator, each falling back to the nearest tier a config has when it lacks one.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp_server.configs import SERVER_NAME, server_entry

ClientName = Literal["claude-code", "openclaude", "aider", "vscode"]
CLIENTS: tuple[ClientName, ...] = ("claude-code", "openclaude", "aider", "vscode")

PLACEHOLDER_KEY = "tierhost"
"""What a client that insists on an API key sends to a daemon that needs none: Claude
Code and the OpenAI clients refuse to start with an empty key, the daemon ignores it."""

Role = Literal["architect", "builder", "operator"]
FALLBACKS: dict[Role, tuple[str, ...]] = {
    "architect": ("architect", "builder", "operator"),
    "builder": ("builder", "architect", "operator"),
    "operator": ("operator", "builder", "architect"),
}
"""Which tier plays a role: the tier of that name, else the nearest one (a config
without an operator tier sends quick look-ups to the builder, not to the big model)."""

NOT_FOR_AGENTS = frozenset({"validator"})
"""Tiers that serve the host itself (validator passes), never an agent's turns."""

CLAUDE_FAMILIES: dict[str, Role] = {"OPUS": "architect", "SONNET": "builder", "HAIKU": "operator"}
OPENCLAUDE_ROUTES: dict[str, Role] = {
    "Plan": "architect",
    "Explore": "operator",
    "general-purpose": "builder",
    "verification": "architect",
    "code-reviewer": "architect",
    "default": "builder",
}


@dataclass(frozen=True)
class Target:
    """The daemon a client should use."""

    url: str
    """Its base URL, without a trailing slash (`http://127.0.0.1:8788`)."""
    token: str | None
    """Its bearer token when it requires one (bound beyond loopback), else None."""
    tiers: tuple[str, ...]
    """Its tiers in config order."""
    command: tuple[str, ...]
    """`tierhost mcp` by absolute path, as a client launches it."""

    @property
    def api_key(self) -> str:
        return self.token or PLACEHOLDER_KEY

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"


@dataclass(frozen=True)
class FileEdit:
    """Keys to merge into one of the client's files, and where that file usually is."""

    path: str
    """Its usual place, `~` for the home directory, else relative to the working dir."""
    format: Literal["json", "yaml"]
    patch: dict[str, Any]
    """Top-level keys; a mapping merges one level down into the file's own mapping."""
    about: str


@dataclass(frozen=True)
class Setup:
    """Everything one client is given."""

    client: ClientName
    title: str
    env: dict[str, str] = field(default_factory=dict)
    env_about: str = "your shell profile"
    commands: tuple[tuple[str, ...], ...] = ()
    files: tuple[FileEdit, ...] = ()
    mcp: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class NoTiers(ValueError):
    """The daemon (or config) has no tier an agent could use."""


def agent_tiers(tiers: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t for t in tiers if t not in NOT_FOR_AGENTS)


def tier_for(role: Role, tiers: tuple[str, ...]) -> str:
    """The tier that plays `role` among `tiers` (see FALLBACKS); the first one when none
    of the usual names is there."""
    usable = agent_tiers(tiers)
    if not usable:
        raise NoTiers(
            "the daemon has no tier for agents (only "
            + (", ".join(tiers) or "none")
            + "); add [tiers.architect] / [tiers.builder] to its config"
        )
    for name in FALLBACKS[role]:
        if name in usable:
            return name
    return usable[0]


def claude_model(tier: str) -> str:
    """The id Claude Code sends for a tier: its gateway discovery lists only ids that
    start with `claude`, and the host maps `claude-tierhost-<tier>` to the tier."""
    return f"claude-tierhost-{tier}"


def mcp_entry(target: Target) -> dict[str, Any]:
    """The stdio MCP entry: `tierhost mcp` with the daemon's URL (and token) recorded, so
    it never quietly starts a second daemon of its own on the default port."""
    return server_entry(
        "claude", target.url, http=False, token=target.token, command=list(target.command)
    )


def mcp_add(program: str, target: Target) -> tuple[str, ...]:
    """`claude mcp add tierhost -e TIERHOST_URL=... -- <tierhost> mcp`: `-e` takes any
    number of values, so it goes after the name, and `--` ends them."""
    argv = [program, "mcp", "add", SERVER_NAME, "-e", f"TIERHOST_URL={target.url}"]
    if target.token:
        argv += ["-e", f"TIERHOST_TOKEN={target.token}"]
    return (*argv, "--", *target.command)


def claude_code(target: Target) -> Setup:
    env = {"ANTHROPIC_BASE_URL": target.url, "ANTHROPIC_AUTH_TOKEN": target.api_key}
    for family, role in CLAUDE_FAMILIES.items():
        env[f"ANTHROPIC_DEFAULT_{family}_MODEL"] = claude_model(tier_for(role, target.tiers))
    env["CLAUDE_CODE_SUBAGENT_MODEL"] = claude_model(tier_for("builder", target.tiers))
    return Setup(
        client="claude-code",
        title="Claude Code",
        env=env,
        env_about="your shell profile, or --write puts it in ~/.claude/settings.json",
        commands=(mcp_add("claude", target),),
        files=(
            FileEdit(
                "~/.claude/settings.json",
                "json",
                {"env": env},
                "the environment, in Claude Code's user settings",
            ),
        ),
        mcp=mcp_entry(target),
        notes=(
            "Claude Code sends /v1/messages to ANTHROPIC_BASE_URL (no /v1 in it); opus "
            "turns go to the architect tier, sonnet to the builder, haiku to the operator",
            "`claude mcp add` registers the tools for this project (add `--scope user` "
            "for every project); a project .mcp.json waits for approval in an interactive "
            "`claude` run first",
        ),
    )


def openclaude(target: Target) -> Setup:
    models = {
        tier: {"model": tier, "base_url": target.openai_base, "api_key": target.api_key}
        for tier in agent_tiers(target.tiers)
    }
    routing = {agent: tier_for(role, target.tiers) for agent, role in OPENCLAUDE_ROUTES.items()}
    env = {
        "CLAUDE_CODE_USE_OPENAI": "1",
        "OPENAI_BASE_URL": target.openai_base,
        "OPENAI_MODEL": tier_for("builder", target.tiers),
        "OPENAI_API_KEY": target.api_key,
    }
    return Setup(
        client="openclaude",
        title="OpenClaude",
        env=env,
        commands=(mcp_add("openclaude", target),),
        files=(
            FileEdit(
                "~/.openclaude/settings.json",
                "json",
                {"agentModels": models, "agentRouting": routing},
                "each agent on its tier",
            ),
        ),
        mcp=mcp_entry(target),
        notes=(
            "agentRouting sends Plan, verification and code-reviewer to the architect "
            "tier, Explore to the operator, general-purpose and the rest to the builder; "
            "the environment makes the builder the main loop's model",
        ),
    )


def aider(target: Target) -> Setup:
    options: dict[str, Any] = {
        "architect": True,
        "model": f"openai/{tier_for('architect', target.tiers)}",
        "editor-model": f"openai/{tier_for('builder', target.tiers)}",
        "weak-model": f"openai/{tier_for('operator', target.tiers)}",
        "openai-api-base": target.openai_base,
        "openai-api-key": target.api_key,
        "show-model-warnings": False,
    }
    return Setup(
        client="aider",
        title="aider",
        files=(
            FileEdit(
                ".aider.conf.yml",
                "yaml",
                options,
                "architect mode: the architect tier plans, the builder tier edits",
            ),
        ),
        notes=(
            "the tiers are OpenAI-compatible models at the host's /v1 (the `openai/` "
            "prefix); aider does not know their context size, so its warning is off",
        ),
    )


def vscode(target: Target) -> Setup:
    settings: dict[str, Any] = {"tierhost.hostUrl": target.url}
    if target.token:
        settings["tierhost.token"] = target.token
    entry = mcp_entry(target)
    return Setup(
        client="vscode",
        title="VS Code",
        files=(
            FileEdit(
                ".vscode/settings.json", "json", settings, "the Tierhost extension's settings"
            ),
            FileEdit(
                ".vscode/mcp.json",
                "json",
                {"servers": {SERVER_NAME: entry}},
                "the MCP tools for Copilot's agent mode",
            ),
        ),
        mcp=entry,
    )


BUILDERS = {"claude-code": claude_code, "openclaude": openclaude, "aider": aider, "vscode": vscode}


def setup_for(client: ClientName, target: Target) -> Setup:
    return BUILDERS[client](target)


def shell_line(argv: tuple[str, ...]) -> str:
    return " ".join(shlex.quote(part) for part in argv)


def yaml_scalar(value: Any) -> str:
    """A YAML scalar that means exactly `value`: JSON's strings are YAML's double-quoted
    ones, so a token or URL never turns into a number, a list or a comment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def render(setup: Setup, *, written: tuple[str, ...] = ()) -> str:
    """The text `tierhost connect` prints: shell lines and file contents that work as
    they are when pasted, each under a `#` line that says where it goes."""
    parts: list[str] = []
    if setup.env:
        lines = [f"# {setup.title}: the environment ({setup.env_about})"]
        lines += [f"export {name}={shlex.quote(value)}" for name, value in setup.env.items()]
        parts.append("\n".join(lines))
    for command in setup.commands:
        parts.append(f"# the MCP tools, registered once\n{shell_line(command)}")
    for edit in setup.files:
        where = "written to" if edit.path in written else "merge into"
        head = f"# {where} {edit.path}: {edit.about}"
        if edit.format == "json":
            body = json.dumps(edit.patch, indent=2)
        else:
            body = "\n".join(f"{key}: {yaml_scalar(v)}" for key, v in edit.patch.items())
        parts.append(f"{head}\n{body}")
    for note in setup.notes:
        parts.append(f"# {note}")
    return "\n\n".join(parts) + "\n"


def document(setup: Setup, target: Target) -> dict[str, Any]:
    """`--json`: the same setup for scripts."""
    return {
        "client": setup.client,
        "url": target.url,
        "token_required": target.token is not None,
        "tiers": list(target.tiers),
        "env": setup.env,
        "commands": [list(c) for c in setup.commands],
        "files": [{"path": f.path, "format": f.format, "patch": f.patch} for f in setup.files],
        "mcp": setup.mcp,
    }
