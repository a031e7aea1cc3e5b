"""Textual-inversion embeddings: `embedding:name` in a prompt, as ComfyUI reads it.

A prompt word (space-separated, as ComfyUI splits them) that starts with `embedding:` names a file in
models/embeddings (with or without its .safetensors/.pt/.bin extension). Its vectors take the place
of token embeddings, one position each, carrying the weight of the text around them. A name that
is not there is left out with a warning, as ComfyUI does (shared negative prompts name embeddings
most people lack).

Files: .safetensors with one tensor (A1111), `emb_params`, or SDXL's `clip_l` / `clip_g` pair;
.pt/.bin only through torch's weights-only loader (A1111's `string_to_param` dict included).
Vectors are chosen by width, so an SDXL file feeds each of SDXL's two text towers its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph import UserError

IDENTIFIER = "embedding:"
SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")
_WORD = re.compile(r"(?<!\S)embedding:(\S+)")


@dataclass(frozen=True)
class Embedding:
    """One file's vectors, by width: {768: [n, 768], 1280: [n, 1280]}."""

    name: str
    vectors: dict[int, Any]

    @property
    def length(self) -> int:
        return max(int(v.shape[0]) for v in self.vectors.values())

    def for_width(self, width: int):
        vectors = self.vectors.get(width)
        if vectors is None:
            widths = ", ".join(str(w) for w in sorted(self.vectors))
            raise UserError(f'embedding "{self.name}" has {widths}-wide vectors, but this text encoder takes '
                            f"{width}: it was made for another model family")
        return vectors


def split_words(text: str) -> list[tuple[str, str]]:
    """[("text", piece) | ("embedding", name)] in order: the prompt around its embedding words."""
    out: list[tuple[str, str]] = []
    pos = 0
    for match in _WORD.finditer(text):
        if match.start() > pos:
            out.append(("text", text[pos:match.start()]))
        out.append(("embedding", match.group(1)))
        pos = match.end()
    if pos < len(text):
        out.append(("text", text[pos:]))
    return out


def file_name_for(name: str, available: list[str]) -> str | None:
    """The file in models/embeddings a prompt's name refers to (exact, then with a known suffix;
    a trailing comma or full stop typed after the name is forgiven)."""
    for candidate in (name, name.rstrip(",.;:")):
        if candidate in available:
            return candidate
        for suffix in SUFFIXES:
            if candidate + suffix in available:
                return candidate + suffix
    return None


def load_embedding(path: Path) -> Embedding:
    """Read an embedding file into vectors by width; one-line UserError for anything else."""
    import torch

    tensors: dict[str, Any] = {}
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise UserError(f'embedding "{path.name}" is not a readable .safetensors file: {e}') from None
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - refused pickles and corrupt files alike
            raise UserError(f'embedding "{path.name}" cannot be read with weights-only loading '
                            f"(use a .safetensors version): {str(e).splitlines()[0][:120]}") from None
        if isinstance(obj, dict) and isinstance(obj.get("string_to_param"), dict):
            obj = obj["string_to_param"]  # A1111's .pt layout: {"*": tensor}
        if isinstance(obj, torch.Tensor):
            obj = {"emb": obj}
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    vectors: dict[int, Any] = {}
    for tensor in tensors.values():
        t = tensor.float()
        t = t.reshape(-1, t.shape[-1]) if t.ndim != 2 else t
        vectors.setdefault(int(t.shape[-1]), t)
    if not vectors:
        raise UserError(f'embedding "{path.name}" holds no vectors')
    return Embedding(path.stem, vectors)


class EmbeddingLookup:
    """name → Embedding, from a node's context (`ctx.models`), each file read once per lookup object."""

    def __init__(self, names: Callable[[], list[str]], path: Callable[[str], Path],
                 warn: Callable[[str], None] = lambda message: None):
        self._names, self._path, self._warn = names, path, warn
        self._cache: dict[str, Embedding | None] = {}

    def __call__(self, name: str) -> Embedding | None:
        if name not in self._cache:
            found = file_name_for(name, self._names())
            if found is None:
                self._warn(f'embedding "{name}" is not in models/embeddings; it is left out of the prompt')
                self._cache[name] = None
            else:
                self._cache[name] = load_embedding(self._path(found))
        return self._cache[name]


def lookup_for(ctx: Any) -> EmbeddingLookup:
    """The embeddings a running node may use: files in models/embeddings, through its context."""
    return EmbeddingLookup(lambda: ctx.models.names("embeddings"), lambda name: ctx.models.path("embeddings", name),
                           ctx.log.warning)
