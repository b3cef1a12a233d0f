"""The scheduler is pure: every rule is checked with plain values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from host.core.scheduler import (
    Admit,
    Evict,
    Load,
    Reject,
    Release,
    Resident,
    Snapshot,
    Unload,
    Waiter,
    next_unload_at,
    plan,
    used_mb,
)


def ready(
    name: str,
    mb: int = 300,
    *,
    in_flight: int = 0,
    last_used: float = 0.0,
    persistent: bool = False,
) -> Resident:
    return Resident(name, mb, "ready", in_flight, last_used, persistent)


def test_nothing_waiting_means_nothing_to_do() -> None:
    assert plan(Snapshot(400, [ready("a")], [])) == []


def test_waiters_for_a_ready_model_are_admitted_together() -> None:
    actions = plan(Snapshot(400, [ready("a")], [Waiter(1, "a", 300), Waiter(2, "a", 300)]))
    assert actions == [Admit((1, 2))]


def test_a_model_that_fits_is_loaded_and_its_waiters_join_one_load() -> None:
    actions = plan(Snapshot(400, [], [Waiter(1, "a", 300), Waiter(2, "a", 300)]))
    assert actions == [Load("a")]


def test_waiters_join_a_load_under_way() -> None:
    starting = Resident("a", 300, "starting")
    assert plan(Snapshot(400, [starting], [Waiter(1, "a", 300)])) == []


def test_idle_resident_is_evicted_for_a_model_that_does_not_fit() -> None:
    actions = plan(Snapshot(400, [ready("a")], [Waiter(1, "b", 300)]))
    assert actions == [Evict("a", for_model="b")]


def test_a_resident_with_requests_in_flight_is_never_evicted() -> None:
    actions = plan(Snapshot(400, [ready("a", in_flight=2)], [Waiter(1, "b", 300)]))
    assert actions == []


def test_memory_counts_until_the_stop_completes() -> None:
    stopping = Resident("a", 300, "stopping")
    assert plan(Snapshot(400, [stopping], [Waiter(1, "b", 300)])) == []
    assert plan(Snapshot(400, [], [Waiter(1, "b", 300)])) == [Load("b")]


def test_a_stop_under_way_counts_as_room_on_its_way() -> None:
    """Replanning while a swap's stop runs must not stop a second model: the stopping
    one's memory frees the room the waiter needs."""
    stopping = Resident("b", 400, "stopping")
    assert plan(Snapshot(800, [ready("a", 400), stopping], [Waiter(1, "c", 400)])) == []
    # room on its way that is not enough still evicts, and only what makes up the rest
    small = Resident("b", 200, "stopping")
    residents = [ready("a", 300, last_used=1.0), ready("d", 300, last_used=2.0), small]
    actions = plan(Snapshot(800, residents, [Waiter(1, "c", 400)]))
    assert actions == [Evict("a", for_model="c")]


def test_least_recently_used_idle_resident_goes_first() -> None:
    residents = [ready("old", 200, last_used=1.0), ready("new", 200, last_used=9.0)]
    actions = plan(Snapshot(400, residents, [Waiter(1, "c", 200)]))
    assert actions == [Evict("old", for_model="c")]


def test_no_eviction_unless_it_makes_enough_room() -> None:
    residents = [ready("busy", 200, in_flight=1), ready("idle", 100)]
    actions = plan(Snapshot(400, residents, [Waiter(1, "big", 300)]))
    assert actions == []  # evicting "idle" alone frees 200 of the 300 needed: wait instead


def test_persistent_residents_are_never_evicted() -> None:
    residents = [ready("validator", 100, persistent=True), ready("a", 300)]
    actions = plan(Snapshot(400, residents, [Waiter(1, "b", 300)]))
    assert actions == [Evict("a", for_model="b")]


def test_model_that_can_never_fit_beside_persistent_ones_is_rejected() -> None:
    residents = [ready("validator", 200, persistent=True)]
    actions = plan(Snapshot(400, residents, [Waiter(1, "b", 300), Waiter(2, "b", 300)]))
    assert len(actions) == 1
    reject = actions[0]
    assert isinstance(reject, Reject)
    assert reject.waiter_ids == (1, 2)
    assert "needs 300 MiB" in reject.reason


def test_a_blocked_waiter_holds_back_later_requests_for_the_resident() -> None:
    # "a" is busy; "b" waits for it. A new request for "a" must not overtake "b",
    # or a steady stream of "a" requests would starve the swap forever.
    snapshot = Snapshot(400, [ready("a", in_flight=1)], [Waiter(1, "b", 300), Waiter(2, "a", 300)])
    assert plan(snapshot) == []


def test_requests_ahead_of_the_blocked_waiter_are_still_admitted() -> None:
    snapshot = Snapshot(400, [ready("a", in_flight=1)], [Waiter(1, "a", 300), Waiter(2, "b", 300)])
    assert plan(snapshot) == [Admit((1,))]  # and "a" is not evicted: it just got work


def test_a_device_without_budget_loads_everything_at_once() -> None:
    actions = plan(Snapshot(None, [], [Waiter(1, "x", 200), Waiter(2, "y", 200)]))
    assert actions == [Load("x"), Load("y")]


def test_models_that_fit_side_by_side_load_in_parallel() -> None:
    actions = plan(Snapshot(1000, [], [Waiter(1, "x", 300), Waiter(2, "y", 300)]))
    assert actions == [Load("x"), Load("y")]


def test_a_waiter_behind_a_starting_model_is_not_blocked() -> None:
    snapshot = Snapshot(
        None,
        [Resident("x", 200, "starting"), ready("y", 200)],
        [Waiter(1, "x", 200), Waiter(2, "y", 200)],
    )
    assert plan(snapshot) == [Admit((2,))]


# -- the budget invariant, for any snapshot ----------------------------------------------

names = st.sampled_from(["a", "b", "c", "d"])
memory = {"a": 300, "b": 300, "c": 100, "d": 200}


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    budget = draw(st.sampled_from([400, 500, 700]))
    residents: list[Resident] = []
    for name in draw(st.lists(names, unique=True, max_size=4)):
        if used_mb(residents) + memory[name] > budget:
            continue  # a snapshot the shell can produce already respects the budget
        phase = draw(st.sampled_from(["starting", "ready", "stopping"]))
        residents.append(
            Resident(
                name,
                memory[name],
                phase,
                draw(st.integers(0, 2)),
                draw(st.floats(0, 10)),
                draw(st.booleans()) and name == "c",
            )
        )
    waiters = [Waiter(i, m, memory[m]) for i, m in enumerate(draw(st.lists(names, max_size=8)))]
    return Snapshot(budget, residents, waiters)


@settings(max_examples=400)
@given(snapshots())
def test_loads_never_exceed_the_budget_and_evictions_spare_busy_models(snap: Snapshot) -> None:
    actions = plan(snap)
    by_name = {r.name: r for r in snap.residents}
    evicted = {a.model for a in actions if isinstance(a, Evict)}
    for name in evicted:
        assert by_name[name].in_flight == 0 and not by_name[name].persistent
        assert by_name[name].phase == "ready"
    loads = [a.model for a in actions if isinstance(a, Load)]
    assert len(loads) == len(set(loads))
    # evictions free memory only once the stops complete, so loads must fit right now
    assert snap.budget_mb is not None
    assert used_mb(snap.residents) + sum(memory[m] for m in loads) <= snap.budget_mb
    for model in loads:
        assert model not in by_name
    admitted = {i for a in actions if isinstance(a, Admit) for i in a.waiter_ids}
    waiting_models = {w.id: w.model for w in snap.waiters}
    for waiter_id in admitted:
        assert by_name[waiting_models[waiter_id]].phase == "ready"


# -- device modes ------------------------------------------------------------------------


def test_a_model_the_mode_does_not_allow_waits_without_blocking_others() -> None:
    snapshot = Snapshot(
        400, [ready("a")], [Waiter(1, "b", 300), Waiter(2, "a", 300)], allowed=frozenset({"a"})
    )
    assert plan(snapshot) == [Admit((2,))]


def test_gaming_mode_releases_idle_residents_but_not_busy_ones() -> None:
    residents = [ready("a"), ready("v", 50, in_flight=1, persistent=True)]
    assert plan(Snapshot(400, residents, [], allowed=frozenset())) == [Release("a")]


def test_a_forced_request_loads_despite_the_mode() -> None:
    snapshot = Snapshot(400, [], [Waiter(1, "b", 300, forced=True)], allowed=frozenset())
    assert plan(snapshot) == [Load("b")]
    resident = Snapshot(400, [ready("b")], [Waiter(2, "b", 300, forced=True)], allowed=frozenset())
    assert plan(resident) == [Admit((2,))]  # and "b" is not released under it


# -- idle unload ---------------------------------------------------------------------------


def idle(name: str, last_used: float, after_s: float | None = 60.0, **kw: object) -> Resident:
    return Resident(name, 300, "ready", last_used=last_used, idle_unload_s=after_s, **kw)  # type: ignore[arg-type]


def test_a_model_idle_for_its_idle_unload_s_is_unloaded() -> None:
    snap = Snapshot(1000, [idle("a", last_used=100.0)], [], now=160.0)
    assert plan(snap) == [Unload("a", 60.0)]
    assert next_unload_at(snap) is None  # due now, not later


def test_before_it_is_due_the_plan_says_when_to_look_again() -> None:
    residents = [idle("a", 100.0), idle("b", 120.0, 10.0), idle("c", 0.0, None)]
    early = Snapshot(1000, residents, [], now=125.0)
    assert plan(early) == []
    assert next_unload_at(early) == 130.0  # b's, before a's at 160; c never
    assert plan(Snapshot(1000, residents, [], now=130.0)) == [Unload("b", 10.0)]


def test_a_model_in_use_or_wanted_is_never_unloaded_for_idleness() -> None:
    busy = Resident("a", 300, "ready", in_flight=1, last_used=0.0, idle_unload_s=1.0)
    assert plan(Snapshot(1000, [busy], [], now=100.0)) == []
    wanted = Snapshot(1000, [idle("a", 0.0, 1.0)], [Waiter(1, "a", 300)], now=100.0)
    assert plan(wanted) == [Admit((1,))]
    assert next_unload_at(wanted) is None
    starting = Resident("a", 300, "starting", last_used=0.0, idle_unload_s=1.0)
    assert plan(Snapshot(1000, [starting], [], now=100.0)) == []


def test_a_model_the_mode_releases_is_not_also_unloaded() -> None:
    snap = Snapshot(1000, [idle("a", 0.0, 1.0)], [], allowed=frozenset(), now=100.0)
    assert plan(snap) == [Release("a")]
