"""A prompt too long for its model is OpenAI's 400 `context_length_exceeded`, which
clients recognise (LiteLLM, the openai SDK) and do not retry; a prompt that fits is never
refused by an estimate. Against the real daemon and SmolLM2 (architect-demo's window is
4,096 tokens a slot, operator-demo's 2,048)."""

from __future__ import annotations

import os
import random
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.real

LONG_WORDS = [
    "international",
    "development",
    "organization",
    "environmental",
    "responsibility",
    "communication",
    "infrastructure",
    "administration",
    "considerations",
    "understanding",
    "representative",
    "opportunities",
    "investigation",
    "relationships",
    "transportation",
    "agricultural",
    "performance",
    "significant",
    "particularly",
    "independent",
    "information",
    "technology",
    "management",
    "government",
    "experience",
    "everything",
    "throughout",
    "themselves",
    "university",
    "background",
    "discussion",
    "conference",
    "successful",
    "especially",
    "additional",
    "industrial",
    "production",
    "population",
    "individual",
    "requirements",
]
SHORT_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "on",
    "with",
    "be",
    "by",
    "at",
]


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
    import litellm as module

    return module


def chat(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def port_of(daemon: Daemon, model: str) -> int:
    port: int = next(m for m in daemon.status()["models"] if m["name"] == model)["port"]
    return port


def count(daemon: Daemon, text: str) -> int:
    """The text's tokens by SmolLM2's own tokenizer (llama-server `POST /tokenize` of the
    resident operator-demo, the same GGUF as every demo model)."""
    response = httpx.post(
        f"http://127.0.0.1:{port_of(daemon, 'operator-demo')}/tokenize",
        json={"content": text},
        timeout=30,
    )
    tokens = response.json()["tokens"]
    assert isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)
    return len(tokens)


def prose(daemon: Daemon, tokens: int, chars_per_token: float) -> str:
    """Text of about `tokens` real tokens that averages about `chars_per_token`
    characters a token: long words (one token each) mixed with short ones."""
    rng = random.Random(tokens)
    words: list[str] = []
    for _ in range(6):  # a few bounded rounds of measuring and topping up
        have = count(daemon, " ".join(words)) if words else 0
        if have >= tokens - 20:
            break
        for _ in range(tokens - have):
            long = rng.random() < (chars_per_token - 3) / 9
            words.append(rng.choice(LONG_WORDS if long else SHORT_WORDS))
    return " ".join(words)


def assert_openai_shape(error: dict[str, Any], window: int) -> None:
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "context_length_exceeded"
    assert f"This model's maximum context length is {window} tokens" in error["message"]


def test_litellm_and_the_openai_sdk_see_a_context_window_error(
    demo_daemon: Daemon, litellm: ModuleType
) -> None:
    huge = "word " * 60_000  # 300,000 characters: over 4,096 tokens however it is counted
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.completion(
            model="openai/architect",
            api_base=f"{demo_daemon.url}/v1",
            api_key="x",
            messages=chat(huge),
            num_retries=0,
        )
    client = openai.OpenAI(base_url=f"{demo_daemon.url}/v1", api_key="x", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="architect", messages=chat(huge), stream=stream)
        assert caught.value.status_code == 400
        assert caught.value.code == "context_length_exceeded"
        assert isinstance(caught.value.body, dict)
        assert_openai_shape(caught.value.body, 4096)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="auto", prompt=huge, max_tokens=2)
    assert caught.value.code == "context_length_exceeded"
    # Refused before any model was loaded for it.
    states = {m["name"]: m["state"] for m in demo_daemon.status()["models"]}
    assert states["architect-demo"] == "stopped"


def test_llama_servers_own_refusal_is_mapped_to_the_same_error(
    demo_daemon: Daemon, litellm: ModuleType
) -> None:
    # A model named directly skips the router: operator-demo itself refuses 3,000 tokens.
    text = prose(demo_daemon, 3000, 4.0)
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.completion(
            model="openai/operator-demo",
            api_base=f"{demo_daemon.url}/v1",
            api_key="x",
            messages=chat(text),
            num_retries=0,
        )
    with demo_daemon.client() as http:
        for path, body in (
            ("/v1/chat/completions", {"messages": chat(text)}),
            ("/v1/chat/completions", {"messages": chat(text), "stream": True}),
            ("/v1/completions", {"prompt": text}),
        ):
            response = http.post(path, json={"model": "operator-demo", "max_tokens": 2, **body})
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert_openai_shape(error, 2048)
            assert "However, your messages resulted in " in error["message"]
            assert response.headers["x-tierhost-model"] == "operator-demo"


def test_the_control_api_refuses_the_same_prompt_with_the_same_status(
    demo_daemon: Daemon,
) -> None:
    huge = "word " * 60_000
    with demo_daemon.client() as http:
        routed = http.post("/api/route", json={"prompt": huge, "tier": "architect"})
        submitted = http.post("/api/tasks", json={"prompt": huge, "tier": "architect"})
    for response in (routed, submitted):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "context_length_exceeded"
        assert "maximum context length is 4096 tokens" in error["message"]


def test_a_prompt_that_fits_is_not_refused_by_the_estimate(demo_daemon: Daemon) -> None:
    # The case: ~3,400 real tokens at over 4.8 characters a token, which four
    # characters a token put over architect-demo's 4,096.
    text = prose(demo_daemon, 3400, 5.5)
    tokens = count(demo_daemon, text)
    assert 3200 <= tokens <= 3700 and len(text) / 4 > 4096, (tokens, len(text))
    body = {"model": "architect", "messages": chat(text), "max_tokens": 4}
    with demo_daemon.client(timeout=120) as http:
        # architect-demo is not resident: only the estimate decides, and lets it through.
        assert {m["name"]: m["state"] for m in demo_daemon.status()["models"]}[
            "architect-demo"
        ] == "stopped"
        cold = http.post("/v1/chat/completions", json=body)
        assert cold.status_code == 200, cold.text
        assert cold.headers["x-tierhost-model"] == "architect-demo"
        # Now resident: its own tokenizer counts the prompt, and it fits.
        warm = http.post("/v1/chat/completions", json=body)
        assert warm.status_code == 200, warm.text
        assert warm.headers["x-tierhost-model"] == "architect-demo"
        assert warm.json()["usage"]["prompt_tokens"] < 4096


def test_a_resident_models_tokenizer_decides_where_the_estimate_cannot(
    demo_daemon: Daemon,
) -> None:
    spaces = " " * 70_000  # over 65,536 characters: refused on the estimate, ~1,100 tokens
    code = "def f(a, b):\n    return [x+1 for x in range(a) if x % b == 0]\n" * 200
    assert count(demo_daemon, spaces) < 2000 and count(demo_daemon, code) > 4096
    assert len(code) / 4 < 4096  # the estimate alone would send it to architect-demo
    with demo_daemon.client(timeout=120) as http:

        def ask(content: str) -> httpx.Response:
            return http.post(
                "/v1/chat/completions",
                json={"model": "architect", "messages": chat(content), "max_tokens": 2},
            )

        refused = ask(spaces)  # architect-demo is not resident: nothing can count it
        assert refused.status_code == 400
        assert "at least 4375 tokens" in refused.json()["error"]["message"]
        warmed = http.post(
            "/v1/chat/completions",
            json={"model": "architect-demo", "messages": chat("hi"), "max_tokens": 1},
        )
        assert warmed.status_code == 200
        # Resident: counted exactly, both ways.
        counted = ask(spaces)
        assert counted.status_code == 200, counted.text
        assert counted.headers["x-tierhost-model"] == "architect-demo"
        too_long = ask(code)
        assert too_long.status_code == 400
        error = too_long.json()["error"]
        assert_openai_shape(error, 4096)
        # the router's count (it names the candidates), not llama-server's own refusal
        assert f"resulted in {count(demo_daemon, code)} tokens. Please" in error["message"]
        assert (
            "(the largest context window among architect-demo, operator-demo)" in (error["message"])
        )
