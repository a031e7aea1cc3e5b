"""File inputs of the SD nodes: a model of a folder kind, or an image in the input folder.

    inputs = [ModelFile("ckpt_name", "checkpoints", tooltip="…")]
    def run(self, ctx, ckpt_name):
        path = ctx.models.path("checkpoints", ckpt_name)

The declaration gives the choices, the cache fingerprint and the one lookup per run (see
nodegraph.files); the folders themselves come from the environment (nodes.core.env).
"""

from __future__ import annotations

from nodegraph import FileChoice, Input


def ModelFile(name: str, kind: str, *, tooltip: str = "", optional: bool = False) -> Input:
    """A model file (or diffusers folder) of `kind`: checkpoints, vae, loras, embeddings…"""
    return FileChoice(name, kind, tooltip=tooltip, optional=optional)


def InputFile(name: str, *, tooltip: str = "", upload: str | None = "image") -> Input:
    """A file in the input folder (`--input-dir`); ComfyUI shows an upload button beside it."""
    return FileChoice(name, "input", tooltip=tooltip, upload=upload)
