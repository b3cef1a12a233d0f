"""`yield_to_llm`, live: a voice (a scripted TTS command server) waits for the words (the
real llama-server with SmolLM2) on the card they share, then speaks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Daemon, model_status, start_daemon, wait_for
from tests.host.fake_command_server import command, speech_bytes

BOUND_S = 120.0


def config() -> str:
    return f"""
[host]
queue_timeout_s = {BOUND_S}

[devices.gpu0]
kind = "gpu"
memory_mb = 1000

[models.words]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 500
args = ["--ctx-size", "2048", "--parallel", "2", "--no-warmup"]
start_timeout_s = 60

[models.voice]
kind = "command"
device = "gpu0"
memory_mb = 200
command = {json.dumps(command("--name", "voice"))}
yield_to_llm = true

[tiers.architect]
models = ["words"]
[tiers.builder]
models = ["words"]
[tiers.operator]
models = ["voice"]
"""


@pytest.mark.real
def test_the_voice_waits_for_the_words_then_speaks(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    daemon = start_daemon(tmp_path, config())
    daemon_factory.append(daemon)
    http = daemon.client(timeout=BOUND_S)
    speech = {"model": "voice", "voice": "alto"}
    assert http.post("/v1/audio/speech", json={**speech, "input": "warm"}).status_code == 200
    endless = {
        "model": "words",
        "prompt": "Tell a long story.",
        "max_tokens": 4000,
        "ignore_eos": True,
        "stream": True,
    }
    spoken: dict[int, tuple[float, httpx.Response]] = {}

    def say(index: int) -> None:
        with daemon.client(timeout=BOUND_S) as own:
            answer = own.post("/v1/audio/speech", json={**speech, "input": f"line {index}"})
        spoken[index] = (time.monotonic(), answer)

    # The words stream until the test leaves (which stops the generation): however fast
    # the machine, the voice's requests all arrive while the words are in flight.
    speakers = [threading.Thread(target=say, args=(index,)) for index in range(3)]
    with http.stream("POST", "/v1/completions", json=endless) as words:
        assert words.status_code == 200
        lines = words.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        wait_for(lambda: model_status(daemon, "words")["in_flight"] == 1, "the words generating")
        for index, speaker in enumerate(speakers):
            speaker.start()
            wait_for(
                lambda n=index + 1: model_status(daemon, "voice")["queued"] == n,
                f"speech request {index} waiting",
            )
        assert not spoken, "the voice spoke beside the words"
        with daemon.client() as other:
            waiting = other.get("/api/status").json()["devices"][0]["waiting"]
        assert [w["model"] for w in waiting] == ["voice", "voice", "voice"]
        words_done = time.monotonic()  # the words end as the test leaves the stream
    for thread in speakers:
        thread.join(timeout=BOUND_S)
    assert len(spoken) == 3
    for index, (at, answer) in spoken.items():
        assert answer.status_code == 200, answer.text
        assert answer.content == speech_bytes(f"line {index}", "alto")
        assert at >= words_done
        assert float(answer.headers["x-tierhost-wait-ms"]) > 0
    assert model_status(daemon, "voice")["state"] == "ready"  # it waited, it was not evicted
    http.close()
