"""The `tierhost` command as a user runs it, against a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import httpx
import pytest

from host.cli.main import EXIT_CLOSED_PIPE, queue_line
from host.wire import DeviceStatus
from tests.conftest import Daemon, free_port, start_daemon

pytestmark = pytest.mark.real


def tierhost(
    *args: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`tierhost ARGS` as a subprocess: this environment without any `TIERHOST_*` of the
    machine's, wide enough that nothing wraps, then `env` and `url` on top."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIERHOST_")}
    full = {**base, "COLUMNS": "200", **(env or {})}
    if url is not None:
        full["TIERHOST_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "host", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
        cwd=cwd,
        check=False,
    )


def test_status_prints_devices_and_models(demo_daemon: Daemon) -> None:
    result = tierhost("status", url=demo_daemon.url)
    assert result.returncode == 0, result.stderr
    for word in ("gpu0", "cpu", "architect-demo", "validator-demo", "ready", "0 / 400"):
        assert word in result.stdout


def test_status_json_is_the_api_document(demo_daemon: Daemon) -> None:
    result = tierhost("status", "--json", url=demo_daemon.url)
    status = json.loads(result.stdout)
    assert {d["name"] for d in status["devices"]} == {"gpu0", "cpu"}
    names = {m["name"] for m in status["models"]}
    assert names == {"architect-demo", "builder-demo", "operator-demo", "validator-demo"}


def test_models_lists_every_model(demo_daemon: Daemon) -> None:
    result = tierhost("models", "--json", "--url", demo_daemon.url)
    models = json.loads(result.stdout)
    assert [m["name"] for m in models][:2] == ["architect-demo", "builder-demo"]
    table = tierhost("models", url=demo_daemon.url)
    assert "operator-demo" in table.stdout and "persistent" not in table.stderr


def test_no_daemon_is_a_one_line_error() -> None:
    result = tierhost("status", url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("tierhost: no Tierhost daemon answers at")
    assert result.stderr.count("\n") == 1


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr, and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("tierhost: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


DEEP = b"[" * 100_000
BAD_ROUTING_FILES = [
    (b"", "it is empty"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{not json", "not JSON: Expecting property name"),
    (b'{"version": NaN, "routes": {}}', "NaN is not a JSON value"),
    (b'{"version": 1, "routes": {"planning": -Infinity}}', "-Infinity is not a JSON value"),
    (DEEP, "nests too deeply"),
    (b'{"version": 1, "routes": {"planning": ' + b"7" * 5000 + b"}}", "5000 digits"),
    (b"[1, 2]", "holds an array, not an object"),
    (
        b'{"version": 99, "routes": {}}',
        "version 99 is not supported (this tierhost reads version 1)",
    ),
    (b'{"version": "1", "routes": {}}', "version '1' is not supported"),
    (b'{"version": 1}', 'no "routes" object'),
    (b'{"version": 1, "routes": ["planning"]}', '"routes" is an array'),
    (b'{"version": 1, "routes": {"planning": 3}}', "is a number, not a tier name"),
    (b'{"version": 1, "routes": {"planning": "builder", "planning": "architect"}}', "twice"),
    (b'{"version": 1, "routes": {}, "rout": {}}', "unknown field 'rout'"),
    (b" " * (2 * 1024 * 1024), "larger than 1024 KiB"),
]


@pytest.mark.parametrize(("content", "expected"), BAD_ROUTING_FILES)
def test_routing_import_refuses_a_bad_file_in_one_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """Refused before any request: nothing answers at the URL, yet the message is about
    the file."""
    path = tmp_path / "model-routing.json"
    path.write_bytes(content)
    result = tierhost("routing", "import", str(path), url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    message = one_line_error(result)
    assert expected in message and str(path) in message


def test_routing_import_refuses_what_cannot_be_read(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    missing = one_line_error(tierhost("routing", "import", str(tmp_path / "nope.json"), url=url))
    assert "cannot read" in missing and "No such file" in missing
    directory = one_line_error(tierhost("routing", "import", str(tmp_path), url=url))
    assert "cannot read" in directory and "directory" in directory.lower()
    usage = one_line_error(tierhost("routing", "import", url=url))
    assert "usage: tierhost routing import FILE" in usage


def test_routing_export_writes_the_document_import_reads_back(
    demo_daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "model-routing.json"
    exported = tierhost("routing", "export", str(path), url=demo_daemon.url)
    assert exported.returncode == 0, exported.stderr
    with demo_daemon.client() as http:
        routes = http.get("/api/routing").json()["routes"]
    assert path.read_text() == json.dumps({"version": 1, "routes": routes}, indent=2) + "\n"
    assert tierhost("routing", "export", url=demo_daemon.url).stdout == path.read_text()
    assert not list(tmp_path.glob(".*.tmp"))

    edited = {"version": 1, "routes": {**routes, "email": "builder"}}
    path.write_text(json.dumps(edited))
    imported = tierhost("routing", "import", str(path), "--json", url=demo_daemon.url)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["routes"]["email"] == "builder"

    for routes_in_file, named in (
        ({"juggling": "builder"}, "juggling"),
        ({"email": "nobody"}, "nobody"),
    ):
        path.write_text(json.dumps({"version": 1, "routes": routes_in_file}))
        message = one_line_error(tierhost("routing", "import", str(path), url=demo_daemon.url))
        assert named in message and "known" in message
    with demo_daemon.client() as http:  # a refused file changed nothing
        assert http.get("/api/routing").json()["routes"]["email"] == "builder"


def run_into_a_closed_pipe(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdout reader is already gone when it writes, as with
    `tierhost tasks | head -1` once head has exited."""
    process = subprocess.Popen(
        [sys.executable, "-m", "host", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TIERHOST_URL": url},
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, "", stderr)


def test_a_closed_pipe_ends_a_command_quietly(demo_daemon: Daemon) -> None:
    with demo_daemon.client() as http:
        task = http.post(
            "/api/tasks", json={"prompt": "Say hi.", "type": "admin", "params": {"max_tokens": 2}}
        ).json()
    for args in (
        ["tasks"],
        ["tasks", "--json"],
        ["cancel", task["id"]],
        ["routing", "export"],
        ["status", "--json"],
    ):
        result = run_into_a_closed_pipe(*args, url=demo_daemon.url)
        assert (result.returncode, result.stderr) == (EXIT_CLOSED_PIPE, ""), args
    # argparse swallows its own write error for --help (and exits 0): quiet all the same
    result = run_into_a_closed_pipe("--help", url=demo_daemon.url)
    assert result.returncode in (0, EXIT_CLOSED_PIPE) and result.stderr == ""


def open_config() -> str:
    """The demo config bound to every interface: the daemon then requires the token."""
    text = (resources.files("host") / "data" / "demo.toml").read_text()
    return text.replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1)


def test_the_cli_sends_the_token_a_daemon_bound_beyond_loopback_requires(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    daemon = start_daemon(tmp_path, open_config())
    daemon_factory.append(daemon)
    token = (daemon.data_dir / "token").read_text().strip()
    nowhere = {"TIERHOST_DATA_DIR": str(tmp_path / "no-token-here"), "TIERHOST_TOKEN": ""}

    refused = one_line_error(tierhost("mode", "gaming", url=daemon.url, env=nowhere))
    assert "TIERHOST_TOKEN" in refused and "tierhost token" in refused
    wrong = {**nowhere, "TIERHOST_TOKEN": "not-the-token"}
    assert "was refused" in one_line_error(tierhost("mode", "gaming", url=daemon.url, env=wrong))
    bearer = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=daemon.url, headers=bearer, timeout=30.0) as http:
        assert http.get("/api/mode").json()["modes"]["gpu0"] == "auto"  # nothing changed

    from_file = {"TIERHOST_DATA_DIR": str(daemon.data_dir), "TIERHOST_TOKEN": ""}
    changed = tierhost("mode", "gaming", "--json", url=daemon.url, env=from_file)
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["modes"]["gpu0"] == "gaming"

    from_env = {**nowhere, "TIERHOST_TOKEN": token}
    back = tierhost("mode", "auto", "--json", url=daemon.url, env=from_env)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["modes"]["gpu0"] == "auto"
    top = tierhost("top", "--once", url=daemon.url, env=from_env)
    assert top.returncode == 0 and "architect-demo" in top.stdout, top.stderr


def test_route_explain_shows_each_step_of_the_types_inference(demo_daemon: Daemon) -> None:
    result = tierhost(
        "route",
        "--explain",
        "the plan: add a --dry-run flag to the sync command",
        url=demo_daemon.url,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "implementation → builder → builder-demo on gpu0"
    assert lines[1] == "type, step by step:"
    assert lines[2] == ("  1. rules: keyword 'plan' → planning (not strong enough to decide)")
    assert lines[3] == "     scores: planning 1"
    assert lines[4].startswith("  2. classifier: implementation 0.")
    assert ", needed 0.50 — " in lines[4]
    assert lines[5].startswith("     likeliest: implementation 0.")
    assert lines[6] == "  3. classifier model: not asked"
    assert lines[7] == "  decided by: classifier"
    assert lines[8] == "route:"
    assert lines[9].startswith("  - type implementation inferred: classifier: implementation")
    as_json = json.loads(tierhost("route", "--json", "--explain", "x", url=demo_daemon.url).stdout)
    assert as_json["type_evidence"]["decided_by"] in {"classifier", "default"}


def test_routing_eval_scores_the_daemon_on_a_labelled_file(
    demo_daemon: Daemon, tmp_path: Path
) -> None:
    labelled = tmp_path / "mine.jsonl"
    lines = [
        {
            "prompt": "Fix the crash when the uploaded CSV has an empty last line",
            "type": "implementation",
        },
        {"prompt": "renew the TLS certificate on the ingress controller", "type": "infra"},
        {"prompt": "reply to Dana: the 22nd works, the 15th does not", "type": "email"},
    ]
    labelled.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = tierhost("routing", "eval", str(labelled), "--json", url=demo_daemon.url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["total"] == 3
    assert sum(row["count"] for row in report["confusion"]) == 3
    assert 0 <= report["type_accuracy"] <= 1 and 0 <= report["tier_accuracy"] <= 1
    for miss in report["misses"]:
        assert miss["why"].startswith("type ")

    for text, named in (
        ('{"prompt": "x"}\n', "line 1: `type` None is not one of"),
        ('{"prompt": "x", "type": "poetry"}\n', "'poetry' is not one of"),
        ("not json\n", "line 1: not JSON"),
        ("\n", "no examples"),
    ):
        labelled.write_text(text)
        message = one_line_error(tierhost("routing", "eval", str(labelled), url=demo_daemon.url))
        assert named in message


def test_status_shows_a_device_queue_in_the_order_it_is_served() -> None:
    device = DeviceStatus.model_validate(
        {
            "name": "gpu0",
            "waiting": [
                {"model": "builder-demo", "work": "request"},
                {"model": "builder-demo", "work": "request"},
                {"model": "architect-demo", "work": "task"},
                {"model": "big", "work": "request", "held": True},
            ],
            "order": {"rule": "batch", "why": "builder-demo keeps the device while its work waits"},
        }
    )
    assert queue_line(device) == (
        "gpu0 serves builder-demo x2, then architect-demo (task), then big (held)"
        " — batch: builder-demo keeps the device while its work waits"
    )
    assert queue_line(DeviceStatus(name="gpu0")) == ""
