"""Device modes decide what a device may hold."""

from __future__ import annotations

import pytest

from host.config import load_config
from host.core.modes import (
    Gate,
    ModeError,
    allowed_models,
    check_mode,
    gate,
    hold_reason,
    valid_modes,
)

CONFIG = load_config()


def test_auto_allows_everything_and_gaming_nothing() -> None:
    assert allowed_models(CONFIG, "gpu0", "auto") is None
    assert allowed_models(CONFIG, "gpu0", "gaming") == frozenset()


def test_a_pinned_device_holds_only_that_tiers_models() -> None:
    assert allowed_models(CONFIG, "gpu0", "architect") == {"architect-demo"}
    assert allowed_models(CONFIG, "gpu0", "builder") == {"builder-demo"}


def test_no_device_means_every_gpu() -> None:
    assert check_mode(CONFIG, "gaming", None) == ["gpu0"]


@pytest.mark.parametrize(
    ("mode", "device", "message"),
    [
        ("party", None, "unknown mode 'party'; valid modes: auto, architect, builder"),
        ("gaming", "cpu", "unknown GPU device 'cpu'; GPU devices: gpu0"),
        ("auto", "gpu7", "unknown GPU device 'gpu7'"),
    ],
)
def test_bad_modes_and_devices_are_named(mode: str, device: str | None, message: str) -> None:
    with pytest.raises(ModeError, match=message):
        check_mode(CONFIG, mode, device)


def test_the_hold_reason_says_what_to_do() -> None:
    assert "unless forced" in hold_reason("gpu0", "gaming")
    assert hold_reason("gpu0", "architect").startswith("gpu0 is pinned to architect")
    assert hold_reason("gpu0", "auto") == ""


@pytest.mark.parametrize("mode", valid_modes(CONFIG))
@pytest.mark.parametrize("model", ["architect-demo", "builder-demo"])
def test_routings_gate_agrees_with_what_the_device_admits(mode: str, model: str) -> None:
    allowed = allowed_models(CONFIG, "gpu0", mode)
    verdict = gate(CONFIG, "gpu0", mode, model, forced=False)
    assert (verdict is Gate.PASS) == (allowed is None or model in allowed)
    if verdict is not Gate.PASS:
        assert verdict is (Gate.SKIP if mode == "gaming" else Gate.WAIT)
    assert gate(CONFIG, "gpu0", mode, model, forced=True) is Gate.PASS
    assert gate(CONFIG, None, mode, model, forced=False) is Gate.PASS


def test_a_mode_the_config_no_longer_has_holds_the_work() -> None:
    assert gate(CONFIG, "gpu0", "retired-tier", "builder-demo", forced=False) is Gate.WAIT
