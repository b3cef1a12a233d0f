"""The warm pool: keep the GGUF of the model likely needed next in the page cache.

Loading a model whose file is cold reads it from disk first: for a 20 GB file on a
SATA SSD that is most of a swap. While the device is busy with one model, the next
one (predicted from the waiting queue, else from the recent sequence of loads) is
read into the page cache in the background, so its load reads from RAM. The pool
keeps the files it warmed within a RAM budget and drops the least recently used
ones (`POSIX_FADV_DONTNEED`) when over it. Residency is measured, not assumed:
`mincore` over a mapping of the file says which pages the kernel holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import mmap
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from host.models.arbiter import DeviceArbiter
from host.models.process import ModelState, Transition

log = logging.getLogger("tierhost.warm_pool")

PAGE = os.sysconf("SC_PAGE_SIZE")
_WINDOW = 1 << 30
"""mincore works on one mapped window at a time, so huge files never need one huge map."""
_READ_CHUNK = 8 << 20
RESIDENCY_TTL_S = 1.0
"""/api/status and /metrics reuse a residency reading this long."""
WARM_ENOUGH = 0.98
"""A file this resident is not read again."""
TICK_S = 1.0
"""The pool also looks at the queue this often: a request that waits changes no state."""


# -- page cache primitives (Linux) ---------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
_MAP_FAILED = ctypes.c_void_p(-1).value


def residency(path: Path) -> float:
    """The fraction (0..1) of the file's pages in the page cache, from `mincore`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 1.0
        resident = total = 0
        for offset in range(0, size, _WINDOW):
            length = min(_WINDOW, size - offset)
            pages = (length + PAGE - 1) // PAGE
            address = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
            if address is None or address == _MAP_FAILED:
                raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
            try:
                vector = (ctypes.c_ubyte * pages)()
                if _libc.mincore(address, length, vector) != 0:
                    raise OSError(ctypes.get_errno(), f"mincore of {path} failed")
                resident += sum(1 for byte in bytes(vector) if byte & 1)
                total += pages
            finally:
                _libc.munmap(address, length)
        return resident / total
    finally:
        os.close(fd)


def evict(path: Path) -> None:
    """Ask the kernel to drop the file's clean pages (pages mapped by a process stay)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def prefetch(path: Path, stop: threading.Event | None = None) -> int:
    """Read the file into the page cache: readahead hint, then one sequential read.

    WILLNEED alone is a hint the kernel may cut short; the read makes it so. Returns
    the bytes read; stops early when `stop` is set.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        buffer = bytearray(_READ_CHUNK)
        done = 0
        while stop is None or not stop.is_set():
            n = os.readv(fd, [buffer])
            if n == 0:
                break
            done += n
        return done
    finally:
        os.close(fd)


# -- what comes next (pure) ---------------------------------------------------------------------


def predict_next(
    queued: Sequence[str], history: Sequence[str], residents: Iterable[str]
) -> list[str]:
    """Models likely to be loaded next, most likely first, residents left out.

    The waiting queue says it for sure; then the model that followed the current one
    the last time it ran (plan → implement → review cycles repeat); then the models
    used most recently.
    """
    skip = set(residents)
    order: list[str] = []

    def add(name: str) -> None:
        if name not in skip and name not in order:
            order.append(name)

    for name in queued:
        add(name)
    if history:
        current = history[-1]
        for i in range(len(history) - 2, -1, -1):
            if history[i] == current:
                add(history[i + 1])
                break
    for name in reversed(history):
        add(name)
    return order


# -- the pool -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outlook:
    """What the pool needs to know at a scheduling decision."""

    queued: list[str]
    """Models with requests waiting, in queue order."""
    residents: set[str]
    """Models loaded or loading."""


class WarmPool:
    """Keeps the predicted next model's file in the page cache, within a RAM budget."""

    def __init__(
        self,
        files: dict[str, Path],
        budget_mb: int,
        outlook: Callable[[], Outlook],
        *,
        history: int = 32,
    ) -> None:
        self.files = files
        self.budget_bytes = budget_mb * 1024 * 1024
        self._outlook = outlook
        self._history: deque[str] = deque(maxlen=history)
        self._warm: OrderedDict[Path, int] = OrderedDict()
        """Files the pool warmed, least recently wanted first, with their sizes."""
        self._residency: dict[Path, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.prefetched: dict[str, int] = {}
        """Prefetches carried out per model (for metrics and tests)."""
        self.evicted: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0 and bool(self.files)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=5)

    # -- events --------------------------------------------------------------------

    def on_transition(self, transition: Transition) -> None:
        """A model starting is a scheduling decision: remember it and look ahead."""
        if transition.new is ModelState.STARTING and transition.model in self.files:
            self._history.append(transition.model)
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    # -- observation -----------------------------------------------------------------

    def residency(self, model: str) -> float | None:
        """Fraction of `model`'s file in the page cache (cached briefly); None if unknown."""
        path = self.files.get(model)
        if path is None:
            return None
        now = time.monotonic()
        cached = self._residency.get(path)
        if cached is not None and now - cached[0] < RESIDENCY_TTL_S:
            return cached[1]
        try:
            value = round(residency(path), 3)
        except OSError:
            return None
        self._residency[path] = (now, value)
        return value

    def warm_files(self) -> list[Path]:
        return list(self._warm)

    # -- the work --------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            try:
                await self.step()
            except Exception:
                log.exception("warm pool step failed")

    async def step(self) -> str | None:
        """One look ahead: warm the first predicted model's file. Returns that model."""
        outlook = self._outlook()
        for model in predict_next(outlook.queued, list(self._history), outlook.residents):
            path = self.files.get(model)
            if path is None or not path.is_file():
                continue
            size = path.stat().st_size
            if size > self.budget_bytes:
                log.debug("%s (%d MiB) is larger than the warm pool", model, size >> 20)
                continue
            pinned = {self.files[r] for r in outlook.residents if r in self.files} | {path}
            self._warm[path] = size
            self._warm.move_to_end(path)
            await asyncio.to_thread(self._shrink, pinned)
            self._residency.pop(path, None)
            if (self.residency(model) or 0.0) < WARM_ENOUGH:
                await asyncio.to_thread(prefetch, path, self._stop)
                self._residency.pop(path, None)
                self.prefetched[model] = self.prefetched.get(model, 0) + 1
                log.info("warm pool: prefetched %s (%s)", model, path)
            return model
        return None

    def _shrink(self, pinned: set[Path]) -> None:
        """Drop least recently wanted files until the pool fits its budget."""
        for path in list(self._warm):
            if sum(self._warm.values()) <= self.budget_bytes:
                return
            if path in pinned:
                continue
            del self._warm[path]
            self._residency.pop(path, None)
            try:
                evict(path)
            except OSError as exc:
                log.warning("warm pool: could not evict %s: %s", path, exc)
                continue
            for model, file in self.files.items():
                if file == path:
                    self.evicted[model] = self.evicted.get(model, 0) + 1
            log.info("warm pool: evicted %s", path)


def outlook_of(arbiters: Iterable[DeviceArbiter]) -> Outlook:
    """The waiting queues and residents of the devices, as the arbiters hold them now."""
    queued: list[str] = []
    residents: set[str] = set()
    for arbiter in arbiters:
        queued += [w.model for w in arbiter.snapshot().waiters]
        # an asleep llama-server reloads its file when woken: keep that one warm too
        residents |= {r.name for r in arbiter.residents() if r.phase in ("starting", "ready")}
    return Outlook(queued, residents)


def default_budget_mb(configured: int | None) -> int:
    """`host.warm_pool_mb`, else a quarter of the RAM available now."""
    if configured is not None:
        return configured
    import psutil

    return int(psutil.virtual_memory().available // 4 // (1024 * 1024))
