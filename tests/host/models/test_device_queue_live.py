"""One queue per GPU, live: the demo daemon, its real llama-servers, real HTTP.

Requests that alternate between the two gpu0 models, from many clients at once, are
served in batches (a few swaps, not one per request) and every one is answered; a
streamed request that must wait for a swap is told so before its answer starts.
"""

from __future__ import annotations

import concurrent.futures
from importlib import resources
from pathlib import Path

import httpx

from tests.conftest import Daemon, start_daemon, wait_for_models

MODELS = ("architect-demo", "builder-demo")


def demo_with(scheduler: str) -> str:
    demo = resources.files("host").joinpath("data/demo.toml").read_text("utf-8")
    return f"{demo}\n[scheduler]\n{scheduler}\n"


def chat(daemon: Daemon, model: str, text: str) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 4,
        "temperature": 0,
    }
    with daemon.client(timeout=300) as client:
        return client.post("/v1/chat/completions", json=body)


def gpu0_swaps(daemon: Daemon) -> int:
    with daemon.client() as client:
        swaps = client.get("/api/swaps", params={"limit": 1000}).json()["swaps"]
    return sum(1 for s in swaps if s["device"] == "gpu0")


def test_alternating_requests_from_many_clients_are_batched_and_all_answered(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    daemon = start_daemon(tmp_path, demo_with("min_residency_s = 1"))
    daemon_factory.append(daemon)
    wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")

    def client(index: int) -> list[int]:
        return [
            chat(daemon, MODELS[(index + turn) % 2], f"client {index} turn {turn}").status_code
            for turn in range(2)
        ]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = [s for result in pool.map(client, range(8)) for s in result]
    assert statuses == [200] * 16
    # arrival order would swap for nearly every one of the 16; batches swap a few times
    assert gpu0_swaps(daemon) <= 4, daemon.status()["devices"]


def test_a_stream_that_waits_for_a_swap_is_told_why_before_its_answer(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    daemon = start_daemon(tmp_path, demo_with("min_residency_s = 0"))
    daemon_factory.append(daemon)
    wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")
    assert chat(daemon, "builder-demo", "hello").status_code == 200  # builder holds gpu0
    body = {
        "model": "architect-demo",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
        "stream": True,
    }
    with daemon.client(timeout=300) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["x-tierhost-model"] == "architect-demo"
            lines = [line for line in response.iter_lines() if line]
    assert lines[0].startswith(": tierhost: waiting: architect-demo is not loaded on gpu0")
    assert "builder-demo" in lines[0]
    assert lines[1].startswith(": tierhost: architect-demo is ready after")
    assert lines[-1] == "data: [DONE]"
    assert any(line.startswith("data: {") for line in lines[2:-1])


def test_a_request_priority_that_is_not_a_number_in_range_is_refused(
    demo_daemon: Daemon,
) -> None:
    body = {
        "model": "operator-demo",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
    }
    with demo_daemon.client() as client:
        for bad in ("urgent", "101", "-1000", "1.5"):
            response = client.post(
                "/v1/chat/completions", json=body, headers={"X-Tierhost-Priority": bad}
            )
            assert response.status_code == 400, bad
            assert "X-Tierhost-Priority" in response.json()["error"]["message"]
        fine = client.post("/v1/chat/completions", json=body, headers={"X-Tierhost-Priority": "50"})
        assert fine.status_code == 200
