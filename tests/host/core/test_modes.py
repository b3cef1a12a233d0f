"""Device modes decide what a device may hold."""

from __future__ import annotations

import pytest

from host.config import load_config
from host.core.modes import ModeError, allowed_models, check_mode, hold_reason

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
