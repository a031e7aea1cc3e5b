"""Sampling machinery under the KSampler node: schedules, samplers, noise and the CFG driver.

Importing this package is cheap (names only). The torch-heavy parts live in submodules that a node
imports inside `run`: `nodes.sampling.ksampler` (the driver: `sample`, `sigmas_for`),
`nodes.sampling.schedules`, `nodes.sampling.samplers`, `nodes.sampling.noise`,
`nodes.sampling.model_sampling`.
"""

from .names import COMFY_SAMPLER_NAMES, MISSING_SAMPLERS, SAMPLERS, SCHEDULERS

__all__ = ["COMFY_SAMPLER_NAMES", "MISSING_SAMPLERS", "SAMPLERS", "SCHEDULERS"]
