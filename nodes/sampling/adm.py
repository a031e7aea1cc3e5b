"""The UNet's image-embedding ("adm") input for unCLIP models: what UNetCaller adds to its call.

An unCLIP UNet (SD 2.1 unclip-h/-l: a diffusers "projection" class embedding) takes `class_labels`
[B, adm] on every call. Each conditioning entry's vector comes from its `unclip_conditioning` list
(set by unCLIPConditioning) through nodes.models.unclip.unclip_adm, seeded from the sampler's seed
(ComfyUI computes it once per sampling run, with seed − 10); an entry without one gives zeros.

`run_sampling` holds the run's seed in SAMPLING_SEED while it runs (`sampling_seed`); the vectors are computed once per run and
entry (cached on the UNetCaller, which lives for one run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import torch

from ..core.values import ConditioningEntry

SAMPLING_SEED: ContextVar[int] = ContextVar("sdgraph_sampling_seed", default=0)


@contextlib.contextmanager
def sampling_seed(seed: int) -> Iterator[None]:
    """SAMPLING_SEED is `seed` inside, and what it was before once the run ends."""
    token = SAMPLING_SEED.set(seed)
    try:
        yield
    finally:
        SAMPLING_SEED.reset(token)


def add_unclip_inputs(kwargs: dict[str, Any], caller: Any, entries: Sequence[tuple[ConditioningEntry, int]],
                      device: Any, dtype: Any) -> None:
    """Add `class_labels` [Σn, adm] to the UNet call's kwargs when the UNet is an unCLIP one; each
    (entry, n) chunk repeats its entry's vector n times, in the chunks' order. On SDXL-style UNets
    (revision), an entry with unCLIP conditioning gives the augmented image embedding in place of
    its pooled text embedding (ComfyUI's sdxl_pooled: no merge noise)."""
    unet = caller.unet
    added = kwargs.get("added_cond_kwargs")
    if getattr(getattr(unet, "config", None), "class_embed_type", None) == "projection":
        adm_in = int(unet.config.projection_class_embeddings_input_dim)
        rows = [_vector(caller, entry, adm_in // 2, None, torch.zeros((1, adm_in))).repeat(n, 1)
                for entry, n in entries]  # [n, adm] each
        kwargs["class_labels"] = torch.cat(rows).to(device, dtype)
    elif added is not None and any(entry.extras.get("unclip_conditioning") for entry, _n in entries):
        pooled = added["text_embeds"]  # [Σn, width]
        width, rows, start = pooled.shape[-1], [], 0
        for entry, n in entries:
            own = pooled[start:start + n]
            rows.append(_vector(caller, entry, width, 0.0, own)[:, :width].to(own).repeat(n, 1)
                        if entry.extras.get("unclip_conditioning") else own)
            start += n
        added["text_embeds"] = torch.cat(rows).to(device, dtype)


def _vector(caller: Any, entry: ConditioningEntry, dim: int, merge: float | None,
            default: torch.Tensor) -> torch.Tensor:
    """The entry's adm vector [1, 2·dim] for this run (computed once), or `default` without unCLIP.
    `merge`: the noise level several embeddings are merged at (None: unclip_adm's default)."""
    from ..models.unclip import NOISE_AUGMENT_MERGE, SEED_OFFSET, unclip_adm

    unclip = entry.extras.get("unclip_conditioning")
    if not unclip:
        return default
    cache = caller.__dict__.setdefault("_unclip_adm", {})
    if id(entry) not in cache:  # holding the entry keeps its id valid for the run
        cache[id(entry)] = (entry, unclip_adm(unclip, dim, SAMPLING_SEED.get() + SEED_OFFSET,
                                                   NOISE_AUGMENT_MERGE if merge is None else merge))
    return cache[id(entry)][1]
