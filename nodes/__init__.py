"""sdgraph's Stable Diffusion nodes. Each module here is one category of nodes (`ls nodes/*.py` is the
catalogue); the machinery beneath them lives in sub-packages (core, models, text, sampling, imaging).

Importing this package registers every node type with `nodegraph.REGISTRY`. It must stay cheap:
node declarations import no torch, diffusers or transformers — the machinery they call does, inside
`run`. A test asserts this.
"""

from . import (  # noqa: F401  (registers the nodes)
    advanced,
    conditioning,
    controlnet,
    custom_sampling,
    explain_noise,
    explain_trace,
    image,
    latent,
    loaders,
    mask,
    model_merging,
    model_patches,
    samplers,
    upscaling,
)


def warm_up() -> list[str]:
    """Import the machinery the nodes load lazily and build what they cache, so the first run
    starts warm; returns what failed. The editor calls a package's `warm_up` at idle."""
    from .core.warm import warm_up as warm

    return warm()
