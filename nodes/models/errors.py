"""The one error type checkpoint loading raises (no torch import: nodes may catch it cheaply)."""

from __future__ import annotations

from nodegraph import UserError


class CheckpointError(UserError):
    """A checkpoint or VAE file that cannot be loaded, with a one-line, actionable message.

    The message always names the file. Loaders raise this instead of letting a raw traceback from
    safetensors, torch.load, diffusers or transformers reach the user.
    """
