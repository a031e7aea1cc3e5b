"""Loader nodes: checkpoints, VAEs, and which CLIP layer to stop at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodegraph import Choice, Int, Link, Node, NodeInputError, Output, UserError, register
from nodegraph import types as T


def _choices(kind: str):
    def list_models(env: Any) -> list[str]:
        return env.list_models(kind) if env is not None else []
    return list_models


def find_model_file(env: Any, kind: str, name: str, input_name: str) -> Path:
    """The file for a model name, or an error that lists what is there."""
    path = env.find_model(kind, name) if env is not None else None
    if path is None:
        folders = ", ".join(str(f) for f in env.model_folders(kind)) if env is not None else kind
        found = env.list_models(kind) if env is not None else []
        listing = f"found: {', '.join(found[:12])}" if found else "the folder is empty"
        raise NodeInputError(input_name, f'"{name}" not found in {folders} ({listing})')
    return path


def file_fingerprint(env: Any, kind: str, name: str) -> Any:
    """Size and modification time, so replacing a file on disk invalidates the cached model."""
    path = env.find_model(kind, name) if env is not None else None
    if path is None:
        return None
    if path.is_dir():
        stats = [p.stat() for p in sorted(path.rglob("*")) if p.is_file()]
        return [len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _load_error(exc: Exception) -> Exception:
    from nodes.models import CheckpointError

    if isinstance(exc, CheckpointError):
        return UserError(str(exc))
    return exc


@register
class CheckpointLoaderSimple(Node):
    """Load a Stable Diffusion checkpoint: the UNet (MODEL), text encoder (CLIP) and VAE."""

    category = "loaders"
    inputs = [Choice("ckpt_name", _choices("checkpoints"),
                     tooltip="a .safetensors/.ckpt file or a diffusers folder in models/checkpoints",
                     empty_hint="no checkpoints found: put a .safetensors file or a diffusers folder in "
                                "models/checkpoints, or pass --models-dir / --extra-model-paths")]
    outputs = [Output("MODEL", T.MODEL), Output("CLIP", T.CLIP), Output("VAE", T.VAE)]

    @classmethod
    def fingerprint(cls, values, env):
        return file_fingerprint(env, "checkpoints", values.get("ckpt_name", ""))

    def run(self, ctx, ckpt_name):
        from dataclasses import replace

        from nodes.device import resolve
        from nodes.models import load_checkpoint
        from nodes.preview import fit_latent_rgb

        path = find_model_file(ctx.env, "checkpoints", ckpt_name, "ckpt_name")
        device, dtype = resolve(ctx.env)
        try:
            model, clip, vae = load_checkpoint(path, device=device, dtype=dtype)
        except Exception as exc:
            raise _load_error(exc) from exc
        model.latent_format = replace(model.latent_format, rgb_factors=fit_latent_rgb(vae, model.latent_format))
        return (model, clip, vae)


@register
class VAELoader(Node):
    """Load a VAE on its own, to decode with a different autoencoder than the checkpoint's."""

    category = "loaders"
    inputs = [Choice("vae_name", _choices("vae"), tooltip="a VAE file or diffusers VAE folder in models/vae",
                     empty_hint="no VAEs found: put a VAE .safetensors file in models/vae")]
    outputs = [Output("VAE", T.VAE)]

    @classmethod
    def fingerprint(cls, values, env):
        return file_fingerprint(env, "vae", values.get("vae_name", ""))

    def run(self, ctx, vae_name):
        from nodes.device import resolve
        from nodes.models import load_vae

        path = find_model_file(ctx.env, "vae", vae_name, "vae_name")
        device, dtype = resolve(ctx.env)
        try:
            return (load_vae(path, device=device, dtype=dtype),)
        except Exception as exc:
            raise _load_error(exc) from exc


@register
class CLIPSetLastLayer(Node):
    """CLIP skip: take the text encoder's hidden state from an earlier layer (-1 is the last)."""

    category = "conditioning"
    inputs = [Link("clip", T.CLIP), Int("stop_at_clip_layer", -1, min=-24, max=-1,
                                        tooltip="-1: last layer; -2: the one before (\"clip skip 2\")")]
    outputs = [Output("CLIP", T.CLIP)]

    def run(self, ctx, clip, stop_at_clip_layer):
        from nodes.text import clip_layer_range

        low, high = clip_layer_range(clip.text_encoder)
        if not low <= stop_at_clip_layer <= high:
            raise NodeInputError("stop_at_clip_layer", f"{stop_at_clip_layer} is out of range: this text encoder "
                                 f"has {-low} layers, so use a value from {low} to {high}")
        return (clip.with_layer(stop_at_clip_layer),)
