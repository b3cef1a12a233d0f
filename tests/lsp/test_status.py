"""`/api/status` → the `tierhost/status` summary an editor's status bar shows."""

from __future__ import annotations

from typing import Any

import pytest

from host.wire import HostStatus
from lsp.status import summarize, unreachable

URL = "http://127.0.0.1:8788"


def device(name: str, kind: str, mode: str, residents: list[str], hold: str | None = None) -> Any:
    return {
        "name": name,
        "kind": kind,
        "mode": mode,
        "residents": residents,
        "hold": hold,
        "budget_mb": 400,
        "used_mb": 0,
        "queue": 0,
    }


MODELS = [
    {"name": "architect-demo", "tier": "architect", "device": "gpu0"},
    {"name": "builder-demo", "tier": "builder", "device": "gpu0"},
    {"name": "operator-demo", "tier": "operator", "device": "cpu"},
    {"name": "remote", "tier": "operator", "device": None},
]


@pytest.mark.parametrize(
    ("devices", "mode", "resident", "text"),
    [
        (
            [
                device("gpu0", "gpu", "auto", ["architect-demo"]),
                device("cpu", "cpu", "auto", ["x"]),
            ],
            "auto",
            "architect-demo",
            "gpu0: auto · architect-demo",
        ),
        ([device("gpu0", "gpu", "gaming", [])], "gaming", None, "gpu0: gaming · idle"),
        (
            [device("gpu0", "gpu", "builder", ["builder-demo"]), device("gpu1", "gpu", "auto", [])],
            "builder",
            "builder-demo",
            "gpu0: builder · builder-demo | gpu1: auto · idle",
        ),
        ([device("cpu", "cpu", "auto", ["operator-demo"])], None, None, "no GPU devices"),
        ([], None, None, "no GPU devices"),
    ],
)
def test_summary(devices: list[Any], mode: str | None, resident: str | None, text: str) -> None:
    summary = summarize(HostStatus.model_validate({"devices": devices, "models": MODELS}), URL)
    assert summary["reachable"] is True and summary["url"] == URL
    assert (summary["mode"], summary["resident"], summary["text"]) == (mode, resident, text)
    assert [d["name"] for d in summary["devices"]] == [d["name"] for d in devices]


def test_summary_lists_the_tiers_a_gpu_can_be_pinned_to() -> None:
    status = HostStatus.model_validate(
        {"devices": [device("gpu0", "gpu", "auto", [])], "models": MODELS}
    )
    summary = summarize(status, URL)
    assert summary["tiers"] == ["architect", "builder"]


def test_a_model_across_two_gpus_offers_its_tier_on_both() -> None:
    spanning = {"name": "big", "tier": "big", "device": "gpu0+gpu1", "devices": ["gpu0", "gpu1"]}
    devices = [device("gpu0", "gpu", "auto", []), device("gpu1", "gpu", "auto", [])]
    summary = summarize(HostStatus.model_validate({"devices": devices, "models": [spanning]}), URL)
    assert summary["tiers"] == ["big"]


def test_summary_keeps_only_what_an_editor_needs() -> None:
    status = HostStatus.model_validate(
        {"devices": [device("gpu0", "gpu", "builder", [], "pinned")], "models": []}
    )
    summary = summarize(status, URL)
    assert summary["devices"] == [
        {"name": "gpu0", "kind": "gpu", "mode": "builder", "residents": [], "hold": "pinned"}
    ]


def test_unreachable() -> None:
    summary = unreachable(URL, "connection refused")
    assert summary["reachable"] is False and summary["error"] == "connection refused"
    assert summary["text"] == f"no daemon at {URL}"


def test_a_device_that_gives_no_kind_or_mode_is_an_auto_gpu() -> None:
    status = HostStatus.model_validate({"devices": [{"name": "gpu0"}], "models": []})
    (shown,) = summarize(status, URL)["devices"]
    assert shown == {"name": "gpu0", "kind": "gpu", "mode": "auto", "residents": [], "hold": None}
