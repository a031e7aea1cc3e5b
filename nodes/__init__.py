"""sdgraph's Stable Diffusion nodes.

Importing this package registers every node type with `nodegraph.REGISTRY`. It must stay cheap:
node declarations import no torch, diffusers or transformers — the machinery they call does, inside
`run`. A test asserts this.
"""

from . import image, latent, loaders, sampler_nodes, text_nodes  # noqa: E402,F401  (registers the nodes)
