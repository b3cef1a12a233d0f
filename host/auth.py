"""The bearer token that guards the host when the daemon listens beyond loopback.

A token is only as good as its weakest copy: it is generated with 256 bits of
randomness, written so that no reader ever sees a half-written (empty) file, refused
at start when the file holds something short or odd, and compared byte for byte with
what a client sent, so that no whitespace or Unicode trick turns authentication off.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import secrets
import string
import tempfile
from pathlib import Path

from host.config import ConfigError

TOKEN_FILE = "token"
MIN_TOKEN_CHARS = 32
TOKEN_ALPHABET = frozenset(string.ascii_letters + string.digits + "-._~+/=")
"""RFC 6750's b64token characters: what a bearer value may hold. The generated tokens
use the URL-safe base64 subset."""


class TokenError(ConfigError):
    """A token file the host will not use; the message says how to fix it in one line.

    It is a ConfigError so that every command that reads the token (`tierhost serve`,
    `tierhost token`, ...) reports it as one line instead of a traceback.
    """


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_strong_token(token: str) -> bool:
    """At least 32 characters, all from the bearer alphabet."""
    return len(token) >= MIN_TOKEN_CHARS and all(c in TOKEN_ALPHABET for c in token)


def load_or_create_token(data_dir: Path) -> str:
    """The token in `data_dir/token`, created (mode 0600) at first start.

    A file that exists but holds a weak token (empty after a crash or a full disk,
    shorter than 32 characters, characters outside the bearer alphabet) is refused with
    a TokenError rather than replaced: someone may have shared it with clients, and a
    host that quietly accepted it would be guarded by a guessable secret.
    """
    path = data_dir / TOKEN_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    return _create(path)


def _read(path: Path) -> str:
    raw = path.read_bytes().strip()  # ASCII whitespace only: bytes.strip knows no other
    fix = f"delete {path} and start the host again to generate a new one"
    try:
        token = raw.decode("ascii")
    except UnicodeDecodeError:
        raise TokenError(f"the token in {path} is not ASCII; {fix}") from None
    if len(token) < MIN_TOKEN_CHARS:
        size = "empty" if not token else f"only {len(token)} characters"
        raise TokenError(
            f"the token in {path} is {size} (at least {MIN_TOKEN_CHARS} are needed); {fix}"
        )
    if not is_strong_token(token):
        raise TokenError(
            f"the token in {path} has characters outside A-Z a-z 0-9 - . _ ~ + / =; {fix}"
        )
    return token


def _create(path: Path) -> str:
    """Write a new token atomically: a complete temp file (0600, fsynced) is linked into
    place, so a reader sees no file or the whole token, never an empty one. Linking
    fails if another process created the token first; then its token is the one."""
    token = secrets.token_urlsafe(32)  # 43 characters, 256 bits
    fd, temp_name = tempfile.mkstemp(prefix=".token-", dir=path.parent)  # mode 0600
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(token.encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return _read(path)
        except OSError:
            # A filesystem without hard links: replacing is still atomic for readers.
            os.replace(temp, path)
        _fsync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return token


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable, where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def bearer_value(authorization: str | None) -> str | None:
    """Exactly what follows `Bearer ` in an Authorization header, or None.

    Nothing is stripped: `Bearer  token` (two spaces) or a no-break space is a
    different value, and it will not match.
    """
    if authorization is None:
        return None
    scheme, separator, value = authorization.partition(" ")
    if not separator or scheme.lower() != "bearer":
        return None
    return value


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time, exact comparison; a weak expectation never matches anything."""
    if presented is None or not is_strong_token(expected):
        return False
    if not all(c in TOKEN_ALPHABET for c in presented):
        return False
    return hmac.compare_digest(presented.encode("ascii"), expected.encode("ascii"))
