"""The bearer token: strong, written atomically, refused when weak, compared exactly."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from host import auth
from host.auth import (
    MIN_TOKEN_CHARS,
    TOKEN_ALPHABET,
    TOKEN_FILE,
    TokenError,
    bearer_value,
    load_or_create_token,
    token_matches,
)
from tests.conftest import free_port

STRONG = "k" * 40


def test_a_new_token_is_long_random_private_and_stable(tmp_path: Path) -> None:
    first = load_or_create_token(tmp_path)
    assert len(first) >= MIN_TOKEN_CHARS and set(first) <= TOKEN_ALPHABET
    path = tmp_path / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first + "\n"
    assert load_or_create_token(tmp_path) == first
    assert load_or_create_token(tmp_path / "other") != first  # a fresh dir, a fresh token


def test_the_token_file_appears_complete_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the moment the file gets its name, its content is already whole and on disk."""
    seen: list[tuple[str, int, bool]] = []
    real_link = os.link

    def watching_link(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        seen.append(
            (
                Path(source).read_text(),
                stat.S_IMODE(Path(source).stat().st_mode),
                Path(target).exists(),
            )
        )
        real_link(source, target)

    monkeypatch.setattr(auth.os, "link", watching_link)
    token = load_or_create_token(tmp_path)
    assert seen == [(token + "\n", 0o600, False)]
    assert [p.name for p in tmp_path.iterdir()] == [TOKEN_FILE]  # no temp file left


def test_a_crash_before_the_token_is_in_place_leaves_no_empty_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(auth.os, "link", crash)
    with pytest.raises(KeyboardInterrupt):
        load_or_create_token(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_hosts_starting_together_agree_on_one_token(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)
    tokens: list[str] = []

    def start() -> None:
        barrier.wait(timeout=10)
        tokens.append(load_or_create_token(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert (tmp_path / TOKEN_FILE).read_text() == tokens[0] + "\n"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xc2\xa0\n", "not ASCII"),  # a no-break space: not whitespace to us
        (b"short-token\n", "only 11 characters"),
        (("x" * 31).encode(), "only 31 characters"),
        (("x" * 40 + "!").encode(), "characters outside"),
        (("x" * 20 + " " + "x" * 20).encode(), "characters outside"),
    ],
)
def test_a_weak_token_file_is_refused_with_the_fix(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_bytes(content)
    with pytest.raises(TokenError) as caught:
        load_or_create_token(tmp_path)
    message = str(caught.value)
    assert says in message and "delete" in message and str(path) in message
    assert "\n" not in message
    assert path.read_bytes() == content  # refused, not silently replaced


def test_a_hand_written_strong_token_is_used_as_written(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).write_text(f"  {STRONG}\r\n")
    assert load_or_create_token(tmp_path) == STRONG


def run_tierhost(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIERHOST_DATA_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "host", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    "argv",
    [("token",), ("serve", "--host", "0.0.0.0", "--port", "0")],
    ids=["token", "serve-off-loopback"],
)
def test_the_cli_refuses_an_empty_token_file_in_one_line(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    (tmp_path / TOKEN_FILE).write_bytes(b"")
    if argv[0] == "serve":
        argv = (*argv[:-1], str(free_port()))
    result = run_tierhost(*argv, data_dir=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "empty" in lines[0] and "delete" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (f"Bearer {STRONG}", STRONG),
        (f"bearer {STRONG}", STRONG),  # the scheme is case-insensitive (RFC 7235)
        (f"Bearer  {STRONG}", f" {STRONG}"),  # nothing stripped
        (f"Bearer {STRONG}\xa0", f"{STRONG}\xa0"),
        ("Bearer ", ""),
        ("Bearer", None),
        (f"Bearer\xa0{STRONG}", None),
        (f"Basic {STRONG}", None),
        (None, None),
    ],
)
def test_the_bearer_value_is_exactly_what_follows_the_scheme(
    header: str | None, value: str | None
) -> None:
    assert bearer_value(header) == value


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        ("\xa0", ""),
        ("\xa0", " "),
        ("", ""),
        (" ", " "),
        ("\u2003", "\u2003"),
        (None, STRONG),
        ("", STRONG),
        (STRONG + "\xa0", STRONG),
        (STRONG + " ", STRONG),
        (" " + STRONG, STRONG),
        (STRONG.upper(), STRONG),
        (STRONG[:-1], STRONG),
        ("x" * 31, "x" * 31),  # a weak expectation never matches, not even itself
        ("é" * 40, "é" * 40),
    ],
)
def test_only_the_exact_strong_token_matches(presented: str | None, expected: str) -> None:
    assert not token_matches(presented, expected)


def test_the_exact_token_matches() -> None:
    assert token_matches(STRONG, STRONG)
    generated = "Ab-_0123456789" * 3
    assert token_matches(generated, generated)
