"""The pure placement rules: tensor split by shares, cards pinned by NVML index."""

from __future__ import annotations

import pytest

from host.core.placement import Launch, device_groups, launch_for


@pytest.mark.parametrize(
    ("devices", "shares", "indexes", "gpus", "expected"),
    [
        # one card on a one-GPU box: nothing to pin, nothing to split
        (("gpu0",), {"gpu0": 500}, {"gpu0": 0}, 1, Launch()),
        # one card on a two-GPU box: pinned to its own card
        (("gpu1",), {"gpu1": 500}, {"gpu1": 1}, 2, Launch((), {"CUDA_VISIBLE_DEVICES": "1"})),
        # budget-only devices have no index: split, never pinned
        (
            ("gpu0", "gpu1"),
            {"gpu0": 700, "gpu1": 300},
            {"gpu0": None, "gpu1": None},
            0,
            Launch(("--tensor-split", "700,300")),
        ),
        # real cards: split in proportion, exactly its cards visible, same order
        (
            ("gpu0", "gpu1"),
            {"gpu0": 11000, "gpu1": 11000},
            {"gpu0": 2, "gpu1": 0},
            3,
            Launch(("--tensor-split", "11000,11000"), {"CUDA_VISIBLE_DEVICES": "2,0"}),
        ),
        # shares unknown (estimated at start): equal parts
        (
            ("gpu0", "gpu1"),
            {},
            {"gpu0": 0, "gpu1": 1},
            2,
            Launch(("--tensor-split", "1,1"), {"CUDA_VISIBLE_DEVICES": "0,1"}),
        ),
        # a CPU model is never pinned
        (("cpu",), {"cpu": 100}, {"cpu": None}, 2, Launch()),
    ],
)
def test_launch_for(
    devices: tuple[str, ...],
    shares: dict[str, int],
    indexes: dict[str, int | None],
    gpus: int,
    expected: Launch,
) -> None:
    assert launch_for(devices, shares, indexes, gpus) == expected


@pytest.mark.parametrize(
    ("placements", "groups"),
    [
        pytest.param([], [("cpu",), ("gpu0",), ("gpu1",), ("gpu2",)], id="no-spanning"),
        pytest.param(
            [("gpu0",), ("gpu0", "gpu1"), ("gpu1",)],
            [("cpu",), ("gpu0", "gpu1"), ("gpu2",)],
            id="one-dense-model",
        ),
        pytest.param(
            [("gpu0", "gpu1"), ("gpu1", "gpu2")],
            [("cpu",), ("gpu0", "gpu1", "gpu2")],
            id="chained-through-gpu1",
        ),
        pytest.param(
            [("gpu2", "gpu0")], [("cpu",), ("gpu0", "gpu2"), ("gpu1",)], id="in-device-order"
        ),
    ],
)
def test_device_groups(placements: list[tuple[str, ...]], groups: list[tuple[str, ...]]) -> None:
    assert device_groups(["cpu", "gpu0", "gpu1", "gpu2"], placements) == groups
