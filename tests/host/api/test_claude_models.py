"""Claude model ids onto tiers (`host.api.claude_models`) and its `[anthropic]` config:
tables, no daemon."""

from __future__ import annotations

import pytest

from host.api.claude_models import resolve, tier_id, wants_thinking
from host.config import ConfigError, load_config, parse_config

FAMILIES = {"opus": "architect", "sonnet": "builder", "haiku": "operator"}
TIERS = ("architect", "builder", "operator", "validator")
MODELS = ("architect-demo", "builder-demo", "operator-demo")


def routed(requested: str, thinking: bool = False, families: dict[str, str] = FAMILIES) -> str:
    resolved = resolve(
        requested,
        thinking=thinking,
        families=families,
        thinking_tier="architect",
        tiers=TIERS,
        models=MODELS,
    )
    return "404" if resolved is None else resolved.name


@pytest.mark.parametrize(
    ("requested", "thinking", "expected"),
    [
        # Claude ids by family, whatever their version and date
        ("claude-opus-4-1", False, "architect"),
        ("claude-opus-4-1-20250805", False, "architect"),
        ("claude-sonnet-4-5", False, "builder"),
        ("claude-3-7-sonnet-latest", False, "builder"),
        ("claude-3-5-haiku-20241022", False, "operator"),
        ("claude-haiku-4-5", False, "operator"),
        ("Claude-Opus-4", False, "architect"),
        ("anthropic/claude-sonnet-4", False, "builder"),
        # a tier named outright, and the names the chat path knows
        ("claude-tierhost-builder", False, "builder"),
        ("claude-tierhost-validator", False, "validator"),
        ("builder", False, "builder"),
        ("operator-demo", False, "operator-demo"),
        ("auto", False, "auto"),
        ("big", False, "big"),
        # thinking: architect, unless the model names a tier or a model
        ("claude-sonnet-4-5", True, "architect"),
        ("claude-3-5-haiku-latest", True, "architect"),
        ("auto", True, "architect"),
        ("claude-tierhost-builder", True, "builder"),
        ("builder", True, "builder"),
        ("builder-demo", True, "builder-demo"),
        ("big", True, "big"),
        ("claude-2.1", True, "architect"),
        # unknown
        ("claude-tierhost-nope", False, "404"),
        ("claude-2.1", False, "404"),
        ("gpt-4o", False, "404"),
        ("gpt-4o", True, "404"),
        ("", False, "404"),
    ],
)
def test_a_requested_model_routes_by_the_table(
    requested: str, thinking: bool, expected: str
) -> None:
    assert routed(requested, thinking) == expected


def test_families_are_tried_in_the_configs_order() -> None:
    both = {"sonnet": "builder", "opus": "architect"}
    assert routed("claude-opus-sonnet-x", families=both) == "builder"
    assert routed("claude-opus-4", families={}) == "404"
    assert routed("my-opus-model", families=FAMILIES) == "architect"


def test_tier_ids_and_thinking() -> None:
    assert tier_id("architect") == "claude-tierhost-architect"
    assert wants_thinking({"type": "enabled", "budget_tokens": 1024})
    assert wants_thinking({"type": "adaptive"})
    assert not wants_thinking({"type": "disabled"})
    assert not wants_thinking(None)
    assert not wants_thinking("yes")


def test_the_demo_config_has_the_default_mapping() -> None:
    anthropic = load_config().anthropic
    assert anthropic.families == FAMILIES
    assert anthropic.thinking_tier == "architect"


TIERS_TOML = """
[models.a]
gguf = "demo:smollm2"
device = "cpu"
[tiers.architect]
models = ["a"]
[tiers.builder]
models = ["a"]
[tiers.operator]
models = ["a"]
[tiers.big-one]
models = ["a"]
"""


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('families = {opus = "nowhere"}', "anthropic.families.opus: unknown tier or model"),
        ('thinking_tier = "nowhere"', "anthropic.thinking_tier: unknown tier or model"),
        ('families = {" opus" = "a"}', "a family is a word"),
        ("families = []", "anthropic.families"),
        ("colour = 1", "anthropic.colour: unknown key"),
    ],
)
def test_a_wrong_anthropic_section_names_the_key(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(f"{TIERS_TOML}\n[anthropic]\n{section}\n")


def test_set_values_may_name_tiers_or_models() -> None:
    config = parse_config(
        f'{TIERS_TOML}\n[anthropic]\nfamilies = {{opus = "big-one", haiku = "a"}}\n'
        'thinking_tier = "a"\n'
    )
    assert config.anthropic.families == {"opus": "big-one", "haiku": "a"}
    assert config.anthropic.thinking_tier == "a"
    assert parse_config(TIERS_TOML).anthropic.thinking_tier == "architect"
