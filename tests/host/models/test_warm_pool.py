"""The warm pool: page-cache residency, eviction, prediction, and the daemon keeping the
next model's file warm."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from host.models.warm_pool import Outlook, WarmPool, evict, predict_next, prefetch, residency
from host.paths import resolve_gguf
from tests.conftest import Daemon, start_daemon, wait_for_models

DEMO_ARGS = '["--ctx-size", "8192", "--parallel", "2", "--no-warmup"]'


def settled_copy(source: Path, target: Path) -> Path:
    """A copy whose pages are clean (written back), so DONTNEED may drop them."""
    shutil.copyfile(source, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return target


def demo_copy(tmp_path: Path, name: str = "model.gguf") -> Path:
    return settled_copy(resolve_gguf("demo:smollm2", "test"), tmp_path / name)


def blob(path: Path, mib: int) -> Path:
    path.write_bytes(os.urandom(mib << 20))
    return settled_copy(path, path.with_suffix(".settled"))


# -- primitives ----------------------------------------------------------------------------


def test_an_evicted_file_is_resident_again_after_a_prefetch(tmp_path: Path) -> None:
    path = demo_copy(tmp_path)
    evict(path)
    after_evict = residency(path)
    # ext4 and xfs drop clean pages on DONTNEED; tmpfs and some overlays keep them.
    assert after_evict < 0.5, f"DONTNEED did not evict on this file system ({after_evict:.0%})"
    read = prefetch(path)
    assert read == path.stat().st_size
    assert residency(path) >= 0.95


def test_residency_of_a_partly_read_file(tmp_path: Path) -> None:
    path = blob(tmp_path / "blob", 8)
    evict(path)
    with path.open("rb") as file:
        file.read(4 << 20)
    # readahead may pull in a little more than was read, never less
    assert 0.45 <= residency(path) <= 1.0


def test_a_prefetch_stops_when_asked(tmp_path: Path) -> None:
    import threading

    stop = threading.Event()
    stop.set()
    assert prefetch(blob(tmp_path / "blob", 2), stop) == 0


# -- prediction (pure) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queued", "history", "residents", "expected"),
    [
        (["b", "c"], ["a"], {"a"}, ["b", "c"]),  # the queue says it for sure
        (["a"], ["a"], {"a"}, []),  # a resident is never prefetched
        ([], ["a", "b", "a"], {"a"}, ["b"]),  # what followed the current model last time
        ([], ["a", "b", "c", "a"], {"a"}, ["b", "c"]),
        ([], ["a", "b"], {"b"}, ["a"]),  # no earlier cycle: the most recent other model
        ([], [], set(), []),
        (["c"], ["a", "b", "a"], {"a"}, ["c", "b"]),
    ],
)
def test_predict_next(
    queued: list[str], history: list[str], residents: set[str], expected: list[str]
) -> None:
    assert predict_next(queued, history, residents) == expected


# -- the pool --------------------------------------------------------------------------------


async def test_the_pool_warms_the_predicted_file_and_evicts_lru_over_budget(
    tmp_path: Path,
) -> None:
    files = {name: blob(tmp_path / name, 4) for name in ("a", "b", "c")}
    for path in files.values():
        evict(path)
    outlook = Outlook(queued=[], residents=set())
    pool = WarmPool(files, budget_mb=9, outlook=lambda: outlook)

    outlook = Outlook(queued=["a"], residents=set())
    assert await pool.step() == "a"
    assert residency(files["a"]) >= 0.95
    outlook = Outlook(queued=["b"], residents=set())
    assert await pool.step() == "b"
    assert residency(files["a"]) >= 0.95 and residency(files["b"]) >= 0.95
    outlook = Outlook(queued=["c"], residents=set())
    assert await pool.step() == "c"  # 12 MiB > 9: a, the least recently wanted, goes
    assert pool.warm_files() == [files["b"], files["c"]]
    assert residency(files["a"]) < 0.5 and residency(files["c"]) >= 0.95
    assert pool.evicted == {"a": 1} and pool.prefetched == {"a": 1, "b": 1, "c": 1}
    await pool.close()


async def test_a_resident_models_file_is_never_evicted(tmp_path: Path) -> None:
    files = {name: blob(tmp_path / name, 4) for name in ("a", "b")}
    outlook = Outlook(queued=["a"], residents=set())
    pool = WarmPool(files, budget_mb=5, outlook=lambda: outlook)
    assert await pool.step() == "a"
    outlook = Outlook(queued=["b"], residents={"a"})
    assert await pool.step() == "b"
    assert pool.evicted == {}  # a is loaded: over budget rather than pull its file away
    await pool.close()


async def test_a_file_larger_than_the_budget_is_left_alone(tmp_path: Path) -> None:
    files = {"big": blob(tmp_path / "big", 3)}
    pool = WarmPool(files, budget_mb=2, outlook=lambda: Outlook(["big"], set()))
    assert await pool.step() is None
    assert pool.prefetched == {}


# -- in the daemon -----------------------------------------------------------------------------


@pytest.mark.real
def test_the_daemon_keeps_the_model_it_swapped_out_warm(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    """architect → builder: the pool predicts architect back (the recent tier sequence),
    and re-reads its file into the page cache after it is dropped."""
    files = {name: demo_copy(tmp_path, f"{name}.gguf") for name in ("architect", "builder")}
    models = "".join(
        f'[models.{name}-live]\ngguf = "{path}"\ndevice = "gpu0"\nargs = {DEMO_ARGS}\n'
        f'start_timeout_s = 60\n[tiers.{name}]\nmodels = ["{name}-live"]\n'
        for name, path in files.items()
    )
    config = (
        '[host]\nwarm_pool_mb = 1024\n[devices.gpu0]\nkind = "gpu"\nmemory_mb = 400\n'
        + models
        + "[routing]\n[standing_rules]\n"
    )
    daemon = start_daemon(tmp_path, config)
    daemon_factory.append(daemon)
    with daemon.client() as http:
        for model in ("architect-live", "builder-live"):
            response = http.post(
                "/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 2}
            )
            assert response.status_code == 200, response.text
    wait_for_models(daemon, {"architect-live"}, "stopped")
    evict(files["architect"])
    deadline = time.monotonic() + 30
    warm, logged = None, False
    while time.monotonic() < deadline:
        warm = model_entry(daemon, "architect-live")["warm"]
        logged = "warm pool: prefetched architect-live" in daemon.log()
        if logged and warm is not None and warm >= 0.95:
            break
        time.sleep(0.1)
    assert warm is not None and warm >= 0.95, f"architect's file not warm again: {warm}"
    assert logged, "the warm pool did not log its prefetch"
    assert isinstance(model_entry(daemon, "builder-live")["warm"], float)


def model_entry(daemon: Daemon, name: str) -> dict:  # type: ignore[type-arg]
    return next(m for m in daemon.status()["models"] if m["name"] == name)
