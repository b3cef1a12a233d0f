"""What the composition root builds for command models: their launch specs, what they
count on their device, and none of llama-server's extras (no llama-server needed)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from host.config import parse_config
from host.daemon import Host

CONFIG = f"""
[host]
stop_grace_s = 7

[devices.gpu0]
kind = "gpu"
memory_mb = 400

[models.tts]
kind = "command"
device = "gpu0"
memory_mb = 300
command = {json.dumps([sys.executable, "-m", "tts", "--port", "{port}", "--host", "{host}"])}
health_path = "/ready"
env = {{ VOICES = "/srv/voices", CUDA_VISIBLE_DEVICES = "5" }}
stop_timeout_s = 2

[models.asr]
kind = "command"
device = "gpu0"
memory_mb = 200
command = ["python3", "-m", "asr", "{{port}}"]

[tiers.architect]
models = ["tts"]
[tiers.builder]
models = ["asr"]
[tiers.operator]
models = ["asr"]
"""


def test_a_command_models_spec_has_its_argv_health_path_env_and_stop_timeout(
    tmp_path: Path,
) -> None:
    host = Host(parse_config(CONFIG), tmp_path)
    host.build()  # no managed model: no llama-server is looked for

    tts = host.processes["tts"].spec
    assert tts.argv(4100) == [sys.executable, "-m", "tts", "--port", "4100", "--host", "127.0.0.1"]
    assert tts.health_path == "/ready"
    assert tts.env == {"VOICES": "/srv/voices", "CUDA_VISIBLE_DEVICES": "5"}
    assert tts.stop_grace_s == 2
    assert tts.log_path == tmp_path / "logs" / "tts.log"
    assert tts.pid_path == tmp_path / "run" / "tts.pid"
    assert host.processes["asr"].spec.stop_grace_s == 7  # host.stop_grace_s
    assert host.processes["asr"].spec.health_path == "/health"
    assert host.memory_of == {"tts": 300, "asr": 200}
    assert host.slot_keepers == {} and host.warm_pool.files == {}
    assert host.arbiters["gpu0"].budgets == {"gpu0": 400}


def test_on_a_real_card_a_command_gets_its_index_unless_its_env_says_otherwise(
    tmp_path: Path,
) -> None:
    host = Host(parse_config(CONFIG), tmp_path)
    host.devices["gpu0"] = dataclasses.replace(host.devices["gpu0"], gpu_index=1)
    host.build()
    assert host.processes["asr"].spec.env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert host.processes["tts"].spec.env["CUDA_VISIBLE_DEVICES"] == "5"
