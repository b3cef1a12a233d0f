"""The classifier model asked for real: a daemon whose `classifier` is the demo's CPU
validator (SmolLM2 on llama-server), a prompt nothing explicit is sure of, and the
answer held to the type names by the grammar, through every way work arrives."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from host.config import load_config
from tests.conftest import Daemon, start_daemon, stop_checked, wait_for_models

pytestmark = pytest.mark.real

UNSURE = "hmm."
"""No rule fires and the statistical classifier is far under its threshold (0.17)."""

TYPES = set(load_config().task_type_names())


@pytest.fixture(scope="module")
def routed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    demo = (resources.files("host") / "data" / "demo.toml").read_text()
    tmp: Path = tmp_path_factory.mktemp("classifier-model")
    daemon = start_daemon(tmp, 'classifier = "validator-demo"\n' + demo)
    try:
        wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")
        yield daemon
    finally:
        stop_checked(daemon)


def test_the_route_dry_run_asks_the_model_and_shows_its_answer(routed_daemon: Daemon) -> None:
    with routed_daemon.client() as http:
        decision = http.post("/api/route", json={"prompt": UNSURE}).json()
    evidence = decision["type_evidence"]
    assert evidence["classifier"]["confidence"] < load_config().classifier_threshold
    asked = evidence["classifier_model"]
    assert asked["model"] == "validator-demo" and asked["error"] is None
    assert asked["answer"] in TYPES  # the grammar allows nothing else
    assert set(asked["choices"]) == TYPES  # no rule fired: any type may be named
    assert evidence["decided_by"] == "classifier model"
    assert decision["type"] == asked["answer"]
    assert decision["reasons"][0].endswith(f"the classifier model chose {asked['answer']}")


def test_a_task_and_an_auto_chat_are_routed_with_the_models_answer(routed_daemon: Daemon) -> None:
    with routed_daemon.client() as http:
        task = http.post("/api/tasks", json={"prompt": UNSURE}).json()
        chat = http.post(
            "/v1/chat/completions",
            json={
                "model": "auto",
                "messages": [{"role": "user", "content": UNSURE}],
                "max_tokens": 2,
            },
        )
    assert "the classifier model chose" in task["decision"]["reasons"][0]
    assert task["type"] in TYPES
    assert chat.status_code == 200, chat.text
    assert chat.headers["X-Tierhost-Task-Type"] == task["type"]  # the same question, answered alike
