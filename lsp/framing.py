"""LSP's base protocol on a byte stream: `Content-Length: N` headers, a blank line, then
N bytes of JSON. A pure, incremental parser — bytes in, message bodies out — so every
malformed frame is a table-driven test with no process and no pipe.

pygls's own reader waits forever for a header line that never ends, ignores a header
block without a Content-Length (and then reads the JSON as headers, forever), and
believes whatever length it is told. Here a frame that cannot be read is a `FrameError`
at the first byte that proves it: a line that cannot be a header (raw JSON without
headers fails at its `{`), a length that is missing, not a number, or over the cap
(refused before anything is allocated), a header block past its size limit, input that
ends inside a frame. None of those can be resynchronised — nobody knows where the next
frame starts — so the caller answers once and ends the stream.
"""

from __future__ import annotations

import json
from typing import Any

MAX_BODY = 64 * 1024 * 1024
"""The largest body accepted (64 MiB): a whole workspace edit fits, a hostile length
does not make the bridge try to allocate it."""

MAX_HEADER = 8 * 1024
"""The largest header block (8 KiB): real ones are under 100 bytes."""

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
"""The bytes of an HTTP header name (RFC 9110 `token`): what a header line starts with."""

_SHOWN = 40


class FrameError(ValueError):
    """The stream is not LSP frames from here on; the message says what was wrong."""


def _show(data: bytes | bytearray) -> str:
    text = repr(bytes(data[:_SHOWN]))
    return text + ("…" if len(data) > _SHOWN else "")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


def _check_name(line: bytes | bytearray) -> None:
    """A header line so far (without its line end) must start with a header name and
    a colon; fail on the first byte that cannot be one."""
    name = line.split(b":", 1)[0]
    if not name and b":" in line:
        raise FrameError(f"a header line has no name before its colon: {_show(line)}")
    bad = next((i for i, byte in enumerate(name) if byte not in _TOKEN), None)
    if bad is not None:
        hint = " (is the Content-Length header missing?)" if name[:1] in (b"{", b"[") else ""
        raise FrameError(
            f"expected a header line such as 'Content-Length: 42', got {_show(line)}{hint}"
        )


def content_length(value: bytes, limit: int = MAX_BODY) -> int:
    """The body size a Content-Length value names: ASCII digits only, at most `limit`."""
    digits = value.strip(b" \t")
    if not digits or not digits.isdigit():  # bytes.isdigit: ASCII 0-9 only
        raise FrameError(f"Content-Length must be a decimal number of bytes, got {_show(value)}")
    significant = digits.lstrip(b"0")
    if len(significant) > len(str(limit)) or int(digits) > limit:
        raise FrameError(
            f"Content-Length {digits[:20].decode()}{'…' if len(digits) > 20 else ''} is over "
            f"the limit of {limit} bytes ({_mib(limit)})"
        )
    return int(digits)


class Frames:
    """Bodies out of a stream of bytes fed in any chunking.

    `feed()` what arrived, then take `next()` until it returns None (wait for more
    bytes); `close()` at the end of input says whether the stream ended between frames.
    """

    def __init__(self, max_body: int = MAX_BODY, max_header: int = MAX_HEADER) -> None:
        self.max_body = max_body
        self.max_header = max_header
        self._buffer = bytearray()
        self._header_bytes = 0
        """The bytes of the header block read so far (its lines, not the partial one)."""
        self._declared: int | None = None
        """The Content-Length of the header block being read."""
        self._length: int | None = None
        """Set once a header block ended: the size of the body that follows."""

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> bytes | None:
        """The next whole body, or None until more bytes arrive; FrameError when the
        bytes so far cannot be a frame."""
        while self._length is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                self._check_partial()
                return None
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._header_bytes += len(line)
            if self._header_bytes > self.max_header:
                raise self._header_too_long()
            self._header_line(line)
        if len(self._buffer) < self._length:
            return None
        body = bytes(self._buffer[: self._length])
        del self._buffer[: self._length]
        self._length = None
        return body

    def close(self) -> None:
        """The input ended: fine between frames, a FrameError inside one."""
        if self._length is not None:
            raise FrameError(
                f"the input ended {len(self._buffer)} bytes into a body of {self._length} bytes"
            )
        if self._buffer or self._header_bytes:
            size = self._header_bytes + len(self._buffer)
            raise FrameError(
                f"the input ended inside a header block ({size} bytes and no blank line)"
            )

    # -- headers -------------------------------------------------------------------

    def _header_too_long(self) -> FrameError:
        return FrameError(
            f"the header block is over {self.max_header} bytes and has not ended "
            "(a blank line ends it)"
        )

    def _check_partial(self) -> None:
        """No line end yet: fail now if what has arrived can never be a header."""
        if self._header_bytes + len(self._buffer) > self.max_header:
            raise self._header_too_long()
        partial = self._buffer.rstrip(b"\r")
        if b"\r" in partial:
            raise FrameError(f"a header line holds a carriage return: {_show(partial)}")
        if partial:
            _check_name(partial)

    def _header_line(self, line: bytes) -> None:
        text = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if b"\r" in text:
            raise FrameError(f"a header line holds a carriage return: {_show(text)}")
        if not text:  # the blank line: the body follows
            if self._declared is None:
                raise FrameError(
                    "a header block ended without a Content-Length header, so the size of "
                    "its body is unknown"
                )
            self._length, self._declared, self._header_bytes = self._declared, None, 0
            return
        _check_name(text)
        name, sep, value = text.partition(b":")
        if not sep:
            raise FrameError(f"a header line has no colon: {_show(text)}")
        if name.lower() != b"content-length":
            return  # Content-Type (LSP bodies are always UTF-8 JSON) and others: ignored
        if self._declared is not None:
            raise FrameError("a header block has two Content-Length headers")
        self._declared = content_length(value, self.max_body)


def frame(message: dict[str, Any]) -> bytes:
    """A message as one frame, the way pygls writes its own (ASCII JSON, so the length
    in characters is the length in bytes)."""
    body = json.dumps(message, separators=(",", ":")).encode("ascii")
    return b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
