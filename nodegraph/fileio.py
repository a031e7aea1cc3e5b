"""Atomic file writes and reading PNG text chunks, with the standard library only."""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`.

    A crash or a full disk leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png_text(data: bytes) -> dict[str, str]:
    """The tEXt, zTXt and iTXt entries of a PNG file's bytes. Raises ValueError if not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    out: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt" and b"\0" in body:
            key, text = body.split(b"\0", 1)
            out[key.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"zTXt" and b"\0" in body:
            key, rest = body.split(b"\0", 1)
            out[key.decode("latin-1")] = _inflate(rest[1:]).decode("latin-1")
        elif kind == b"iTXt" and b"\0" in body:
            key, rest = body.split(b"\0", 1)
            if len(rest) < 2:
                continue
            compressed, rest = rest[0], rest[2:]
            parts = rest.split(b"\0", 2)
            if len(parts) < 3:
                continue
            text = _inflate(parts[2]) if compressed else parts[2]
            out[key.decode("latin-1")] = text.decode("utf-8", errors="replace")
        elif kind == b"IEND":
            break
    return out


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return b""
