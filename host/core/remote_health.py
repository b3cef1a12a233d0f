"""The health of a model on another box, from its probes. Pure.

A remote model is an endpoint this host does not run: it cannot see its process, only
whether it answers. So the shell (`host.models.remote_health`) asks it every
`health_interval_s` (`GET {base_url}/models`, or its `health_url`), and this module
says what each answer means:

- any HTTP answer under 500 means the box is up and serving (a 401 or 404 still counts:
  the box answers, and what is wrong with the request is said by the request's own error;
  the probe records it as the last error);
- a 5xx (a server still loading its model answers 503), a refused or reset connection, or
  no answer within `health_timeout_s` means it cannot serve now;
- one probe decides: the routing skips an unreachable remote at once and takes it back as
  soon as it answers (a flapping box costs at most one interval of wrong guesses either
  way, while waiting for several probes would send requests to a dead box for longer).

Until its first probe a remote counts as reachable: nothing is known against it.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVER_ERROR = 500


@dataclass(frozen=True)
class Probe:
    """One probe's outcome: the HTTP status it got, or the transport error instead."""

    at: float
    """Wall-clock time of the probe (for the status document)."""
    latency_s: float
    status: int | None = None
    error: str | None = None
    """Why no answer came: "connection refused", "no answer within 2 s", …"""


@dataclass(frozen=True)
class Health:
    reachable: bool = True
    probed: bool = False
    """False until the first probe: `reachable` is then only the benefit of the doubt."""
    last_error: str | None = None
    """Why the last probe failed, or what the box said that was not a plain yes."""
    latency_s: float | None = None
    checked_at: float | None = None
    since: float | None = None
    """When it last changed between reachable and not."""
    failures: int = 0
    """Probes failed in a row."""

    def as_json(self) -> dict[str, object]:
        return {
            "reachable": self.reachable,
            "probed": self.probed,
            "last_error": self.last_error,
            "probe_ms": None if self.latency_s is None else round(self.latency_s * 1000, 1),
            "checked_at": self.checked_at,
            "reachable_since" if self.reachable else "unreachable_since": self.since,
        }


def verdict(probe: Probe) -> tuple[bool, str | None]:
    """Whether the probe found the box serving, and what to record as its last error."""
    if probe.status is None:
        return False, probe.error or "no answer"
    if probe.status >= SERVER_ERROR:
        return False, f"answered HTTP {probe.status}"
    if probe.status >= 400:
        return True, f"answers, but HTTP {probe.status} to the probe"
    return True, None


def after_probe(health: Health, probe: Probe) -> Health:
    """The health after one more probe."""
    reachable, error = verdict(probe)
    changed = not health.probed or reachable != health.reachable
    return Health(
        reachable=reachable,
        probed=True,
        last_error=error,
        latency_s=probe.latency_s,
        checked_at=probe.at,
        since=probe.at if changed else health.since,
        failures=0 if reachable else health.failures + 1,
    )


def changed_reachability(before: Health, after: Health) -> bool:
    """Whether routing should look again: the box came up or went away (a first probe
    that finds it up changes nothing routing did not already assume)."""
    return before.reachable != after.reachable


@dataclass(frozen=True)
class RemoteMode:
    """What the other box says of its GPU: gaming (take no unforced work) or not.

    Gated until read, and whenever it cannot be read: the gaming PC must never get load
    by surprise, so only an answer that says NORMAL (or a Tierhost with no GPU in gaming
    mode) lets unforced work through."""

    gaming: bool = True
    reason: str = "its mode has not been read yet"
    """Why the work is held back, naming the mode and where it came from; or what it said."""
    checked_at: float | None = None


def read_mode(
    url: str, status: int | None, document: object, error: str | None, at: float
) -> RemoteMode:
    """The mode in a mode endpoint's answer: `{"mode": "NORMAL" | "GAMING"}` (any case), or
    a Tierhost's `/api/mode` document (`{"modes": {"gpu0": "gaming", ...}}`: gaming when
    any of its GPUs is)."""
    if status is None:
        return RemoteMode(
            True, f"its mode endpoint {url} does not answer ({error}): held back as gaming", at
        )
    if status >= 400:
        return RemoteMode(
            True, f"its mode endpoint {url} answered HTTP {status}: held back as gaming", at
        )
    if isinstance(document, dict) and isinstance(document.get("mode"), str):
        mode = document["mode"].strip().lower()
        if mode == "gaming":
            return RemoteMode(True, f"its box is in gaming mode ({url})", at)
        if mode == "normal":
            return RemoteMode(False, f"its box is in normal mode ({url})", at)
        return RemoteMode(
            True,
            f"its mode endpoint {url} says {document['mode'][:40]!r}, neither NORMAL nor "
            "GAMING: held back as gaming",
            at,
        )
    if isinstance(document, dict) and isinstance(document.get("modes"), dict):
        gaming = sorted(str(d) for d, m in document["modes"].items() if str(m).lower() == "gaming")
        if gaming:
            return RemoteMode(True, f"its box has {', '.join(gaming)} in gaming mode ({url})", at)
        return RemoteMode(False, f"its box has no GPU in gaming mode ({url})", at)
    return RemoteMode(
        True,
        f"its mode endpoint {url} answered something that is not a mode document: "
        "held back as gaming",
        at,
    )
