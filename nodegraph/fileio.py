"""Atomic file writes and reading PNG text chunks, with the standard library only."""

from __future__ import annotations

import os
import stat
import struct
import tempfile
import zlib
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`.

    A crash or a full disk leaves either the old file or the new one, never half of one. The file
    gets the mode an ordinary `open(path, "w")` would give it: an existing file keeps its mode, a new
    one gets 0o666 less the umask (not the private 0o600 of the temporary file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            else:  # Windows before Python 3.13, where only the read-only bit means anything
                os.chmod(tmp, mode)
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


def _mode_for(path: Path) -> int:
    """The permission bits `path` should end up with: its own if it exists, else 0o666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


_PROC_STATUS = "/proc/self/status"


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux >= 4.7 reports it
    in /proc/self/status). Elsewhere it is read by setting and restoring it, which is process-wide:
    a file another thread creates in between would get the temporary mask 0o077 (private, never
    more open)."""
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


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
