"""GPU modes per device: what each mode lets a device hold. Pure.

- `auto`: any model; the scheduler swaps by queue.
- a tier name (`architect`, `builder`, …): pinned; only that tier's models may occupy
  the device, and work for other tiers waits (its status says why).
- `gaming`: the device is released: its models are stopped and nothing loads onto it
  unless a request is forced (force-big).
"""

from __future__ import annotations

import enum

from host.config import Config, LocalModel

AUTO = "auto"
GAMING = "gaming"


class ModeError(ValueError):
    """A mode or device that does not exist; the message lists the valid ones."""


def valid_modes(config: Config) -> list[str]:
    return [AUTO, *config.tiers, GAMING]


def gpu_devices(config: Config) -> list[str]:
    return [name for name, device in config.devices.items() if device.kind == "gpu"]


def check_mode(config: Config, mode: str, device: str | None) -> list[str]:
    """The devices a mode change applies to, or ModeError saying what is wrong."""
    if mode not in valid_modes(config):
        raise ModeError(f"unknown mode {mode!r}; valid modes: {', '.join(valid_modes(config))}")
    gpus = gpu_devices(config)
    if device is None:
        if not gpus:
            raise ModeError("this config has no GPU device to set a mode on")
        return gpus
    if device not in gpus:
        raise ModeError(f"unknown GPU device {device!r}; GPU devices: {', '.join(gpus) or 'none'}")
    return [device]


def allowed_models(config: Config, device: str, mode: str) -> frozenset[str] | None:
    """The models `mode` lets `device` hold; None means any."""
    if mode == AUTO:
        return None
    if mode == GAMING:
        return frozenset()
    tier = config.tiers[mode]
    on_device = {
        name
        for name, model in config.models.items()
        if isinstance(model, LocalModel) and model.device == device
    }
    return frozenset(on_device & set(tier.models))


class Gate(enum.Enum):
    """What a device's mode says of one model for one piece of work."""

    PASS = "pass"
    """It may run: the device is in `auto`, the model is in the pinned tier, the work is
    forced, or the model has no device of ours (a remote box keeps its own modes)."""
    SKIP = "skip"
    """The device is released (gaming): route elsewhere if anything else can serve."""
    WAIT = "wait"
    """The device is pinned to another tier: the work keeps its model and waits."""


def gate(config: Config, device: str | None, mode: str, model: str, forced: bool) -> Gate:
    """The mode gate of routing (step 4), from the same rules `allowed_models` gives the
    arbiter, so what routing expects and what the device admits cannot differ."""
    if device is None or forced:
        return Gate.PASS
    if mode not in (AUTO, GAMING) and mode not in config.tiers:
        return Gate.WAIT  # a mode of an older config: hold the work rather than guess
    allowed = allowed_models(config, device, mode)
    if allowed is None or model in allowed:
        return Gate.PASS
    return Gate.SKIP if mode == GAMING else Gate.WAIT


def hold_reason(device: str, mode: str) -> str:
    """Why work waits on a device in this mode (shown in task and request errors)."""
    if mode == AUTO:
        return ""
    if mode == GAMING:
        return f"{device} is in gaming mode: nothing loads onto it unless forced (force-big)"
    return f"{device} is pinned to {mode}: only {mode} models may occupy it"
