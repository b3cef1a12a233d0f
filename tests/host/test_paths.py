"""Finding a command model's program: a path to an executable, or a name on its PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.config import ConfigError
from host.paths import find_program


def executable(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_a_name_is_found_on_the_path_the_server_gets(tmp_path: Path) -> None:
    program = executable(tmp_path, "tts-server")
    assert find_program("tts-server", "tts", str(tmp_path)) == program


def test_a_path_must_be_an_executable_file(tmp_path: Path) -> None:
    program = executable(tmp_path, "srv")
    assert find_program(str(program), "tts", None) == program
    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    with pytest.raises(ConfigError, match=r"models\.tts\.command: .*notes\.txt is not an exec"):
        find_program(str(plain), "tts", None)


def test_a_name_not_on_the_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.tts\.command: 'no-such-srv' is not on PATH"):
        find_program("no-such-srv", "tts", str(tmp_path))
