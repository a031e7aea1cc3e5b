"""Sampling machinery under the KSampler and custom-sampling nodes: schedules, samplers, noise, the
guided denoisers and the driver they share.

Importing this package is cheap (names only). The torch-heavy parts live in submodules that a node
imports inside `run`: `ksampler` (the driver: `sample`, `run_sampling`, `sigmas_for`), `guidance`
(CFG / dual-CFG denoisers), `conds` (areas, masks, timestep ranges, batching into UNet calls),
`custom` (SamplerCustom's front door), `patches` and `unet_patched` (model patches applied while
sampling), `schedules`, `samplers`, `noise`, `model_sampling`, and `diffusers_loop`
(DiffusersSampler's loop).
"""

from .names import SAMPLERS, SCHEDULERS

__all__ = ["SAMPLERS", "SCHEDULERS"]
