"""When a GPU yields to a game and when it comes back: host.core.auto_yield, pure."""

from __future__ import annotations

from host.core.auto_yield import GpuProcess, ReturnTo, YieldState, YieldTo, foreign, step

OURS = {100, 101}
GAME = GpuProcess(4242, "eldenring.exe", 6144)
SERVER = GpuProcess(100, "llama-server", 20000)
DESKTOP = GpuProcess(900, "Xorg", 300)


def read(
    state: YieldState, mode: str, *processes: GpuProcess, now: float = 0.0
) -> tuple[YieldState, object]:
    return step(
        state,
        device="gpu0",
        mode=mode,
        processes=processes,
        ours=OURS,
        above_mb=1024,
        grace_s=30.0,
        now=now,
    )


def test_only_big_processes_this_host_did_not_start_count() -> None:
    assert foreign([SERVER, DESKTOP, GAME], OURS, 1024) == [GAME]


def test_a_game_sends_the_device_to_gaming_mode_naming_it() -> None:
    state, action = read(YieldState(), "auto", SERVER, DESKTOP, GAME)
    assert action == YieldTo("auto-yield: eldenring.exe (pid 4242) holds 6,144 MiB of gpu0")
    assert (state.yielded, state.previous_mode) == (True, "auto")


def test_nothing_happens_for_the_desktop_or_our_own_servers() -> None:
    assert read(YieldState(), "auto", SERVER, DESKTOP) == (YieldState(), None)


def test_the_device_comes_back_to_its_mode_after_the_grace() -> None:
    state, _ = read(YieldState(), "builder", GAME, now=0.0)
    state, action = read(state, "gaming", GAME, now=10.0)
    assert action is None
    state, action = read(state, "gaming", now=20.0)  # the game exits
    assert action is None and state.clear_since == 20.0
    state, action = read(state, "gaming", GAME, now=30.0)  # it was a loading screen
    assert action is None and state.clear_since is None
    state, action = read(state, "gaming", now=40.0)
    state, action = read(state, "gaming", now=69.0)
    assert action is None
    state, action = read(state, "gaming", now=70.0)
    assert action == ReturnTo("builder", "auto-yield: no other process has held gpu0 for 30 s")
    assert state == YieldState()


def test_the_owners_mode_wins_and_the_game_is_not_yielded_to_again() -> None:
    state, _ = read(YieldState(), "auto", GAME)
    state, action = read(state, "auto", GAME)  # the owner: `tierhost mode auto`, game running
    assert action is None and not state.yielded and state.accepted == {4242}
    state, action = read(state, "auto", GAME)
    assert action is None  # not again for that game
    state, action = read(state, "auto")  # it exits: forgotten
    assert state.accepted == frozenset()
    _, action = read(state, "auto", GpuProcess(5000, "cyberpunk.exe", 8000))
    assert isinstance(action, YieldTo)


def test_a_device_the_owner_put_in_gaming_mode_is_left_to_them() -> None:
    state, action = read(YieldState(), "gaming", GAME)
    assert (state, action) == (YieldState(), None)


def test_two_games_name_the_biggest() -> None:
    small = GpuProcess(7, "steamwebhelper", 2000)
    _, action = read(YieldState(), "auto", small, GAME)
    assert action == YieldTo(
        "auto-yield: eldenring.exe (pid 4242) holds 6,144 MiB of gpu0 and 1 more"
    )
