"""The OpenAI-compatible proxy against a real daemon, real llama-server and SmolLM2."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Daemon, model_status, wait_for

pytestmark = pytest.mark.real

CHAT = [{"role": "user", "content": "Say hello."}]


def openai_client(daemon: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused", timeout=60, max_retries=0)


def test_models_lists_models_and_tiers(demo_daemon: Daemon) -> None:
    ids = {m.id for m in openai_client(demo_daemon).models.list()}
    assert {"architect-demo", "builder-demo", "operator-demo", "validator-demo"} <= ids
    assert {"architect", "builder", "operator"} <= ids


def test_chat_streaming_and_not_swaps_between_architect_and_builder(demo_daemon: Daemon) -> None:
    client = openai_client(demo_daemon)
    raw = client.chat.completions.with_raw_response.create(
        model="architect-demo", messages=CHAT, max_tokens=8
    )
    assert raw.headers["x-tierhost-model"] == "architect-demo"
    assert raw.headers["x-tierhost-tier"] == "architect"
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.model == "architect-demo"  # the served name, not the GGUF path

    with client.chat.completions.with_streaming_response.create(
        model="builder-demo", messages=CHAT, max_tokens=8, stream=True
    ) as response:
        assert response.headers["x-tierhost-model"] == "builder-demo"
        chunks = list(response.parse())
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    assert {c.model for c in chunks} == {"builder-demo"}

    gpu0 = next(d for d in demo_daemon.status()["devices"] if d["name"] == "gpu0")
    assert gpu0["residents"] == ["builder-demo"]
    assert gpu0["used_mb"] <= gpu0["budget_mb"]
    swaps = demo_daemon.client().get("/api/swaps").json()["swaps"]
    assert [(s["model"], s["evicted"], s["outcome"]) for s in swaps][-2:] == [
        ("architect-demo", [], "ready"),
        ("builder-demo", ["architect-demo"], "ready"),
    ]
    assert all(s["duration_s"] > 0 for s in swaps)


def test_a_tier_name_routes_to_its_first_model(demo_daemon: Daemon) -> None:
    raw = openai_client(demo_daemon).chat.completions.with_raw_response.create(
        model="builder", messages=CHAT, max_tokens=4
    )
    assert raw.headers["x-tierhost-model"] == "builder-demo"


def test_completions_endpoint(demo_daemon: Daemon) -> None:
    result = openai_client(demo_daemon).completions.create(
        model="operator-demo", prompt="The capital of France is", max_tokens=4
    )
    assert result.choices[0].text


def test_unknown_model_is_a_404_that_lists_the_names(demo_daemon: Daemon) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client(demo_daemon).chat.completions.create(
            model="gpt-9", messages=CHAT, max_tokens=4
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert "gpt-9" in body["message"] and "architect-demo" in body["message"]


def test_twenty_concurrent_alternating_requests_keep_the_budget(demo_daemon: Daemon) -> None:
    before = {m["name"]: m["pid"] for m in demo_daemon.status()["models"]}
    samples: list[dict[str, Any]] = []
    done = threading.Event()

    def sample() -> None:
        with demo_daemon.client(timeout=10) as client:
            while not done.wait(0.05):
                samples.append(client.get("/api/status").json())

    sampler = threading.Thread(target=sample)
    sampler.start()

    async def run() -> list[str]:
        client = openai.AsyncOpenAI(
            base_url=f"{demo_daemon.url}/v1", api_key="unused", timeout=120, max_retries=0
        )
        models = ["architect-demo", "builder-demo"] * 10

        async def one(model: str) -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=CHAT, max_tokens=6
            )
            assert raw.headers["x-tierhost-model"] == model
            return raw.parse().choices[0].message.content or ""

        try:
            return await asyncio.wait_for(asyncio.gather(*(one(m) for m in models)), 240)
        finally:
            await client.close()

    try:
        answers = asyncio.run(run())
    finally:
        done.set()
        sampler.join(timeout=15)
    assert len(answers) == 20 and all(answers)
    assert len(samples) > 5
    for status in samples:
        gpu0 = next(d for d in status["devices"] if d["name"] == "gpu0")
        assert gpu0["used_mb"] <= gpu0["budget_mb"], gpu0
        assert len(set(gpu0["residents"]) & {"architect-demo", "builder-demo"}) <= 1, gpu0
    after = {m["name"]: m["pid"] for m in demo_daemon.status()["models"]}
    for persistent in ("operator-demo", "validator-demo"):
        assert after[persistent] == before[persistent] is not None  # never restarted


def test_a_client_that_leaves_the_queue_is_dropped(demo_daemon: Daemon) -> None:
    with demo_daemon.client() as http:
        # architect busy with a long generation; a builder request must wait behind it
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "architect-demo",
                "messages": CHAT,
                "max_tokens": 400,
                "stream": True,
                "ignore_eos": True,
            },
        ) as busy:
            assert busy.status_code == 200
            lines = busy.iter_lines()
            next(lines)

            def queued_request() -> None:
                try:
                    with httpx.Client(base_url=demo_daemon.url, timeout=0.5) as impatient:
                        impatient.post(
                            "/v1/chat/completions",
                            json={
                                "model": "builder-demo",
                                "messages": CHAT,
                                "max_tokens": 4,
                            },
                        )
                except httpx.TimeoutException:
                    pass  # the client gives up while queued

            leaver = threading.Thread(target=queued_request)
            leaver.start()
            wait_for(
                lambda: model_status(demo_daemon, "builder-demo")["queued"] == 1,
                what="the builder request to queue",
            )
            leaver.join(timeout=10)
            wait_for(
                lambda: model_status(demo_daemon, "builder-demo")["queued"] == 0,
                what="the queue to drop the request",
            )
            for _ in lines:
                pass
    wait_for(
        lambda: model_status(demo_daemon, "architect-demo")["in_flight"] == 0,
        what="the stream to finish",
    )
    assert model_status(demo_daemon, "builder-demo")["state"] == "stopped"


def test_a_client_that_leaves_mid_stream_frees_the_upstream_slot(demo_daemon: Daemon) -> None:
    with (
        demo_daemon.client() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "architect-demo",
                "messages": CHAT,
                "max_tokens": 2000,
                "stream": True,
                "ignore_eos": True,
            },
        ) as response,
    ):
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    port = model_status(demo_daemon, "architect-demo")["port"]

    def idle() -> bool:
        slots = httpx.get(f"http://127.0.0.1:{port}/slots", timeout=5).json()
        return not any(s["is_processing"] for s in slots)

    wait_for(idle, timeout=20, what="llama-server to stop generating")
    wait_for(
        lambda: model_status(demo_daemon, "architect-demo")["in_flight"] == 0,
        what="the lease to be released",
    )


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "kind"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "invalid_request"),
        ("POST", "/v1/chat/completions", b"", 400, "invalid_request"),
        ("POST", "/v1/chat/completions", b'{"messages": []}', 400, "invalid_request"),
        ("POST", "/v1/chat/completions", b'{"model": 5}', 400, "invalid_request"),
        ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
        ("GET", "/v2/nothing", None, 404, "not_found"),
        ("GET", "/api/swaps?limit=abc", None, 400, "invalid_request"),
    ],
)
def test_bad_requests_get_json_errors(
    demo_daemon: Daemon, method: str, path: str, content: bytes | None, status: int, kind: str
) -> None:
    headers = {"content-type": "application/json"} if content is not None else {}
    with demo_daemon.client() as http:
        response = http.request(method, path, content=content, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == kind and error["message"]


def test_a_huge_body_is_refused_with_413(demo_daemon: Daemon) -> None:
    body = json.dumps({"model": "architect-demo", "prompt": "x" * (33 * 1024 * 1024)})
    with demo_daemon.client() as http:
        response = http.post("/v1/completions", content=body)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


def test_dns_rebinding_is_refused(demo_daemon: Daemon) -> None:
    with demo_daemon.client() as http:
        assert http.get("/api/status", headers={"Host": "evil.example:8788"}).status_code == 421
        cross = http.get("/api/status", headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        assert http.get("/api/status", headers={"Origin": demo_daemon.url}).is_success


PLAIN_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"messages": CHAT}),
    ("/v1/chat/completions", {"messages": CHAT, "n": 2}),
    ("/v1/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": 2}),
    ("/v1/completions", {"prompt": "The capital of France is"}),
    ("/v1/completions", {"prompt": ["The sky is", "Grass is"]}),
]


def test_a_plain_answer_is_what_llama_server_itself_answers(demo_daemon: Daemon) -> None:
    # The proxy asks a managed model for a stream (so that a client leaving can stop it)
    # and puts the plain answer back together: compare with llama-server's own, greedy.
    port = model_status(demo_daemon, "operator-demo")["port"]
    with demo_daemon.client() as http:
        for path, body in PLAIN_BODIES:
            request = {**body, "max_tokens": 6, "temperature": 0}
            ours = http.post(path, json={"model": "operator-demo", **request})
            theirs = httpx.post(f"http://127.0.0.1:{port}{path}", json=request, timeout=60)
            assert ours.status_code == theirs.status_code == 200, (body, ours.text)
            assert ours.headers["content-type"].startswith("application/json")
            mine, native = ours.json(), theirs.json()
            assert set(mine) == set(native), body
            assert mine["object"] == native["object"]
            assert len(mine["choices"]) == len(native["choices"])
            for got, want in zip(mine["choices"], native["choices"], strict=True):
                assert set(got) == set(want), body
                assert got["finish_reason"] == want["finish_reason"]
                if "message" in want:
                    assert got["message"]["content"] == want["message"]["content"]
                    assert got["message"]["role"] == want["message"]["role"]
                else:
                    assert got["text"] == want["text"]
                if want.get("logprobs"):
                    assert len(got["logprobs"]["content"]) == len(want["logprobs"]["content"])
            assert mine["usage"]["completion_tokens"] == native["usage"]["completion_tokens"]
