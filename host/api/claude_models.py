"""Claude model ids, as Anthropic's clients send them, onto this host's tiers. Pure.

Claude Code and its peers name Claude models (`claude-opus-4-1`, `claude-sonnet-4-5`,
`claude-3-5-haiku-20241022`); they cannot be told to send `architect`. So an id is
mapped by its family, a word it contains (`opus` → architect, `sonnet` → builder, `haiku`
→ operator by default, `[anthropic] families` in the config), and `claude-tierhost-TIER`
names a tier outright (the ids `GET /v1/models` lists for gateway discovery, which shows
only ids that start with `claude`). A tier, a model, `auto` and `big` mean what they mean
on `/v1/chat/completions`.

A request that asks for extended `thinking` is planning work: it goes to the thinking
tier (architect by default) unless its model names a tier or a model itself, which is a
choice the client made on purpose.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

TIER_ID_PREFIX = "claude-tierhost-"
"""`claude-tierhost-architect` names tier architect."""


def tier_id(tier: str) -> str:
    """The Claude-style id that names `tier` (listed by `GET /v1/models`)."""
    return TIER_ID_PREFIX + tier


@dataclass(frozen=True)
class Resolved:
    """What a Messages request's `model` is routed as, and why."""

    name: str
    """A tier, a model, `auto` or `big`: a name the chat path routes."""
    why: str
    """For logs and tests: "tier named", "family opus", "thinking"…"""


def resolve(
    requested: str,
    *,
    thinking: bool,
    families: Mapping[str, str],
    thinking_tier: str,
    tiers: Collection[str],
    models: Collection[str],
) -> Resolved | None:
    """The name to route `requested` by, or None when it is no name this host knows.

    Order: an exact tier or model name; `claude-tierhost-TIER`; then, for `auto` and for
    Claude ids, `thinking` sends the request to `thinking_tier`; else a Claude id goes by
    the first family (in the config's order) whose word it contains, case aside. `big`
    stays `big`: it is the client's explicit ask for the biggest model."""
    if requested in tiers or requested in models:
        return Resolved(requested, "named")
    lowered = requested.lower()
    if lowered.startswith(TIER_ID_PREFIX):
        tier = requested[len(TIER_ID_PREFIX) :]
        return Resolved(tier, "tier id") if tier in tiers else None
    if requested == "big":
        return Resolved("big", "named")
    family = next((word for word in families if word.lower() in lowered), None)
    if requested != "auto" and family is None and not lowered.startswith("claude"):
        return None
    if thinking:
        return Resolved(thinking_tier, "thinking")
    if requested == "auto":
        return Resolved("auto", "named")
    if family is None:
        return None
    return Resolved(families[family], f"family {family}")


def wants_thinking(thinking: object) -> bool:
    """Whether a body's `thinking` asks for it: `{"type": "enabled", ...}` (or any
    object but `{"type": "disabled"}`)."""
    return isinstance(thinking, dict) and thinking.get("type") != "disabled"
