"""Placement: how a managed model is told which cards are its own.

Pure: the shell passes what the config and NVML say, and gets back the extra arguments
and environment for the server's start. Rules:

- A model on several devices gets `--tensor-split` with one part per device, in the
  sorted device order, in proportion to its shares (MiB; llama-server normalises the
  parts); with no shares yet (memory left to the estimate) the parts are equal.
- `CUDA_VISIBLE_DEVICES` names exactly the model's cards, in the same order (CUDA
  numbers the visible cards from 0 in the order listed, so split part i lands on the
  card of device i). It is set only when every one of its devices has an NVML index (a
  budget-only or CPU device has none: there is no card to name), and, for a one-device
  model, only on a box with several GPUs: with one card there is nothing to pin.
- Devices that a model spans are arbitrated together (`device_groups`): one arbiter, so
  one plan, for every card such a model needs; a device no model spans is a group of
  its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Launch:
    """What a model's start adds to its argv and environment."""

    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def launch_for(
    devices: Sequence[str],
    shares: Mapping[str, int],
    gpu_indexes: Mapping[str, int | None],
    gpus_on_box: int,
) -> Launch:
    """The `--tensor-split` and `CUDA_VISIBLE_DEVICES` for a model on `devices` (sorted,
    as the config gives them) with MiB `shares` per device (empty: unknown yet);
    `gpu_indexes` maps each device to its NVML index or None, `gpus_on_box` counts the
    box's real cards."""
    args: tuple[str, ...] = ()
    if len(devices) > 1:
        parts = [shares.get(name, 0) for name in devices]
        if not all(part > 0 for part in parts):
            parts = [1] * len(devices)
        args = ("--tensor-split", ",".join(str(part) for part in parts))
    indexes = [gpu_indexes.get(name) for name in devices]
    env: dict[str, str] = {}
    pinnable = bool(devices) and all(index is not None for index in indexes)
    if pinnable and (len(devices) > 1 or gpus_on_box > 1):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in indexes)
    return Launch(args, env)


def device_groups(
    devices: Sequence[str], placements: Iterable[Sequence[str]]
) -> list[tuple[str, ...]]:
    """The devices joined by models that span them (each placement is one model's
    devices): every device in exactly one group, each group in `devices`' order, the
    groups in the order of their first device."""
    group_of = {name: {name} for name in devices}
    for placement in placements:
        joined = set().union(*(group_of[name] for name in placement if name in group_of))
        for name in joined:
            group_of[name] = joined
    groups: list[tuple[str, ...]] = []
    for name in devices:
        group = tuple(d for d in devices if d in group_of[name])
        if group not in groups:
            groups.append(group)
    return groups
