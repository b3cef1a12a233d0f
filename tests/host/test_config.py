"""Config parsing: the demo loads, and every mistake names its key in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.config import ConfigError, ManagedModel, load_config, parse_config

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
