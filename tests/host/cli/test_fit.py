"""`tierhost fit` for a command model: its configured memory_mb against the budget (no
GGUF to estimate from)."""

from __future__ import annotations

import pytest

from host.cli.fit import fit_report
from host.config import ConfigError, parse_config

CONFIG = """
[devices.gpu0]
memory_mb = 400
[models.tts]
kind = "command"
device = "gpu0"
memory_mb = 300
command = ["tts-server", "--port", "{port}"]
[models.far]
kind = "remote"
base_url = "http://box:8080/v1"
[tiers.architect]
models = ["tts"]
[tiers.builder]
models = ["tts"]
[tiers.operator]
models = ["far"]
"""


def test_a_command_model_shows_its_configured_memory() -> None:
    report = fit_report(parse_config(CONFIG), "tts", None, None)
    assert report["memory_mb"] == 300
    assert report["budget_mb"] == 400
    assert report["fits"] is True
    assert report["estimate"] is None
    assert "300 MiB (memory_mb; no estimate for a command)" in report["text"]


def test_a_remote_model_has_nothing_to_fit() -> None:
    with pytest.raises(ConfigError, match=r"'far' is not a model this host starts \(those: tts\)"):
        fit_report(parse_config(CONFIG), "far", None, None)
