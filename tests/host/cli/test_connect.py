"""`tierhost connect` as a user runs it: what it prints works when pasted, `--write`
keeps every other key of the client's file, and the clients themselves (Claude Code,
aider), where installed, run on what it printed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from host.cli import merging, setups
from host.cli.setups import Target
from tests.conftest import Daemon, free_port, start_daemon
from tests.host.cli.test_main import open_config, tierhost
from tests.host.fake_llama_server import config_head, fake_args, model_entry

COMMAND = ("/opt/tierhost/bin/tierhost", "mcp")
DEMO_TIERS = ("architect", "builder", "operator", "validator")
TOKEN = "t" * 43


def target(token: str | None = None, tiers: tuple[str, ...] = DEMO_TIERS) -> Target:
    return Target("http://127.0.0.1:8788", token, tiers, COMMAND)


# -- what each client is given (pure) ----------------------------------------------------


def test_claude_code_gets_the_tiers_by_family_and_the_mcp_line_with_its_url() -> None:
    setup = setups.claude_code(target())
    assert setup.env == {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8788",
        "ANTHROPIC_AUTH_TOKEN": "tierhost",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "claude-tierhost-architect",
        "ANTHROPIC_DEFAULT_SONNET_MODEL": "claude-tierhost-builder",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "claude-tierhost-operator",
        "CLAUDE_CODE_SUBAGENT_MODEL": "claude-tierhost-builder",
    }
    (command,) = setup.commands
    assert command == (
        "claude", "mcp", "add", "tierhost", "-e", "TIERHOST_URL=http://127.0.0.1:8788",
        "--", *COMMAND,
    )  # fmt: skip
    assert setup.files[0].patch == {"env": setup.env}


def test_a_daemon_that_needs_its_token_gets_it_everywhere() -> None:
    claude = setups.claude_code(target(TOKEN))
    assert claude.env["ANTHROPIC_AUTH_TOKEN"] == TOKEN
    add = claude.commands[0]
    dashes = add.index("--")
    assert add[dashes - 2 : dashes + 1] == ("-e", f"TIERHOST_TOKEN={TOKEN}", "--")
    assert claude.mcp["env"] == {"TIERHOST_URL": "http://127.0.0.1:8788", "TIERHOST_TOKEN": TOKEN}
    models = setups.openclaude(target(TOKEN)).files[0].patch["agentModels"]
    assert {m["api_key"] for m in models.values()} == {TOKEN}
    assert setups.aider(target(TOKEN)).files[0].patch["openai-api-key"] == TOKEN
    assert setups.vscode(target(TOKEN)).files[0].patch["tierhost.token"] == TOKEN
    assert "tierhost.token" not in setups.vscode(target()).files[0].patch


def test_openclaude_routes_each_agent_to_its_tier() -> None:
    setup = setups.openclaude(target())
    patch = setup.files[0].patch
    assert set(patch["agentModels"]) == {"architect", "builder", "operator"}  # no validator
    assert patch["agentModels"]["architect"] == {
        "model": "architect",
        "base_url": "http://127.0.0.1:8788/v1",
        "api_key": "tierhost",
    }
    assert patch["agentRouting"] == {
        "Plan": "architect",
        "Explore": "operator",
        "general-purpose": "builder",
        "verification": "architect",
        "code-reviewer": "architect",
        "default": "builder",
    }
    assert set(patch["agentRouting"].values()) <= set(patch["agentModels"])
    assert setup.env["OPENAI_BASE_URL"] == "http://127.0.0.1:8788/v1"
    assert setup.mcp["command"] == COMMAND[0] and setup.mcp["args"] == ["mcp"]


def test_aider_plans_on_the_architect_and_edits_on_the_builder() -> None:
    options = setups.aider(target()).files[0].patch
    assert options["architect"] is True
    assert (options["model"], options["editor-model"]) == ("openai/architect", "openai/builder")
    assert options["openai-api-base"] == "http://127.0.0.1:8788/v1"


def test_a_missing_tier_falls_back_to_the_nearest_one() -> None:
    two = target(tiers=("architect", "builder"))
    assert setups.claude_code(two).env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "claude-tierhost-builder"
    assert setups.openclaude(two).files[0].patch["agentRouting"]["Explore"] == "builder"
    odd = target(tiers=("big", "small"))
    assert setups.tier_for("builder", odd.tiers) == "big"
    with pytest.raises(setups.NoTiers, match="no tier for agents"):
        setups.tier_for("architect", ("validator",))


# -- merging into a client's file (pure) -------------------------------------------------


def test_a_json_merge_keeps_every_other_key() -> None:
    current = {
        "model": "opus",
        "permissions": {"allow": ["Bash(ls)"]},
        "env": {"EDITOR": "vim", "ANTHROPIC_BASE_URL": "https://old"},
    }
    patch = {"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8788"}}
    merged = json.loads(merging.merge_json(json.dumps(current), patch, "settings.json"))
    assert merged == {**current, "env": {"EDITOR": "vim", "ANTHROPIC_BASE_URL": patch["env"][
        "ANTHROPIC_BASE_URL"]}}  # fmt: skip
    entry = {"servers": {"tierhost": {"type": "stdio", "command": "x"}}}
    old = {"servers": {"tierhost": {"type": "http", "headers": {}}, "other": {"type": "http"}}}
    assert json.loads(merging.merge_json(json.dumps(old), entry, "mcp.json")) == {
        "servers": {"tierhost": {"type": "stdio", "command": "x"}, "other": {"type": "http"}}
    }
    assert json.loads(merging.merge_json("  \n", patch, "empty")) == patch


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"env": {', "not valid JSON"),
        ('{\n  // my settings\n  "a": 1\n}', "comments (JSONC)"),
        ('{"a": 1 /* why */}', "comments (JSONC)"),
        ("[1, 2]", "a JSON list, not an object"),
    ],
)
def test_a_json_file_that_cannot_be_kept_is_refused(text: str, why: str) -> None:
    with pytest.raises(merging.MergeRefused, match=r"nothing was written") as caught:
        merging.merge_json(text, {"a": 2}, "settings.json")
    assert why in str(caught.value)


AIDER_CONF = """\
# my aider settings
model: gpt-4o   # the old one
dark-mode: true

read:
  - CONVENTIONS.md
openai-api-key: old
openai-api-key: twice
lint-cmd:
  - "python: ruff check"
"""


def test_a_yaml_merge_keeps_comments_and_other_lines() -> None:
    options = {"model": "openai/architect", "read": "NOTES.md", "architect": True}
    merged = merging.merge_yaml(AIDER_CONF, {**options, "openai-api-key": "k"}, "conf")
    assert merged.splitlines() == [
        "# my aider settings",
        'model: "openai/architect"',
        "dark-mode: true",
        "",
        'read: "NOTES.md"',
        'openai-api-key: "k"',
        "lint-cmd:",
        '  - "python: ruff check"',
        "",
        "# tierhost connect aider",
        "architect: true",
    ]
    assert merging.merge_yaml(merged, {**options, "openai-api-key": "k"}, "conf") == merged
    assert merging.merge_yaml("", {"architect": True}, "conf") == (
        "# tierhost connect aider\narchitect: true\n"
    )


def test_a_yaml_file_that_is_not_key_value_lines_is_refused() -> None:
    for text in ("{model: x}\n", "---\nmodel: x\n---\nmodel: y\n", "  model: x\n"):
        with pytest.raises(merging.MergeRefused, match="nothing was written"):
            merging.merge_yaml(text, {"model": "y"}, "conf")


# -- the command, as a user runs it ------------------------------------------------------


def isolated(tmp_path: Path, url: str | None = None, **extra: str) -> dict[str, str]:
    """An environment with its own home, data dir and no token: nothing of the machine's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERHOST_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env |= {"HOME": str(home), "XDG_DATA_HOME": str(tmp_path / "xdg"), "COLUMNS": "200"}
    env["TIERHOST_URL"] = url or f"http://127.0.0.1:{free_port()}"
    return env | extra


def blocks(out: str) -> dict[str, str]:
    """The printed sections by their `# ...` heading line."""
    found = {}
    for block in out.strip().split("\n\n"):
        head, _, body = block.partition("\n")
        assert head.startswith("# "), block
        found[head] = body
    return found


def block(out: str, start: str) -> str:
    (body,) = [b for h, b in blocks(out).items() if h.startswith(start)]
    return body


def exported(body: str) -> dict[str, str]:
    env = {}
    for line in body.splitlines():
        word, assignment = shlex.split(line)
        assert word == "export"
        name, _, value = assignment.partition("=")
        env[name] = value
    return env


def test_connect_claude_code_prints_lines_that_work_when_pasted(tmp_path: Path) -> None:
    env = isolated(tmp_path)
    result = tierhost("connect", "claude-code", env=env)
    assert result.returncode == 0, result.stderr
    assert "tiers from the config" in result.stderr
    printed = exported(block(result.stdout, "# Claude Code: the environment"))
    assert printed["ANTHROPIC_BASE_URL"] == env["TIERHOST_URL"]
    assert printed["ANTHROPIC_DEFAULT_OPUS_MODEL"] == "claude-tierhost-architect"
    add = shlex.split(block(result.stdout, "# the MCP tools"))
    assert add[:4] == ["claude", "mcp", "add", "tierhost"]
    assert add[4:7] == ["-e", f"TIERHOST_URL={env['TIERHOST_URL']}", "--"]
    assert Path(add[7]).is_absolute() and Path(add[7]).exists() and add[-1] in ("mcp", "mcp_server")
    settings = json.loads(block(result.stdout, "# merge into ~/.claude/settings.json"))
    assert settings == {"env": printed}
    # the whole output is a shell script: the env part sourced alone sets the variables
    script = block(result.stdout, "# Claude Code: the environment")
    shown = subprocess.run(
        ["bash", "-c", f"{script}\nenv"], capture_output=True, text=True, timeout=10, check=True
    )
    assert "CLAUDE_CODE_SUBAGENT_MODEL=claude-tierhost-builder" in shown.stdout.splitlines()


def test_connect_openclaude_aider_and_vscode_print_their_files(tmp_path: Path) -> None:
    env = isolated(tmp_path)
    base = env["TIERHOST_URL"] + "/v1"
    out = tierhost("connect", "openclaude", env=env).stdout
    settings = json.loads(block(out, "# merge into ~/.openclaude/settings.json"))
    assert settings["agentRouting"]["Plan"] == "architect"
    assert {m["base_url"] for m in settings["agentModels"].values()} == {base}
    assert exported(block(out, "# OpenClaude: the environment"))["OPENAI_BASE_URL"] == base
    assert shlex.split(block(out, "# the MCP tools"))[:4] == [
        "openclaude",
        "mcp",
        "add",
        "tierhost",
    ]

    out = tierhost("connect", "aider", env=env).stdout
    lines = block(out, "# merge into .aider.conf.yml").splitlines()
    options = {k: json.loads(v) for k, _, v in (line.partition(": ") for line in lines)}
    assert options["architect"] is True and options["openai-api-base"] == base
    assert options["model"] == "openai/architect" and options["editor-model"] == "openai/builder"

    out = tierhost("connect", "vscode", env=env).stdout
    assert json.loads(block(out, "# merge into .vscode/settings.json")) == {
        "tierhost.hostUrl": env["TIERHOST_URL"]
    }
    entry = json.loads(block(out, "# merge into .vscode/mcp.json"))["servers"]["tierhost"]
    assert entry["env"] == {"TIERHOST_URL": env["TIERHOST_URL"]}


def test_json_output_and_the_mcp_config_alias_agree(tmp_path: Path) -> None:
    env = isolated(tmp_path)
    result = tierhost("connect", "claude-code", "--json", env=env)
    document = json.loads(result.stdout)
    assert document["url"] == env["TIERHOST_URL"] and document["token_required"] is False
    assert document["tiers"] == list(DEMO_TIERS)
    assert document["env"]["ANTHROPIC_AUTH_TOKEN"] == "tierhost"
    alias = tierhost("mcp-config", "claude", env=env)
    assert alias.returncode == 0 and ".mcp.json" in alias.stderr
    assert json.loads(alias.stdout) == {"mcpServers": {"tierhost": document["mcp"]}}


def test_write_merges_into_claude_settings_keeping_every_other_key(tmp_path: Path) -> None:
    env = isolated(tmp_path)
    settings = Path(env["HOME"]) / ".claude" / "settings.json"
    settings.parent.mkdir()
    original = {
        "model": "opus",
        "permissions": {"allow": ["Bash(git status)"], "deny": []},
        "env": {"EDITOR": "vim", "ANTHROPIC_BASE_URL": "https://old.example"},
        "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "true"}]}]},
    }
    settings.write_text(json.dumps(original))
    settings.chmod(0o600)
    before = settings.read_bytes()
    result = tierhost("connect", "claude-code", "--write", env=env)
    assert result.returncode == 0, result.stderr
    assert (
        "merged into" in result.stderr and "# written to ~/.claude/settings.json" in result.stdout
    )
    merged = json.loads(settings.read_text())
    printed = exported(block(result.stdout, "# Claude Code: the environment"))
    assert merged == {**original, "env": {"EDITOR": "vim", **printed}}
    assert settings.with_name("settings.json.bak").read_bytes() == before
    assert settings.stat().st_mode & 0o777 == 0o600
    assert not [p for p in settings.parent.iterdir() if p.name.startswith(".settings")]
    again = tierhost("connect", "claude-code", "--write", env=env)
    assert "already has these settings" in again.stderr
    assert settings.with_name("settings.json.bak").read_bytes() == before


def test_write_refuses_a_malformed_file_and_leaves_it_byte_identical(tmp_path: Path) -> None:
    env = isolated(tmp_path)
    settings = Path(env["HOME"]) / ".openclaude" / "settings.json"
    settings.parent.mkdir()
    settings.write_bytes(b'{"agentModels": {"gpt-4o": {"base_url": "x"},\n')
    before = settings.read_bytes()
    result = tierhost("connect", "openclaude", "--write", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("tierhost: ") and "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert settings.read_bytes() == before
    assert sorted(p.name for p in settings.parent.iterdir()) == ["settings.json"]


def test_write_refuses_vscode_settings_with_comments_and_writes_neither_file(
    tmp_path: Path,
) -> None:
    env = isolated(tmp_path)
    project = tmp_path / "project"
    (project / ".vscode").mkdir(parents=True)
    settings = project / ".vscode" / "settings.json"
    settings.write_text('{\n  // tabs, please\n  "editor.tabSize": 4\n}\n')
    before = settings.read_bytes()
    result = tierhost("connect", "vscode", "--write", env=env, cwd=project)
    assert result.returncode == 1 and "comments (JSONC)" in result.stderr
    assert settings.read_bytes() == before and not (project / ".vscode" / "mcp.json").exists()


def test_write_vscode_and_aider_into_the_files_named(tmp_path: Path) -> None:
    env = isolated(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    named = tmp_path / "elsewhere" / "settings.json"
    result = tierhost("connect", "vscode", "--write", "--file", str(named), env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert json.loads(named.read_text()) == {"tierhost.hostUrl": env["TIERHOST_URL"]}
    assert "tierhost" in json.loads((named.parent / "mcp.json").read_text())["servers"]

    conf = project / ".aider.conf.yml"
    conf.write_text(AIDER_CONF)
    result = tierhost("connect", "aider", "--write", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert "# my aider settings" in text and "dark-mode: true" in text and "lint-cmd:" in text
    assert 'model: "openai/architect"' in text and "architect: true" in text
    assert text.count("openai-api-key:") == 1 and conf.with_name(".aider.conf.yml.bak").exists()
    assert "--file names the file" in tierhost("connect", "aider", "--file", "x", env=env).stderr


def test_mcp_config_http_never_makes_a_token_of_its_own(tmp_path: Path) -> None:
    env = isolated(tmp_path)
    result = tierhost("mcp-config", "vscode", "--http", "--url", "http://box.invalid:8788", env=env)
    assert result.returncode == 1 and "requires its token and none was found" in result.stderr
    assert not (tmp_path / "xdg").exists(), "a data dir (and token) was made on this machine"
    daemon_dir = tmp_path / "daemon-data"
    daemon_dir.mkdir()
    (daemon_dir / "token").write_text(TOKEN + "\n")
    elsewhere = {**env, "TIERHOST_TOKEN": "s" * 43}  # --data-dir names the daemon's: it wins
    argv = ["mcp-config", "vscode", "--http", "--url", "http://box.invalid:8788"]
    result = tierhost(*argv, "--data-dir", str(daemon_dir), env=elsewhere)
    entry = json.loads(result.stdout)["servers"]["tierhost"]
    assert entry["headers"] == {"Authorization": f"Bearer {TOKEN}"}


def test_connect_asks_the_running_daemon_and_embeds_the_token_it_needs(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    daemon = start_daemon(tmp_path, open_config())  # bound to 0.0.0.0: the token is required
    daemon_factory.append(daemon)
    token = (daemon.data_dir / "token").read_text().strip()
    env = isolated(tmp_path, daemon.url, TIERHOST_DATA_DIR=str(daemon.data_dir))
    result = tierhost("connect", "claude-code", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert f"tiers of the daemon at {daemon.url}" in result.stderr
    document = json.loads(result.stdout)
    assert document["token_required"] is True and document["tiers"] == list(DEMO_TIERS)
    assert document["env"]["ANTHROPIC_AUTH_TOKEN"] == token
    assert f"TIERHOST_TOKEN={token}" in document["commands"][0]

    nowhere = isolated(tmp_path, daemon.url)
    missing = tierhost("connect", "aider", env=nowhere)
    assert missing.returncode == 1 and "requires its token" in missing.stderr
    wrong = tierhost("connect", "aider", env={**nowhere, "TIERHOST_TOKEN": "w" * 43})
    assert wrong.returncode == 1 and "refused the token from $TIERHOST_TOKEN" in wrong.stderr
    left_out = tierhost("connect", "aider", "--no-token", env=nowhere)
    assert left_out.returncode == 0 and 'openai-api-key: "tierhost"' in left_out.stdout


# -- the clients themselves, where installed ---------------------------------------------


CLIENTS = Path(__file__).resolve().parents[3] / ".clients"
"""Where `make clients` installs them."""


def installed(variable: str, name: str, made: str) -> str:
    """The client's binary: `$VARIABLE`, else what `make clients` installed (`made`, under
    .clients/), else PATH; the test skips, saying why, when none has it."""
    local = CLIENTS / made
    found = os.environ.get(variable) or (str(local) if local.exists() else shutil.which(name))
    if not found:
        pytest.skip(
            f"{name} is not installed (run `make clients`, set {variable} or put it on PATH)"
        )
    return found


def test_claude_mcp_list_reports_the_printed_server_connected(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    claude = installed("TIERHOST_CLAUDE", "claude", "claude/node_modules/.bin/claude")
    daemon = start_daemon(tmp_path)
    daemon_factory.append(daemon)
    env = isolated(tmp_path, daemon.url)
    project = tmp_path / "project"
    project.mkdir()
    document = json.loads(tierhost("connect", "claude-code", "--json", env=env).stdout)
    (add,) = document["commands"]
    client_env = {**env, **document["env"]}
    client_env.pop("TIERHOST_URL")  # only what `claude mcp add` recorded may reach the server
    run: dict[str, Any] = {"capture_output": True, "text": True, "cwd": project, "check": False}
    added = subprocess.run([claude, *add[1:]], env=client_env, timeout=60, **run)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([claude, "mcp", "list"], env=client_env, timeout=120, **run)
    line = next((ln for ln in listed.stdout.splitlines() if ln.startswith("tierhost")), "")
    assert "Connected" in line, listed.stdout + listed.stderr
    assert daemon.url in line or document["mcp"]["command"] in line


HELLO = 'print("hello")\n'
GREETED = 'print("hello from the tiers")\n'
PLAN = "In hello.py, change the printed greeting to: hello from the tiers."
EDIT = f"hello.py\n```\n{GREETED}```\n"  # aider's editor-whole format: the path, then the file


def test_aider_in_architect_mode_plans_on_the_architect_and_edits_with_the_builder(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    """aider, run the way `tierhost connect aider --write` set it up, edits a file: the
    architect tier (a scripted fake, as the demo model cannot be made to answer an exact
    edit) gets the user's words and plans, the builder gets the plan and writes the file."""
    aider = installed("TIERHOST_AIDER", "aider", "aider/bin/aider")
    head, gguf = config_head(tmp_path, 30)
    logs = {tier: tmp_path / f"{tier}-requests.jsonl" for tier in ("architect", "builder")}
    scripts = {"architect": PLAN, "builder": EDIT}
    entries = []
    for tier in ("architect", "builder", "operator"):
        args = fake_args("ok")
        if tier in scripts:
            script = tmp_path / f"{tier}-script.json"
            script.write_text(json.dumps([scripts[tier]]))
            args = fake_args("ok", script=script, request_log=logs[tier])
        model = model_entry(gguf, "cpu", 50, args)
        entries.append(f'[models.{tier}-fake]\n{model}\n[tiers.{tier}]\nmodels = ["{tier}-fake"]\n')
    daemon = start_daemon(tmp_path, head + "\n".join(entries))
    daemon_factory.append(daemon)
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello.py").write_text(HELLO)
    env = isolated(tmp_path, daemon.url, LITELLM_LOCAL_MODEL_COST_MAP="True")
    assert tierhost("connect", "aider", "--write", env=env, cwd=project).returncode == 0
    quiet = ("--no-git", "--no-check-update", "--no-show-release-notes", "--analytics-disable")
    plain = ("--no-pretty", "--no-fancy-input", "--no-stream", "--map-tokens", "0")
    ask = "Make hello.py greet the tiers instead of saying hello."
    ran = subprocess.run(
        [aider, *quiet, *plain, "--yes-always", "--message", ask, "hello.py"],
        capture_output=True,
        text=True,
        cwd=project,
        env=env,
        timeout=300,
        check=False,
    )
    told = f"aider said:\n{ran.stdout}\n{ran.stderr}"
    assert ran.returncode == 0, told
    assert (project / "hello.py").read_text() == GREETED, told
    planned = [json.loads(line) for line in logs["architect"].read_text().splitlines()]
    edited = [json.loads(line) for line in logs["builder"].read_text().splitlines()]
    assert any(ask in json.dumps(body) for body in planned), planned
    assert len(edited) == 1 and PLAN in json.dumps(edited[0]), edited
