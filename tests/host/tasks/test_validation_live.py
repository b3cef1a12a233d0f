"""Validator passes through a real daemon: scripted fake builder/validator, then real SmolLM2.

The fakes (`fake_llama_server.py --fake-script`) answer from a JSON list, one reply per
request, and log every request they get, so a test knows exactly what the builder wrote
and can prove what the validator was (or was not) asked.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from host.store import Store
from tests.conftest import Daemon, start_daemon, wait_for_models
from tests.host.fake_llama_server import config_head, fake_args, model_entry

BOUND_S = 30.0
TERMINAL = {"done", "failed", "cancelled"}
FENCE = "```"
GOOD = f"{FENCE}python\ndef add(a: int, b: int) -> int:\n    return a + b\n{FENCE}\n"
BETTER = f"{FENCE}python\ndef add(a: int, b: int) -> int:\n    return int(a) + int(b)\n{FENCE}\n"
BROKEN = f"Here it is:\n{FENCE}python\ndef add(a, b)\n    return a + b\n{FENCE}\n"


class Fakes:
    """A daemon whose builder and validator are scripted fakes, and their request logs."""

    def __init__(self, daemon: Daemon, directory: Path) -> None:
        self.daemon = daemon
        self.directory = directory

    def requests(self, model: str) -> list[dict[str, Any]]:
        """What the fake model `coder` (the builder) or `judge` (the validator) was asked."""
        path = self.directory / f"{model}.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def run(self, prompt: str, **fields: Any) -> dict[str, Any]:
        """Submit a task and wait (bounded) until it ends; the final task JSON."""
        with self.daemon.client(timeout=BOUND_S) as http:
            response = http.post("/api/tasks", json={"prompt": prompt, **fields})
            assert response.status_code == 201, response.text
            task_id = response.json()["id"]
            return wait_terminal(http, task_id, BOUND_S)


def wait_terminal(http: httpx.Client, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = http.get(f"/api/tasks/{task_id}").json()
        if task["status"] in TERMINAL:
            return task
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} not finished within {timeout} s: {task['status']}")


def start_fakes(
    tmp_path: Path,
    daemon_factory: list[Daemon],
    *,
    builder: list[str],
    validator: list[str],
    max_retries: int = 3,
    validator_mode: str = "ok",
) -> Fakes:
    head, gguf = config_head(tmp_path, BOUND_S)
    for name, replies in (("coder", builder), ("judge", validator)):
        (tmp_path / f"{name}.json").write_text(json.dumps(replies))

    def model(name: str, device: str, persistent: bool) -> str:
        mode = validator_mode if name == "judge" else "ok"
        args = fake_args(
            mode, script=tmp_path / f"{name}.json", request_log=tmp_path / f"{name}.log"
        )
        return model_entry(gguf, device, 100, args, persistent=persistent)

    config = f"""
{head}
[models.coder]
{model("coder", "gpu0", False)}
[models.judge]
{model("judge", "cpu", True)}
[tiers.architect]
models = ["coder"]

[tiers.builder]
models = ["coder"]

[tiers.operator]
models = ["coder"]

[tiers.validator]
models = ["judge"]

[validation]
max_retries = {max_retries}
"""
    daemon = start_daemon(tmp_path, config)
    daemon_factory.append(daemon)
    state = "ready" if validator_mode == "ok" else "failed"
    wait_for_models(daemon, {"judge"}, state, timeout=BOUND_S)
    return Fakes(daemon, tmp_path)


def statuses(task: dict[str, Any]) -> list[str]:
    return [e["status"] for e in task["events"]]


def verdicts(task: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(attempt, verdict, by) of every event that carries a verdict."""
    return [
        (e["data"]["attempt"], e["data"]["verdict"], e["data"]["by"])
        for e in task["events"]
        if "verdict" in e.get("data", {})
    ]


def last_user_message(request: dict[str, Any]) -> str:
    content: str = request["messages"][-1]["content"]
    return content


# -- final: one answer, checked as a whole ----------------------------------------------


def test_a_syntax_error_is_caught_by_the_checks_without_asking_the_validator(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    fakes = start_fakes(
        tmp_path, daemon_factory, builder=[BROKEN, GOOD], validator=["PASS"], max_retries=1
    )
    task = fakes.run("Write add(a, b) in Python.", type="implementation")

    assert task["validation"] == "final"  # the config's default for implementation
    assert task["status"] == "done" and task["validated"] is True
    assert task["attempts"] == 2
    assert verdicts(task) == [(1, "fail", "checks"), (2, "pass", "judge")]
    asked = fakes.requests("judge")
    assert len(asked) == 1  # only for the second, syntactically valid answer
    assert "return a + b" in last_user_message(asked[0])
    assert "def add(a, b)\n" not in last_user_message(asked[0])
    second = fakes.requests("coder")[1]
    assert "line 1" in last_user_message(second) and "(ast)" in last_user_message(second)
    assert second["messages"][-2] == {"role": "assistant", "content": BROKEN}
    roles = [(s["role"], s["attempt"]) for s in task["scratchpad"]]
    assert roles == [
        ("builder", 1),
        ("checks", 1),
        ("prompt", 2),
        ("builder", 2),
        ("checks", 2),
        ("validator", 2),
    ]


def test_fail_then_pass_takes_two_attempts_and_the_second_prompt_has_the_correction(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    fakes = start_fakes(
        tmp_path,
        daemon_factory,
        builder=[GOOD, BETTER],
        validator=["FAIL: line 2 does not coerce string input", "PASS"],
    )
    original = "def add(a, b):\n    pass\n"
    task = fakes.run(
        "Implement add in calc.py.",
        type="implementation",
        context={"files": [{"path": "calc.py", "content": original}], "target_file": "calc.py"},
    )

    assert task["status"] == "done" and task["validated"] is True and task["attempts"] == 2
    assert statuses(task) == [
        "queued",
        "waiting_device",
        "running",
        "validating",
        "running",
        "validating",
        "done",
    ]
    assert verdicts(task) == [(1, "fail", "judge"), (2, "pass", "judge")]
    retry = next(e for e in task["events"] if e.get("data", {}).get("verdict") == "fail")
    assert "line 2 does not coerce string input" in retry["reason"]
    first, second = fakes.requests("coder")
    assert "calc.py" in last_user_message(first)  # the protocol names the target file
    assert "line 2 does not coerce string input" in last_user_message(second)
    assert "line 2 does not coerce" not in json.dumps(first)
    assert task["result"] == BETTER
    assert task["findings"] == []
    assert task["patch"].startswith("--- a/calc.py\n+++ b/calc.py\n")
    assert "+    return int(a) + int(b)\n" in task["patch"]
    assert "-    pass\n" in task["patch"]
    assert_applies(tmp_path, "calc.py", original, task["patch"], BETTER.split("\n", 1)[1][:-4])


def test_three_fails_end_failed_with_the_reasons(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    reasons = ["FAIL: first problem", "FAIL: line 2 second problem", "FAIL: third problem"]
    fakes = start_fakes(tmp_path, daemon_factory, builder=[GOOD], validator=reasons, max_retries=2)
    task = fakes.run("Write add.", type="implementation")

    assert task["status"] == "failed" and task["validated"] is False
    assert task["attempts"] == 3 and len(fakes.requests("coder")) == 3
    assert verdicts(task) == [(n, "fail", "judge") for n in (1, 2, 3)]
    assert "third problem" in task["error"] and "no retries left" in task["error"]
    assert task["events"][-1]["reason"] == task["error"]
    assert [(f["source"], f["severity"], f["message"]) for f in task["findings"]] == [
        ("validator", "error", "third problem")
    ]
    assert task["patch"] is None and task["result"] == GOOD


def test_an_unparseable_verdict_is_not_a_pass(tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    fakes = start_fakes(
        tmp_path,
        daemon_factory,
        builder=[GOOD],
        validator=["Looks fine to me, PASS probably."],
        max_retries=0,
    )
    task = fakes.run("Write add.", validation="final", type="planning")

    assert task["status"] == "failed" and task["validated"] is False and task["attempts"] == 1
    assert verdicts(task) == [(1, "none", "judge")]
    assert "no verdict" in task["error"]


def test_a_validator_that_cannot_start_fails_the_task_with_why_not_a_verdict(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    fakes = start_fakes(
        tmp_path, daemon_factory, builder=[GOOD], validator=["PASS"], validator_mode="exit-at-start"
    )
    task = fakes.run("Write add.", type="implementation")

    assert task["status"] == "failed" and task["validated"] is False and task["attempts"] == 1
    assert task["error"].startswith("validator judge unavailable: model judge failed to start")


def test_validation_none_runs_as_before(tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    fakes = start_fakes(tmp_path, daemon_factory, builder=[BROKEN], validator=["PASS"])
    task = fakes.run("Plan it.", type="planning")

    assert task["validation"] == "none"
    assert task["status"] == "done" and task["result"] == BROKEN
    assert (task["validated"], task["attempts"], task["patch"]) == (None, 0, None)
    assert task["findings"] == [] and task["scratchpad"] == []
    assert fakes.requests("judge") == []


# -- block by block ---------------------------------------------------------------------


def test_block_by_block_commits_each_block_before_asking_for_the_next(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    imports = f"{FENCE}python\nimport math\n{FENCE}\nEND OF BLOCK\n"
    broken = f"{FENCE}python\ndef area(r)\n    return math.pi * r * r\n{FENCE}\nEND OF BLOCK\n"
    fixed = f"{FENCE}python\ndef area(r: float) -> float:\n    return math.pi * r * r\n{FENCE}\n"
    fakes = start_fakes(
        tmp_path,
        daemon_factory,
        builder=[imports, broken, fixed + "END OF BLOCK\n", "END OF WORK"],
        validator=["PASS", "PASS"],
    )
    task = fakes.run(
        "Write geo.py with area(r).",
        type="implementation",
        validation="block_by_block",
        context={"files": [{"path": "geo.py", "content": ""}], "target_file": "geo.py"},
    )

    assert task["status"] == "done" and task["validated"] is True, task["error"]
    assert task["attempts"] == 4
    blocks = [
        (e["data"].get("block"), e["data"]["verdict"])
        for e in task["events"]
        if "verdict" in e.get("data", {})
    ]
    assert blocks == [(0, "pass"), (1, "fail"), (1, "pass")]
    committed = next(e for e in task["events"] if "committed (1 block(s)" in e["reason"])
    assert committed["status"] == "running"
    first, second, third, last = fakes.requests("coder")
    assert "END OF WORK" in last_user_message(first) and "geo.py" in last_user_message(first)
    # block 1 is committed: later requests carry it as the accepted exchange, once
    accepted = {
        "role": "assistant",
        "content": f"{FENCE}python\nimport math\n{FENCE}\nEND OF BLOCK",
    }
    assert second["messages"][-2] == accepted and "Accepted" in last_user_message(second)
    assert third["messages"][-4] == accepted and third["messages"][-2]["content"] == broken
    assert "import math" in last["messages"][-2]["content"]
    assert "def area(r: float)" in last["messages"][-2]["content"]
    assert "(ast)" in last_user_message(third) and "this block only" in last_user_message(third)
    assert len(fakes.requests("judge")) == 2  # the broken block never reached it
    assert "import math" in last_user_message(fakes.requests("judge")[1])  # as context
    assert task["result"] == f"{FENCE}python\nimport math\n\n{fixed[10:-4]}{FENCE}\n"
    assert task["patch"].startswith("--- /dev/null\n+++ b/geo.py\n")
    assert "+def area(r: float) -> float:\n" in task["patch"]


def test_block_by_block_a_bad_block_fails_alone_and_earlier_blocks_stay_committed(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    fakes = start_fakes(
        tmp_path,
        daemon_factory,
        builder=[f"{FENCE}python\nimport math\n{FENCE}\nEND OF BLOCK\n", "def (:"],
        validator=["PASS"],
        max_retries=1,
    )
    task = fakes.run("Write geo.py.", type="implementation", validation="block_by_block")

    assert task["status"] == "failed" and task["validated"] is False
    assert task["attempts"] == 3  # one for block 1, two (1 + max_retries) for block 2
    assert "block 2, attempt 2" in task["error"] and "1 earlier block(s)" in task["error"]
    assert task["result"] == f"{FENCE}python\nimport math\n{FENCE}\n"
    errors = [f for f in task["findings"] if f["severity"] == "error"]
    assert errors and {f["block"] for f in errors} == {1}  # block 1 has only ruff's warnings
    assert len(fakes.requests("judge")) == 1


# -- the store keeps older files --------------------------------------------------------


async def test_a_database_from_before_validation_opens_and_keeps_its_tasks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE tasks (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, type TEXT,
              prompt TEXT NOT NULL, context TEXT NOT NULL, request TEXT NOT NULL,
              priority INTEGER NOT NULL, validation TEXT NOT NULL, status TEXT NOT NULL,
              tier TEXT, model TEXT, decision TEXT, result TEXT, error TEXT,
              tokens INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL);
            INSERT INTO tasks VALUES ('t-old', 1, 'planning', 'p', '{}', '{}', 0, 'none',
              'done', 'architect', 'a', NULL, 'r', NULL, 3, 1.0, 2.0);
            """
        )
    store = await Store.open(path)
    try:
        task = await store.get_task("t-old")
        assert (task.result, task.validated, task.attempts, task.scratchpad) == ("r", None, 0, [])
        assert task.as_json()["findings"] == [] and task.as_json()["patch"] is None
    finally:
        await store.close()
    store = await Store.open(path)  # a second open migrates nothing twice
    await store.close()


def assert_applies(tmp_path: Path, name: str, old: str, patch: str, new: str) -> None:
    """`git apply` takes the patch: the host's diff is what an editor or script applies."""
    repo = tmp_path / "apply"
    repo.mkdir()
    (repo / name).write_text(old)
    (repo / "p.diff").write_text(patch)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "apply", "p.diff"], cwd=repo, check=True, timeout=BOUND_S)
    assert (repo / name).read_text() == new


# -- the real thing: SmolLM2 builder and validator --------------------------------------


@pytest.mark.real
def test_smollm2_runs_the_loop_end_to_end_and_the_mechanics_hold(demo_daemon: Daemon) -> None:
    with demo_daemon.client(timeout=BOUND_S) as http:
        swaps_before = len(http.get("/api/swaps", params={"limit": 1000}).json()["swaps"])
        response = http.post(
            "/api/tasks",
            json={
                "prompt": "Write a Python function add(a, b) that returns a + b.",
                "type": "implementation",
                "params": {"max_tokens": 64, "temperature": 0},
            },
        )
        assert response.status_code == 201, response.text
        submitted = response.json()
        assert submitted["validation"] == "final" and submitted["model"] == "builder-demo"
        task = wait_terminal(http, submitted["id"], 240.0)
        swaps = http.get("/api/swaps", params={"limit": 1000}).json()["swaps"][swaps_before:]

    max_retries = 3
    attempts = task["attempts"]
    assert 1 <= attempts <= max_retries + 1
    assert task["status"] in {"done", "failed"}
    marks = verdicts(task)
    assert [m[0] for m in marks] == list(range(1, attempts + 1))  # one verdict per attempt
    assert statuses(task).count("validating") == attempts
    assert all(v in {"pass", "fail", "none"} for _, v, _ in marks)
    assert all(by in {"checks", "validator-demo"} for _, _, by in marks)
    builders = [s for s in task["scratchpad"] if s["role"] == "builder"]
    assert len(builders) == attempts
    if task["status"] == "done":
        assert task["validated"] is True and marks[-1][1] == "pass"
        assert all(v != "pass" for _, v, _ in marks[:-1])
    else:
        assert task["validated"] is False and task["error"]
        assert all(v != "pass" for _, v, _ in marks)
        assert attempts == max_retries + 1
    # validation ran on the CPU beside the builder: it never swapped gpu0
    assert [s["model"] for s in swaps if s["device"] == "gpu0"] in ([], ["builder-demo"])
