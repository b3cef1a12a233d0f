"""Config parsing: the demo loads, and every mistake names its key in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.config import CommandModel, ConfigError, ManagedModel, load_config, parse_config

BASE = """
[devices.gpu0]
memory_mb = 1000
[models.m1]
gguf = "/models/a.gguf"
device = "gpu0"
memory_mb = 500
[tiers.architect]
models = ["m1"]
[tiers.builder]
models = ["m1"]
[tiers.operator]
models = ["m1"]
"""


def test_the_demo_config_serves_four_models_on_a_budget_that_holds_one_big_one() -> None:
    config = load_config()
    managed = config.managed()
    assert set(managed) == {"architect-demo", "builder-demo", "operator-demo", "validator-demo"}
    budget = config.devices["gpu0"].memory_mb
    assert budget is not None
    architect, builder = managed["architect-demo"], managed["builder-demo"]
    assert architect.memory_mb <= budget and builder.memory_mb <= budget
    assert architect.memory_mb + builder.memory_mb > budget
    assert managed["operator-demo"].persistent and managed["validator-demo"].persistent
    assert managed["validator-demo"].device == "cpu"
    assert config.routing["infra"] == "operator"
    assert config.standing_rules == {"infra": "operator"}


def test_a_minimal_config_fills_in_defaults() -> None:
    config = parse_config(BASE)
    model = config.models["m1"]
    assert isinstance(model, ManagedModel)
    assert config.host.port == 8788 and config.host.host == "127.0.0.1"
    assert config.routing["planning"] == "architect"


def test_a_remote_model_needs_an_http_url() -> None:
    config = parse_config(
        BASE + '[models.far]\nkind = "remote"\nbase_url = "http://box:8080/v1/"\n'
    )
    assert config.models["far"].kind == "remote"
    with pytest.raises(ConfigError, match=r"models\.far\.base_url: must start with"):
        parse_config(BASE + '[models.far]\nkind = "remote"\nbase_url = "box:8080"\n')


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("[host]\nprot = 1\n", r"host\.prot: unknown key"),
        ("[host]\nport = 'x'\n", r"host\.port: Input should be a valid integer"),
        (
            '[models.m2]\ngguf = "x"\ndevice = "gpu9"\nmemory_mb = 1\n',
            r"models\.m2\.device: unknown device 'gpu9' \(known: gpu0\)",
        ),
        (
            '[models.m2]\ngguf = "x"\ndevice = "gpu0"\nmemory_mb = 5000\n',
            r"models\.m2\.memory_mb: 5000 MiB can never fit device gpu0 \(1000 MiB budget\)",
        ),
        (
            '[models.m2]\ngguf = "x"\ndevice = "gpu0"\nmemory_mb = 0\n',
            r"models\.m2\.memory_mb: Input should be greater than 0",
        ),
        (
            '[models.m2]\ngguf = "x"\ndevice = "gpu0"\nmemory_mb = 1\nargs = ["--port", "1"]\n',
            r"args: --port is set by Tierhost",
        ),
        ('[tiers.extra]\nmodels = ["nope"]\n', r"tiers\.extra\.models: unknown model 'nope'"),
        ('[routing]\nplanning = "wizard"\n', r"routing\.planning: unknown tier 'wizard'"),
        ('[models.auto]\ngguf = "x"\ndevice = "gpu0"\nmemory_mb = 1\n', r"models\.auto: the name"),
        ('[rules]\npoetry = ["sonnet"]\n', r"rules\.poetry: unknown task type"),
        (
            '[devices.box]\nkind = "cpu"\nauto_yield = true\n',
            r"devices\.box: auto_yield: only a GPU device yields to games",
        ),
        (
            '[models.m2]\ngguf = "x"\ndevice = "gpu0"\nmemory_mb = 1\npersistent = true\n'
            "idle_unload_s = 60\n",
            r"models\.m2: idle_unload_s: a persistent model is never unloaded",
        ),
        ('[rules]\ninfra = ["x"]\n', r"rules\.infra\.0: String should have at least 2 characters"),
        ("[devices.gpu0\n", r"not valid TOML"),
    ],
)
def test_mistakes_are_one_line_naming_the_key(change: str, expected: str) -> None:
    text = change if change.startswith("[devices.gpu0\n") else BASE + change
    with pytest.raises(ConfigError, match=expected) as caught:
        parse_config(text, "t.toml")
    message = str(caught.value)
    assert message.startswith("config error in t.toml")
    assert "\n" not in message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


TWO_GPUS = """
[devices.gpu0]
memory_mb = 1000
[devices.gpu1]
memory_mb = 1000
"""


def test_a_one_device_model_is_normalised_to_a_one_entry_placement() -> None:
    model = parse_config(BASE).managed()["m1"]
    assert model.device == "gpu0"
    assert model.devices == ("gpu0",)
    assert model.memory_mb == 500
    assert model.memory_by_device == {"gpu0": 500}


def test_devices_are_sorted_and_memory_splits_evenly_with_the_remainder_first() -> None:
    model = ManagedModel.model_validate(
        {"gguf": "x", "devices": ["gpu1", "gpu0"], "memory_mb": 1001}
    )
    assert model.devices == ("gpu0", "gpu1")
    assert model.device == "gpu0"
    assert model.memory_by_device == {"gpu0": 501, "gpu1": 500}


def test_a_memory_table_gives_each_device_its_share_and_the_total() -> None:
    model = ManagedModel.model_validate(
        {"gguf": "x", "devices": ["gpu0", "gpu1"], "memory_mb": {"gpu1": 300, "gpu0": 700}}
    )
    assert model.memory_mb == 1000
    assert model.memory_by_device == {"gpu0": 700, "gpu1": 300}


def test_an_estimated_model_has_no_shares_yet() -> None:
    model = ManagedModel.model_validate({"gguf": "x", "devices": ["gpu0", "gpu1"]})
    assert model.memory_mb is None
    assert model.memory_by_device == {}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            'device = "gpu0"\ndevices = ["gpu0"]\nmemory_mb = 1\n',
            r"models\.m2: devices: give either device or devices, not both",
        ),
        ("devices = []\nmemory_mb = 1\n", r"models\.m2: devices: a non-empty list"),
        (
            'devices = ["gpu0", "gpu0"]\nmemory_mb = 1\n',
            r"models\.m2: devices: gpu0 listed more than once",
        ),
        (
            'devices = ["gpu0", "gpu1"]\nmemory_mb = {gpu0 = 1, gpu2 = 1}\n',
            r"models\.m2: memory_mb: the table's devices \(gpu0, gpu2\) must be exactly "
            r"the model's \(gpu0, gpu1\)",
        ),
        (
            'devices = ["gpu0", "gpu1"]\nmemory_mb = {gpu0 = 1, gpu1 = 0}\n',
            r"models\.m2: memory_mb\.gpu1: a whole number of MiB greater than 0",
        ),
        (
            'devices = ["gpu0", "gpu9"]\nmemory_mb = 2\n',
            r"models\.m2\.devices: unknown device 'gpu9' \(known: gpu0, gpu1\)",
        ),
        (
            'devices = ["gpu0", "gpu1"]\nmemory_mb = {gpu0 = 1, gpu1 = 1500}\n',
            r"models\.m2\.memory_mb: 1500 MiB \(its share on gpu1\) can never fit "
            r"device gpu1 \(1000 MiB budget\)",
        ),
        (
            'devices = ["gpu0", "gpu1"]\n',
            r"models\.m2\.memory_mb: a model on several devices needs memory_mb, one number",
        ),
        ('device = "gpu0"\nmemory_table = {gpu0 = 1}\n', r"models\.m2: memory_table: unknown"),
    ],
)
def test_placement_mistakes_are_one_line_naming_the_key(model: str, expected: str) -> None:
    text = BASE.replace("[devices.gpu0]\nmemory_mb = 1000\n", TWO_GPUS)
    with pytest.raises(ConfigError, match=expected) as caught:
        parse_config(text + '[models.m2]\ngguf = "x"\n' + model, "t.toml")
    assert "\n" not in str(caught.value)


def test_a_model_on_two_cards_with_its_memory_is_accepted() -> None:
    text = BASE.replace("[devices.gpu0]\nmemory_mb = 1000\n", TWO_GPUS)
    config = parse_config(
        text + '[models.m2]\ngguf = "x"\ndevices = ["gpu1", "gpu0"]\nmemory_mb = 1600\n'
    )
    assert config.managed()["m2"].memory_by_device == {"gpu0": 800, "gpu1": 800}


# -- command models ------------------------------------------------------------------

COMMAND = '[models.tts]\nkind = "command"\ndevice = "gpu0"\n'


def test_a_command_model_keeps_its_argv_health_path_env_and_placement() -> None:
    config = parse_config(
        BASE
        + COMMAND
        + 'command = ["tts-server", "--port", "{port}", "--host", "{host}"]\n'
        + 'memory_mb = 300\nhealth_path = "/ready"\nstop_timeout_s = 3\n'
        + 'env = { VOICES = "/srv/voices" }\n'
    )
    model = config.models["tts"]
    assert isinstance(model, CommandModel)
    assert model.command == ["tts-server", "--port", "{port}", "--host", "{host}"]
    assert model.health_path == "/ready"
    assert model.env == {"VOICES": "/srv/voices"}
    assert model.stop_timeout_s == 3
    assert model.devices == ("gpu0",)
    assert model.memory_by_device == {"gpu0": 300}
    assert set(config.local()) == {"m1", "tts"}
    assert set(config.managed()) == {"m1"}


def test_a_command_models_defaults_are_llama_servers() -> None:
    model = parse_config(BASE + COMMAND + 'command = ["srv", "{port}"]\nmemory_mb = 1\n').models[
        "tts"
    ]
    assert isinstance(model, CommandModel)
    assert model.health_path == "/health"
    assert model.env == {}
    assert model.stop_timeout_s is None  # host.stop_grace_s
    assert not model.persistent and model.port is None and model.max_concurrency == 32


def test_a_command_model_with_a_fixed_port_needs_no_placeholder() -> None:
    config = parse_config(BASE + COMMAND + 'command = ["srv"]\nport = 9100\nmemory_mb = 1\n')
    assert config.models["tts"].kind == "command"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            'command = "tts-server --port {port}"\nmemory_mb = 1\n',
            r"models\.tts\.command: must be a list of strings .*never run through a shell",
        ),
        ("command = []\nmemory_mb = 1\n", r"models\.tts\.command: must not be empty"),
        ('command = ["", "{port}"]\nmemory_mb = 1\n', r"models\.tts\.command: the first element"),
        ('command = ["srv", 8080]\nmemory_mb = 1\n', r"models\.tts\.command\.1: Input should be"),
        ('command = ["srv", "{port}"]\n', r"models\.tts\.memory_mb: required key is missing"),
        (
            'command = ["srv", "{port}"]\nmemory_mb = 0\n',
            r"models\.tts\.memory_mb: Input should be greater than 0",
        ),
        (
            'command = ["srv", "{port}"]\nmemory_mb = 5000\n',
            r"models\.tts\.memory_mb: 5000 MiB can never fit device gpu0 \(1000 MiB budget\)",
        ),
        (
            'command = ["srv", "{port}"]\nmemory_mb = 1\nhealth_path = "health"\n',
            r"models\.tts\.health_path: must start with /",
        ),
        ('command = ["srv"]\nmemory_mb = 1\n', r"models\.tts: command: no \{port\} in it"),
        (
            'command = ["srv", "{port}"]\nmemory_mb = 1\nenv = { N = 1 }\n',
            r"models\.tts\.env\.N: Input should be a valid string",
        ),
        (
            'command = ["srv", "{port}"]\nmemory_mb = 1\ngguf = "x"\n',
            r"models\.tts\.gguf: unknown key",
        ),
        (
            'command = ["srv", "{port}"]\nmemory_mb = 1\npersistent = true\nidle_unload_s = 5\n',
            r"models\.tts: idle_unload_s: a persistent model is never unloaded",
        ),
    ],
)
def test_command_model_mistakes_are_one_line_naming_the_key(keys: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        parse_config(BASE + COMMAND + keys, "t.toml")
    assert "\n" not in str(caught.value)


def test_a_command_model_may_be_the_validator_when_it_never_forces_a_swap() -> None:
    text = (
        BASE
        + '[devices.cpu]\nkind = "cpu"\n'
        + '[models.judge]\nkind = "command"\ndevice = "cpu"\nmemory_mb = 1\n'
        + 'command = ["judge", "{port}"]\n[validation]\nmodel = "judge"\n'
    )
    assert parse_config(text).validator_model() == "judge"
