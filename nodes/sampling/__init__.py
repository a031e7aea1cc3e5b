"""Sampling machinery under the KSampler node: schedules, samplers, noise and the CFG driver.

Importing this package is cheap (names only). The torch-heavy parts live in submodules that a node
imports inside `run`: `nodes.sampling.ksampler` (the driver: `sample`, `sigmas_for`),
`nodes.sampling.schedules`, `nodes.sampling.samplers`, `nodes.sampling.noise`,
`nodes.sampling.model_sampling`, and `nodes.sampling.diffusers_loop` (DiffusersSampler's loop).
"""

from .names import SAMPLERS, SCHEDULERS

__all__ = ["SAMPLERS", "SCHEDULERS"]
