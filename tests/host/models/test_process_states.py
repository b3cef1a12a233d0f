"""The state table of `ModelProcess` as a pure machine, and `_enter()` holding to it.

The expected moves are written out here again, not read from `LEGAL_MOVES`, so a change
to the table has to be made twice: once where the code needs it, once here on purpose.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from host.models.process import (
    LEGAL_MOVES,
    RESIDENT_STATES,
    IllegalTransition,
    LaunchSpec,
    ModelProcess,
    ModelState,
    Transition,
    check_transition,
    is_legal,
)

STOPPED, STARTING, READY, STOPPING, FAILED = (
    ModelState.STOPPED,
    ModelState.STARTING,
    ModelState.READY,
    ModelState.STOPPING,
    ModelState.FAILED,
)
SLEEPING, ASLEEP, WAKING = ModelState.SLEEPING, ModelState.ASLEEP, ModelState.WAKING

EXPECTED_MOVES = {
    (STOPPED, STARTING),
    (STARTING, READY),
    (STARTING, FAILED),
    (STARTING, STOPPED),
    (STARTING, STOPPING),
    (READY, STOPPING),
    (READY, FAILED),
    (STOPPING, STOPPED),
    (FAILED, STARTING),
    (FAILED, STOPPED),
    (READY, SLEEPING),
    (SLEEPING, ASLEEP),
    (SLEEPING, STOPPING),
    (ASLEEP, WAKING),
    (ASLEEP, STOPPING),
    (ASLEEP, FAILED),
    (WAKING, READY),
    (WAKING, STOPPING),
}
ALL_PAIRS = list(itertools.product(ModelState, repeat=2))


def reachable_from(start: ModelState) -> set[ModelState]:
    """Every state some sequence of legal moves leads to from `start` (itself included)."""
    seen = {start}
    frontier = [start]
    while frontier:
        for new in LEGAL_MOVES[frontier.pop()]:
            if new not in seen:
                seen.add(new)
                frontier.append(new)
    return seen


# -- the table as a pure machine -------------------------------------------------------


def test_the_table_has_a_row_for_every_state_and_names_only_states() -> None:
    assert set(LEGAL_MOVES) == set(ModelState)
    for targets in LEGAL_MOVES.values():
        assert targets <= set(ModelState)


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{o}->{n}" for o, n in ALL_PAIRS])
def test_a_move_is_accepted_exactly_when_it_is_one_of_the_expected_moves(
    old: ModelState, new: ModelState
) -> None:
    if (old, new) in EXPECTED_MOVES:
        assert is_legal(old, new)
        check_transition("m", old, new, "because")
        return
    assert not is_legal(old, new)
    with pytest.raises(IllegalTransition) as caught:
        check_transition("m", old, new, "because")
    illegal = caught.value
    assert (illegal.model, illegal.old, illegal.new, illegal.reason) == ("m", old, new, "because")
    assert str(illegal) == f"model m: illegal move {old} -> {new} (because)"


def test_no_state_moves_to_itself() -> None:
    """A second failure is not a move: listeners would count it as a new one."""
    assert not any(is_legal(state, state) for state in ModelState)


def test_every_state_is_reachable_from_stopped() -> None:
    assert reachable_from(STOPPED) == set(ModelState)
    assert READY in reachable_from(STOPPED)


def test_every_state_leads_back_to_stopped() -> None:
    """No state is a dead end: whatever happened, a model can be stopped again."""
    for state in ModelState:
        assert STOPPED in reachable_from(state), state


def test_only_a_start_or_a_wake_leads_to_ready() -> None:
    """A server is called ready only after its own start or wake saw /health answer."""
    assert {old for old in ModelState if is_legal(old, READY)} == {STARTING, WAKING}
    assert LEGAL_MOVES[READY] == {STOPPING, FAILED, SLEEPING}


async def test_only_a_sleep_leads_to_asleep_and_a_sleeper_holds_its_asleep_memory(
    process: ModelProcess,
) -> None:
    assert {old for old in ModelState if is_legal(old, ASLEEP)} == {SLEEPING}
    for state in (STARTING, READY, SLEEPING, ASLEEP):
        process._enter(state, "because")
    assert process.holds_asleep and process.asleep_since is not None
    process._enter(STOPPING, "RAM for sleepers is full")
    assert process.holds_asleep  # stopping from asleep frees only what it held asleep
    process._enter(STOPPED, "gone")
    assert not process.holds_asleep and process.asleep_since is None


def test_a_model_with_no_process_moves_only_by_starting_or_by_being_stopped() -> None:
    for state in set(ModelState) - RESIDENT_STATES:
        assert LEGAL_MOVES[state] <= {STARTING, STOPPED}, state


# -- _enter() holds to the table -------------------------------------------------------


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[ModelProcess]:
    """A process that is never spawned: only its state machine is driven."""
    spec = LaunchSpec(
        name="m",
        binary=tmp_path / "llama-server",
        gguf=tmp_path / "m.gguf",
        args=[],
        log_path=tmp_path / "m.log",
        pid_path=tmp_path / "m.pid",
    )
    made = ModelProcess(spec)
    try:
        yield made
    finally:
        await made.http.aclose()


async def test_an_illegal_move_raises_and_changes_nothing(process: ModelProcess) -> None:
    heard: list[Transition] = []
    process.subscribe(heard.append)

    with pytest.raises(IllegalTransition, match=r"^model m: illegal move stopped -> ready"):
        process._enter(READY, "healthy")

    assert process.state is STOPPED
    assert process.ready_since is None
    assert heard == []


async def test_a_legal_move_is_made_and_reported(process: ModelProcess) -> None:
    heard: list[Transition] = []
    process.subscribe(heard.append)

    process._enter(STARTING, "start requested")

    assert process.state is STARTING
    assert [(t.model, t.old, t.new, t.reason) for t in heard] == [
        ("m", STOPPED, STARTING, "start requested")
    ]


async def test_a_second_failure_is_refused_before_it_counts(process: ModelProcess) -> None:
    process._enter(STARTING, "start requested")
    process._fail("first")
    assert (process.state, process.consecutive_failures, process.last_error) == (
        FAILED,
        1,
        "first",
    )

    with pytest.raises(IllegalTransition, match="failed -> failed"):
        process._fail("second")

    assert (process.state, process.consecutive_failures, process.last_error) == (
        FAILED,
        1,
        "first",
    )


async def test_a_refused_move_is_logged_as_an_error_and_leaves_the_state(
    process: ModelProcess, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tierhost.supervisor"):
        assert not process._enter_or_refuse(STOPPING, "start cancelled")

    assert process.state is STOPPED
    assert [r.getMessage() for r in caplog.records] == [
        "model m: illegal move stopped -> stopping (start cancelled); move refused"
    ]
    process._enter(STARTING, "start requested")
    assert process._enter_or_refuse(STOPPED, "start cancelled")
    assert process.state is STOPPED
