"""`tierhost token` and `tierhost mcp-config`: what a user pastes into a client."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from host.cli.main import main


def test_token_is_created_once_with_mode_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--data-dir", str(tmp_path)]) == 0
    first = capsys.readouterr()
    assert "created a new token" in first.err
    token = first.out.strip()
    assert len(token) >= 32
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600
    assert main(["token", "--data-dir", str(tmp_path)]) == 0
    again = capsys.readouterr()
    assert again.out.strip() == token and again.err == ""


@pytest.mark.parametrize(
    ("client", "key"), [("claude", "mcpServers"), ("openclaude", "mcpServers")]
)
def test_stdio_config_for_claude_style_clients(
    client: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mcp-config", client, "--url", "http://127.0.0.1:9999"]) == 0
    out = capsys.readouterr()
    entry = json.loads(out.out)[key]["tierhost"]
    assert entry["type"] == "stdio" and entry["env"] == {"TIERHOST_URL": "http://127.0.0.1:9999"}
    assert Path(entry["command"]).is_absolute()
    assert entry["args"][-1] in ("mcp", "mcp_server")
    assert ".mcp.json" in out.err


def test_http_config_for_vscode_carries_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--data-dir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    argv = ["mcp-config", "vscode", "--http", "--url", "http://box:8788", "--data-dir"]
    assert main([*argv, str(tmp_path)]) == 0
    out = capsys.readouterr()
    entry = json.loads(out.out)["servers"]["tierhost"]
    assert entry == {
        "type": "http",
        "url": "http://box:8788/mcp",
        "headers": {"Authorization": f"Bearer {token}"},
    }
    assert ".vscode/mcp.json" in out.err


def test_an_unknown_client_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["mcp-config", "emacs"])
    assert caught.value.code == 2 and "claude" in capsys.readouterr().err
