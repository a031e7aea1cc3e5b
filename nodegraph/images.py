"""The text a workflow travels in inside an image: PNG text chunks (ComfyUI's `prompt` and
`workflow`, sdgraph's `sdgraph`, A1111's `parameters`, anywhere in the file, after IDAT too), EXIF
strings in WebP and JPEG files (ComfyUI writes "workflow:{…}" and "prompt:{…}" into a WebP's EXIF;
A1111 puts its parameters in a JPEG's UserComment) and A1111's "stealth" text hidden in the low bits
of a PNG's alpha channel.

Standard library only, like the rest of the engine, and bounded: a compressed chunk may unpack to at
most MAX_TEXT bytes, a stealth payload is looked for only in images up to STEALTH_MAX_PIXELS, and
every loop walks forward through the bytes. Anything malformed gives a WorkflowError that says what.
"""

from __future__ import annotations

import gzip
import struct
import zlib

from .errors import WorkflowError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT = 64 * 2**20  # a workflow of 64 MiB is already absurd
STEALTH_MAX_PIXELS = 1_100_000
STEALTH_SIGNATURES = {b"stealth_pnginfo": False, b"stealth_pngcomp": True}
_EXIF_STRINGS = {0x010E, 0x010F, 0x0110, 0x9286, 0x9C9C}  # description, make, model, user comment, XP comment


def image_kind(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    return None


def read_image_text(data: bytes) -> dict[str, str]:
    """Key → text for every piece of text the image carries (`stealth_parameters` for A1111's
    alpha-channel text). Raises WorkflowError when the file is not one of these images or is broken
    before any text was found."""
    kind = image_kind(data)
    if kind == "png":
        return _png(data)
    if kind == "webp":
        return _webp(data)
    if kind == "jpeg":
        return _jpeg(data)
    raise WorkflowError(["not a PNG, WebP or JPEG image"])


# -- PNG ---------------------------------------------------------------------------------------
def _png(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    header = None
    idat: list[bytes] = []
    pos = len(PNG_SIGNATURE)
    broken = ""
    while pos < len(data):
        if pos + 8 > len(data):
            broken = "the file ends in the middle of a chunk header"
            break
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > len(data):
            broken = f"its {kind.decode('latin-1', 'replace')!r} chunk runs past the end of the file"
            break
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR" and length == 13:
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            key, text = _png_text(kind, body)
            if key:
                out.setdefault(key, text)
        elif kind == b"eXIf":
            for key, text in _exif(body).items():
                out.setdefault(key, text)
        elif kind == b"IEND":
            break
    if not out and header is not None and idat:
        stealth = _stealth(header, idat)
        if stealth:
            out["stealth_parameters"] = stealth
    if broken and not out:
        raise WorkflowError([f"the PNG is damaged: {broken}"])
    return out


def _png_text(kind: bytes, body: bytes) -> tuple[str, str]:
    key, sep, rest = body.partition(b"\0")
    if not sep or not key:
        return "", ""
    name = key.decode("latin-1")
    if kind == b"tEXt":
        return name, rest.decode("latin-1")
    if kind == b"zTXt":
        return name, _inflate(rest[1:], name).decode("latin-1")
    if len(rest) < 2:
        return "", ""
    compressed, rest = rest[0], rest[2:]
    parts = rest.split(b"\0", 2)  # language tag, translated keyword, text
    if len(parts) < 3:
        return "", ""
    text = _inflate(parts[2], name) if compressed else parts[2]
    return name, text.decode("utf-8", errors="replace")


def _inflate(data: bytes, name: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT)
    except zlib.error:
        raise WorkflowError([f"the compressed {name!r} text in the image is damaged"]) from None
    if inflater.unconsumed_tail:
        raise WorkflowError([f"the {name!r} text in the image unpacks to more than {MAX_TEXT // 2**20} MiB"])
    return out


def _stealth(header: tuple, idat: list[bytes]) -> str:
    """A1111's stealth text: the alpha channel's lowest bits, column by column, spell a signature,
    a 32-bit length in bits, then the (maybe gzipped) UTF-8 text."""
    width, height, depth, colour, _comp, _filter, interlace = header
    if colour != 6 or depth != 8 or interlace or not 0 < width * height <= STEALTH_MAX_PIXELS:
        return ""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), (width * 4 + 1) * height)
    except zlib.error:
        return ""
    if len(raw) < (width * 4 + 1) * height:
        return ""
    alpha = _alpha_channel(raw, width, height)
    bits = bytearray(a & 1 for x in range(width) for a in alpha[x::width])

    def number(start: int, count: int) -> int:
        return int("".join("1" if b else "0" for b in bits[start:start + count]) or "0", 2)

    head = bytes(number(i * 8, 8) for i in range(15))
    if head not in STEALTH_SIGNATURES:
        return ""
    size = number(120, 32)
    if size <= 0 or 152 + size > len(bits) or size % 8:
        return ""
    payload = bytes(number(152 + i * 8, 8) for i in range(size // 8))
    if STEALTH_SIGNATURES[head]:
        try:
            payload = gzip.decompress(payload)[:MAX_TEXT]
        except (OSError, EOFError, zlib.error):
            return ""
    return payload.decode("utf-8", errors="replace")


def _alpha_channel(raw: bytes, width: int, height: int) -> bytes:
    """The alpha bytes of an 8-bit RGBA image, row by row, unfiltered (PNG filters work per
    channel, so the alpha bytes can be undone on their own)."""
    stride = width * 4 + 1
    out = bytearray(width * height)
    prior = bytearray(width)
    for y in range(height):
        kind = raw[y * stride]
        row = raw[y * stride + 1 + 3:(y + 1) * stride:4]
        cur = bytearray(width)
        for x in range(width):
            left = cur[x - 1] if x else 0
            up = prior[x]
            if kind == 0:
                value = row[x]
            elif kind == 1:
                value = row[x] + left
            elif kind == 2:
                value = row[x] + up
            elif kind == 3:
                value = row[x] + (left + up) // 2
            else:
                up_left = prior[x - 1] if x else 0
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                value = row[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)
            cur[x] = value & 0xFF
        out[y * width:(y + 1) * width] = cur
        prior = cur
    return bytes(out)


# -- WebP and JPEG -----------------------------------------------------------------------------
def _webp(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos:pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            if not out:
                raise WorkflowError(["the WebP is damaged: a chunk runs past the end of the file"])
            break
        if kind == b"EXIF":
            for key, text in _exif(body).items():
                out.setdefault(key, text)
        pos += 8 + length + (length & 1)
    return out


def _jpeg(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of the picture data
            break
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        body = data[pos + 4:pos + 2 + length]
        if length < 2 or len(body) < length - 2:
            if not out:
                raise WorkflowError(["the JPEG is damaged: a segment runs past the end of the file"])
            break
        if marker == 0xE1 and body.startswith(b"Exif\0\0"):
            for key, text in _exif(body).items():
                out.setdefault(key, text)
        elif marker == 0xFE and body:
            out.setdefault("comment", body.decode("utf-8", errors="replace"))
        pos += 2 + length
    return out


def _exif(body: bytes) -> dict[str, str]:
    """Strings of the EXIF tags that carry workflows: "workflow:{…}" / "prompt:{…}" (ComfyUI) or a
    UserComment (A1111's parameters)."""
    if body.startswith(b"Exif\0\0"):
        body = body[6:]
    if len(body) < 8 or body[:2] not in (b"II", b"MM"):
        return {}
    order = "<" if body[:2] == b"II" else ">"
    out: dict[str, str] = {}
    seen: set[int] = set()
    pending = [struct.unpack(order + "I", body[4:8])[0]]
    while pending:
        offset = pending.pop()
        if offset in seen or offset + 2 > len(body) or len(seen) > 16:
            continue
        seen.add(offset)
        (count,) = struct.unpack(order + "H", body[offset:offset + 2])
        for i in range(min(count, 512)):
            at = offset + 2 + 12 * i
            if at + 12 > len(body):
                break
            tag, kind, n, value = struct.unpack(order + "HHI4s", body[at:at + 12])
            if tag in (0x8769, 0x8825):  # the Exif and GPS sub-directories
                pending.append(struct.unpack(order + "I", value)[0])
                continue
            if tag not in _EXIF_STRINGS or kind not in (1, 2, 7) or n > MAX_TEXT:
                continue
            raw = value[:n] if n <= 4 else body[struct.unpack(order + "I", value)[0]:][:n]
            text = _exif_text(tag, raw, order)
            key, sep, rest = text.partition(":")
            if sep and key in ("workflow", "prompt", "sdgraph", "parameters"):
                out.setdefault(key, rest)
            elif text.strip() and tag in (0x9286, 0x9C9C):
                out.setdefault("parameters", text)
    return out


def _exif_text(tag: int, raw: bytes, order: str) -> str:
    if tag == 0x9C9C:
        return raw.decode("utf-16-le", errors="replace").rstrip("\0")
    if tag == 0x9286:  # 8 bytes name the character set
        head, raw = raw[:8], raw[8:]
        if head.startswith(b"UNICODE"):
            # A1111 writes UTF-16 big-endian whatever the file's byte order; guess by the zero bytes
            big = raw[0::2].count(0) >= raw[1::2].count(0)
            return raw.decode("utf-16-be" if big else "utf-16-le", errors="replace").rstrip("\0")
    return raw.decode("utf-8", errors="replace").rstrip("\0")
