"""The activity log against a real daemon (SmolLM2 on the CPU): what users and careless
or hostile clients send is all there, with its status and why, and the dashboard's own
reads are not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon, model_status, start_daemon, stop_checked, wait_for

CONFIG = """
[host]
max_body_mb = 1

[devices.cpu]
kind = "cpu"

[models.helper]
gguf = "demo:smollm2"
device = "cpu"
persistent = true
args = ["--ctx-size", "2048", "--parallel", "2", "--no-warmup"]
start_timeout_s = 60

[tiers.architect]
models = ["helper"]
[tiers.builder]
models = ["helper"]
[tiers.operator]
models = ["helper"]
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    running = start_daemon(tmp_path_factory.mktemp("activity"), CONFIG)
    try:
        wait_for(lambda: model_status(running, "helper")["state"] == "ready", "helper up", 60)
        yield running
    finally:
        stop_checked(running)


def requests(box: Daemon, **query: str | int) -> list[dict[str, Any]]:
    with box.client() as client:
        answer = client.get("/api/requests", params=query)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["requests"]
    return rows


def newest(box: Daemon, path: str) -> dict[str, Any]:
    return next(row for row in requests(box) if row["path"] == path)


def test_a_completion_is_logged_with_what_was_asked_who_served_and_its_tokens(
    box: Daemon,
) -> None:
    body = {
        "model": "builder",
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 5,
    }
    with box.client() as client:
        plain = client.post("/v1/chat/completions", json=body, headers={"user-agent": "aider/0.86"})
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            assert s.status_code == 200
            streamed = b"".join(s.iter_bytes())
    assert plain.status_code == 200, plain.text
    assert b"[DONE]" in streamed

    rows = [r for r in requests(box) if r["path"] == "/v1/chat/completions"][:2]
    stream_row, plain_row = rows
    for row in rows:
        assert (row["method"], row["status"], row["asked"], row["model"], row["tier"]) == (
            "POST",
            200,
            "builder",
            "helper",
            "builder",
        )
        assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= 5
        assert row["tokens_per_s"] > 0 and row["wait_ms"] is not None
        assert row["duration_ms"] > 0 and row["client"] == "127.0.0.1" and row["error"] is None
    assert plain_row["agent"] == "aider/0.86"
    assert stream_row["id"] > plain_row["id"]  # newest first


def test_a_client_that_leaves_mid_stream_is_logged_as_cut_short(box: Daemon) -> None:
    body = {
        "model": "operator",
        "stream": True,
        "messages": [{"role": "user", "content": "Tell a very long story."}],
        "max_tokens": 2000,
    }
    with (
        box.client() as client,
        client.stream("POST", "/v1/chat/completions", json=body) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        for _ in range(3):
            next(lines)  # a few chunks, then the client goes

    def cut() -> dict[str, Any] | None:
        return next((r for r in requests(box) if r["error"] and "client left" in r["error"]), None)

    row = wait_for(cut, "the stream's row, cut short")
    assert (row["status"], row["asked"], row["model"]) == (200, "operator", "helper")
    assert row["error"] == "the client left before the answer ended"


def test_refusals_leave_a_trace_that_says_why(box: Daemon) -> None:
    with box.client() as client:
        unknown = client.post(
            "/v1/chat/completions",
            json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
        )
        too_big = client.post(
            "/v1/chat/completions",
            content=b"x" * (2 * 1024 * 1024),
            headers={"content-type": "application/json"},
        )
        foreign = client.get("/api/status", headers={"host": "evil.example"})
        nowhere = client.get("/v1/%1b[31mred")
    assert (unknown.status_code, too_big.status_code, foreign.status_code) == (404, 413, 421)
    assert nowhere.status_code == 404

    rows = requests(box)

    def row(path: str, status: int) -> dict[str, Any]:
        return next(r for r in rows if r["path"] == path and r["status"] == status)

    assert "nope" in row("/v1/chat/completions", 404)["error"]
    assert "MiB" in row("/v1/chat/completions", 413)["error"]
    assert "evil.example" in row("/api/status", 421)["error"]
    assert row("/v1/?[31mred", 404)["method"] == "GET"  # the escape made harmless

    only_404 = requests(box, status=404)
    assert only_404 and all(row["status"] == 404 for row in only_404)


def test_state_reads_are_not_logged_but_changes_and_counts_are(box: Daemon) -> None:
    with box.client() as client:
        for _ in range(3):
            assert client.get("/api/status").status_code == 200
        table = client.get("/api/routing").json()["routes"]
        assert client.put("/api/routing", json={"routes": table}).status_code == 200
        bad_limit = client.get("/api/requests", params={"limit": "0"})
        metrics = client.get("/metrics").text
    assert bad_limit.status_code == 400 and "limit" in bad_limit.json()["error"]["message"]

    rows = requests(box, limit=1000)
    assert not any(row["path"] == "/api/status" and row["status"] == 200 for row in rows)
    assert any(row["method"] == "PUT" and row["path"] == "/api/routing" for row in rows)
    assert 'tierhost_requests_total{model="helper",status="200"}' in metrics
    assert 'tierhost_requests_total{model="",status="404"}' in metrics
    assert 'tierhost_requests_total{model="",status="200"}' in metrics  # the reads, counted


def test_a_query_that_is_not_a_number_is_a_clear_400(box: Daemon) -> None:
    with httpx.Client(base_url=box.url) as client:
        answer = client.get("/api/requests", params={"status": "2OO"})
    assert answer.status_code == 400
    assert "status must be a whole number" in answer.json()["error"]["message"]
