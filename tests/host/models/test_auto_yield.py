"""The auto-yield loop against scripted NVML readings and the real controls: a game
starts, the GPU goes to gaming mode naming it; it exits, and after the grace the GPU is
back in the mode it had; the owner's own mode wins. The clock is the test's."""

from __future__ import annotations

from collections.abc import Sequence

from host.config import parse_config
from host.controls import Controls
from host.core.auto_yield import GpuProcess, ReturnTo, YieldTo
from host.models.auto_yield import AutoYield

CONFIG = parse_config(
    """
    [devices.gpu0]
    memory_mb = 24000
    auto_yield = true
    yield_above_mb = 1024
    yield_grace_s = 30
    [devices.gpu1]
    memory_mb = 24000
    index = 1
    [devices.cpu]
    kind = "cpu"
    [models.large]
    gguf = "/models/big.gguf"
    device = "gpu0"
    memory_mb = 20000
    [tiers.architect]
    models = ["large"]
    [tiers.builder]
    models = ["large"]
    [tiers.operator]
    models = ["large"]
    """,
    "yield",
)
GAME = GpuProcess(4242, "eldenring.exe", 6144)
SERVER = GpuProcess(100, "llama-server", 20000)


class Gate:
    def __init__(self) -> None:
        self.holds: list[str] = []

    def set_allowed(self, allowed: frozenset[str] | None, reason: str, device: str) -> None:
        self.holds.append(reason)


class Card:
    """Scripted NVML: what each card shows now, and the test's clock."""

    def __init__(self) -> None:
        self.processes: dict[int, list[GpuProcess] | None] = {0: [SERVER], 1: None}
        self.now = 0.0
        self.read_indexes: list[int] = []

    def read(self, index: int) -> Sequence[GpuProcess] | None:
        self.read_indexes.append(index)
        return self.processes[index]


def yielder() -> tuple[AutoYield, Controls, Card, Gate]:
    gate = Gate()
    controls = Controls(CONFIG, {"gpu0": gate, "gpu1": Gate()}, set)
    card = Card()
    return (
        AutoYield(CONFIG, controls, lambda: {100}, card.read, lambda: card.now),
        controls,
        card,
        gate,
    )


async def test_a_game_takes_the_gpu_and_leaving_gives_it_back_after_the_grace() -> None:
    auto, controls, card, gate = yielder()
    await controls.set_mode("builder", "gpu0")
    assert await auto.check("gpu0") is None  # our own server only

    card.processes[0] = [SERVER, GAME]
    action = await auto.check("gpu0")
    assert isinstance(action, YieldTo)
    assert controls.modes["gpu0"] == "gaming"
    assert gate.holds[-1] == (
        "gpu0 is in gaming mode: nothing loads onto it unless forced (force-big) "
        "(auto-yield: eldenring.exe (pid 4242) holds 6,144 MiB of gpu0)"
    )

    card.processes[0] = [SERVER]
    card.now = 100.0
    assert await auto.check("gpu0") is None  # the grace starts
    card.now = 129.0
    assert await auto.check("gpu0") is None
    card.now = 130.0
    assert await auto.check("gpu0") == ReturnTo(
        "builder", "auto-yield: no other process has held gpu0 for 30 s"
    )
    assert controls.modes["gpu0"] == "builder"


async def test_the_owners_mode_wins_over_a_yield() -> None:
    auto, controls, card, _ = yielder()
    card.processes[0] = [GAME]
    await auto.check("gpu0")
    assert controls.modes["gpu0"] == "gaming"
    await controls.set_mode("auto", "gpu0")  # `tierhost mode auto`: work beside the game
    assert await auto.check("gpu0") is None
    assert await auto.check("gpu0") is None
    assert controls.modes["gpu0"] == "auto"


async def test_only_devices_with_auto_yield_are_read_and_an_unreadable_card_is_left() -> None:
    auto, controls, card, _ = yielder()
    auto_devices = list(auto.states)
    assert auto_devices == ["gpu0"]
    card.processes[0] = None  # NVML gone away
    assert await auto.check("gpu0") is None
    assert controls.modes["gpu0"] == "auto"
    assert card.read_indexes == [0]
