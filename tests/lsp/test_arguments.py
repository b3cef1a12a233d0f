"""Command arguments: what is accepted, and the message for each mistake."""

from __future__ import annotations

from typing import Any

import pytest
from lsprotocol import types

from lsp.arguments import BadArguments, Options, cancel_args, mode_args, task_args

URI = "file:///work/app/stats.py"
RANGE = {"start": {"line": 1, "character": 0}, "end": {"line": 3, "character": 4}}
LSP_RANGE = types.Range(start=types.Position(1, 0), end=types.Position(3, 4))


@pytest.mark.parametrize(
    ("arguments", "selection", "options"),
    [
        ([URI], None, Options()),
        ([URI, RANGE], LSP_RANGE, Options()),
        ([URI, None, {"maxTokens": 16}], None, Options(max_tokens=16)),
        ([URI, RANGE, {"temperature": 0, "seed": 3}], LSP_RANGE, Options(temperature=0, seed=3)),
        ([{"uri": URI, "range": RANGE}], LSP_RANGE, Options()),
        ([{"uri": URI, "options": {"validation": "final"}}], None, Options(validation="final")),
        (
            [{"uri": URI, "options": {"forceBig": True, "tier": "builder"}}],
            None,
            Options(force_big=True, tier="builder"),
        ),
        # an empty selection is no selection: the command works on the whole file
        (
            [URI, {"start": {"line": 2, "character": 1}, "end": {"line": 2, "character": 1}}],
            None,
            Options(),
        ),
        (["untitled:Untitled-1"], None, Options()),
    ],
)
def test_accepted(arguments: list[Any], selection: types.Range | None, options: Options) -> None:
    parsed = task_args("tierhost.plan", arguments)
    assert parsed.uri == arguments[0] if isinstance(arguments[0], str) else URI
    assert parsed.range == selection
    assert parsed.options == options


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "tierhost.plan: got 0 argument(s); expected [uri], [uri, range]"),
        ([URI, None, None, None], "got 4 argument(s)"),
        ([None], "the first argument must be the document URI (a string), got nothing"),
        ([7], "got int 7"),
        (["stats.py"], "'stats.py' is not a document URI"),
        ([URI, "1-3"], "range must be an LSP range object"),
        ([URI, {"start": {"line": 1}, "end": {"line": 2, "character": 0}}], "range.start needs"),
        ([URI, {"start": {"line": True, "character": 0}, "end": RANGE["end"]}], "range.start"),
        ([URI, {"start": RANGE["start"], "end": {"line": -2, "character": 0}}], "range.end needs"),
        ([URI, {"start": RANGE["end"], "end": RANGE["start"]}], "range.end (1:0) is before"),
        ([URI, None, "fast"], "options must be an object, got str"),
        ([URI, None, {"max_tokens": 5}], "unknown option(s) 'max_tokens'; known: maxTokens"),
        ([URI, None, {"maxTokens": 0}], "'maxTokens' must be at least 1"),
        ([URI, None, {"maxTokens": 2.5}], "'maxTokens' must be int, got 2.5"),
        ([URI, None, {"seed": False}], "'seed' must be int, got False"),
        ([URI, None, {"forceBig": "yes"}], "'forceBig' must be bool"),
        ([URI, None, {"validation": "strict"}], "'validation' must be one of none, final"),
        ([{"uri": URI, "selection": RANGE}], "unknown key(s) 'selection'"),
    ],
)
def test_refused_with_a_clear_message(arguments: list[Any], message: str) -> None:
    with pytest.raises(BadArguments) as caught:
        task_args("tierhost.plan", arguments)
    assert message in str(caught.value)
    assert str(caught.value).startswith("tierhost.plan: ")


def test_options_become_the_hosts_params() -> None:
    options = Options(max_tokens=8, temperature=0.0, seed=1, validation="none")
    assert options.params() == {"max_tokens": 8, "temperature": 0.0, "seed": 1}
    assert Options().params() == {}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [(["gaming"], ("gaming", None)), (["builder", "gpu0"], ("builder", "gpu0"))],
)
def test_mode_arguments(arguments: list[Any], expected: tuple[str, str | None]) -> None:
    assert mode_args(arguments) == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "expected [mode] or [mode, device]"),
        ([""], "the mode must be a non-empty string"),
        ([{"mode": "auto"}], "the mode must be a non-empty string"),
        (["auto", 0], "the device must be a string like 'gpu0'"),
        (["auto", "gpu0", "now"], "got 3 argument(s)"),
    ],
)
def test_mode_arguments_refused(arguments: list[Any], message: str) -> None:
    with pytest.raises(BadArguments, match=r"^tierhost\.setMode: ") as caught:
        mode_args(arguments)
    assert message in str(caught.value)


def test_cancel_arguments() -> None:
    assert cancel_args([]) is None
    assert cancel_args(["t-0193a5c2f1e4b7c9d0"]) == "t-0193a5c2f1e4b7c9d0"
    assert cancel_args([URI]) == URI
    with pytest.raises(BadArguments, match=r"expected \[\] \(every task started here\)"):
        cancel_args(["t-1", "t-2"])


@pytest.mark.parametrize(
    "target", ["t-0123", "../../v1/models", "t-0193a5c2f1e4b7c9d0/../x", "T-0193A5C2F1E4B7C9D0"]
)
def test_cancel_refuses_what_is_not_a_task_id(target: str) -> None:
    """The id goes into the URL path of the host's cancel endpoint."""
    with pytest.raises(BadArguments, match="is neither a task id"):
        cancel_args([target])
