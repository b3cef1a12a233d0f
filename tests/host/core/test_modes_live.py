"""GPU modes against a real daemon: gaming releases the GPU, force-big still runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Daemon, start_daemon, wait_for_models
from tests.host.api.test_proxy import CHAT, model_status, wait_for

pytestmark = pytest.mark.real


def chat(daemon: Daemon, model: str, **headers: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    with daemon.client() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": CHAT, "max_tokens": 4},
            headers=headers,
        )
    return response.status_code, response.json()


def test_gaming_stops_gpu_models_and_only_forced_work_loads(demo_daemon: Daemon) -> None:
    assert chat(demo_daemon, "architect-demo")[0] == 200
    with demo_daemon.client() as http:
        response = http.put("/api/mode", json={"mode": "gaming"})
    assert response.json() == {"modes": {"gpu0": "gaming"}}
    wait_for(
        lambda: model_status(demo_daemon, "architect-demo")["state"] == "stopped",
        what="gaming mode to stop the GPU model",
    )
    gpu0 = next(d for d in demo_daemon.status()["devices"] if d["name"] == "gpu0")
    assert gpu0["residents"] == [] and "gaming" in gpu0["hold"]

    status, body = chat(demo_daemon, "builder-demo")
    assert status == 503 and "gaming mode" in body["error"]["message"]
    assert model_status(demo_daemon, "operator-demo")["state"] == "ready"  # CPU unaffected
    assert chat(demo_daemon, "operator-demo")[0] == 200

    status, _ = chat(demo_daemon, "builder-demo", **{"X-Force-Big": "true"})
    assert status == 200


def test_a_pinned_device_serves_only_its_tier(demo_daemon: Daemon) -> None:
    with demo_daemon.client() as http:
        assert http.put("/api/mode", json={"mode": "builder", "device": "gpu0"}).is_success
    assert chat(demo_daemon, "builder-demo")[0] == 200
    status, body = chat(demo_daemon, "architect-demo")
    assert status == 503 and "pinned to builder" in body["error"]["message"]


def test_modes_survive_a_restart(tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    first = start_daemon(tmp_path)
    daemon_factory.append(first)
    with first.client() as http:
        assert http.put("/api/mode", json={"mode": "gaming"}).is_success
    first.stop()
    second = start_daemon(tmp_path, data_dir=first.data_dir)
    daemon_factory.append(second)
    with second.client() as http:
        assert http.get("/api/mode").json()["modes"] == {"gpu0": "gaming"}
    wait_for_models(second, {"operator-demo"}, "ready")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"mode": "party"}, "unknown mode 'party'"),
        ({"mode": "gaming", "device": "cpu"}, "unknown GPU device 'cpu'"),
        ({"device": "gpu0"}, "mode: required field is missing"),
        ({"mode": 3}, "mode: Input should be a valid string"),
        ({"mode": "auto", "colour": "red"}, "colour: unknown field"),
    ],
)
def test_bad_mode_changes_are_400(demo_daemon: Daemon, body: dict, message: str) -> None:  # type: ignore[type-arg]
    with demo_daemon.client() as http:
        response = http.put("/api/mode", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
