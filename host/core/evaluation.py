"""Scoring the router on labelled prompts: type and tier accuracy, the confusion table. Pure.

The same scoring serves the suite's floor (tests/host/core/test_routing_eval.py), the
benchmark report and `tierhost routing eval FILE`, where people check the router on
their own work. A labelled example is a prompt and the type it is; the tier it should
reach is what the routing table and the standing rules give that type.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from host.core import routing


@dataclass(frozen=True)
class Example:
    prompt: str
    type: str


class BadExamples(ValueError):
    """A labelled file that cannot be scored; the message names the line."""


def read_examples(text: str, known_types: Sequence[str]) -> list[Example]:
    """JSON lines of `{"prompt": ..., "type": ...}`; blank lines are skipped."""
    examples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise BadExamples(f"line {number}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise BadExamples(f"line {number}: not an object with `prompt` and `type`")
        prompt, task_type = item.get("prompt"), item.get("type")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadExamples(f"line {number}: `prompt` must be a non-empty string")
        if task_type not in known_types:
            raise BadExamples(
                f"line {number}: `type` {task_type!r} is not one of {', '.join(known_types)}"
            )
        examples.append(Example(prompt, str(task_type)))
    if not examples:
        raise BadExamples("no examples: write one JSON object per line")
    return examples


@dataclass(frozen=True)
class Miss:
    example: Example
    got_type: str | None
    got_tier: str | None
    why: str


@dataclass
class Score:
    total: int = 0
    right_type: int = 0
    right_tier: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(expected type, inferred type) → count."""
    misses: list[Miss] = field(default_factory=list)
    off_tier: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(expected type, tier it reached) → count, for prompts that reached a wrong tier."""

    @property
    def type_accuracy(self) -> float:
        return self.right_type / self.total if self.total else 0.0

    @property
    def tier_accuracy(self) -> float:
        return self.right_tier / self.total if self.total else 0.0

    def add(
        self,
        example: Example,
        got_type: str | None,
        got_tier: str | None,
        want: str | None,
        why: str = "",
    ) -> None:
        """One routed example: what it was inferred as, the tier it reached, the tier its
        type should reach, and why it went there (kept for a miss)."""
        if got_type != example.type or got_tier is None or got_tier != want:
            self.misses.append(Miss(example, got_type, got_tier, why))
        self.total += 1
        self.confusion[(example.type, got_type or "refused")] += 1
        if got_type == example.type:
            self.right_type += 1
        if got_tier is not None and got_tier == want:
            self.right_tier += 1
        elif got_tier is not None:
            self.off_tier[(example.type, got_tier)] += 1

    def table(self, types: Sequence[str]) -> list[str]:
        """The confusion table as Markdown: rows expected, columns inferred."""
        lines = [
            "| expected ↓ / inferred → | " + " | ".join(types) + " |",
            "|---|" + "---:|" * len(types),
        ]
        for expected in types:
            cells = [str(self.confusion.get((expected, got), 0) or "·") for got in types]
            lines.append(f"| {expected} | " + " | ".join(cells) + " |")
        return lines


def type_reason(reasons: Sequence[str]) -> str:
    """The decision's reason for its type (the first, `type … inferred: …`)."""
    return next((r for r in reasons if r.startswith("type ")), "")


def expected_tier(snapshot: routing.RoutingSnapshot, task_type: str) -> str | None:
    standing = snapshot.config.standing_rules.get(task_type)
    return standing or snapshot.routes.get(task_type)


def score(examples: Sequence[Example], snapshot: routing.RoutingSnapshot) -> Score:
    result = Score()
    for example in examples:
        want_tier = expected_tier(snapshot, example.type)
        try:
            decision = routing.decide(routing.RouteRequest(prompt=example.prompt), snapshot)
        except routing.RoutingError as exc:
            result.add(example, None, None, want_tier, exc.message)
            continue
        why = type_reason(decision.reasons)
        result.add(example, decision.type or "", decision.tier, want_tier, why)
    return result
