"""Sampler registry: ComfyUI name -> implementation and how the driver must feed it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import samplers as s
from . import samplers_extra as e
from . import unipc as u
from .names import BROWNIAN_NOISE, GENERATOR_NOISE, SAMPLERS


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    noise: str = "none"  # "none", "generator" or "brownian_tree"
    needs_uncond: bool = False  # CFG++: keep the unconditional x0 and never skip the uncond pass
    brownian_on_device: bool = False  # the `_gpu` twins build the Brownian tree on x's device
    inpaint_random_noise: bool = False  # ddim: masked areas re-noised with seed + 1 noise


_FUNCS: dict[str, Callable] = {
    "euler": s.sample_euler,
    "euler_cfg_pp": e.sample_euler_cfg_pp,
    "euler_ancestral": s.sample_euler_ancestral,
    "euler_ancestral_cfg_pp": e.sample_euler_ancestral_cfg_pp,
    "heun": s.sample_heun,
    "heunpp2": s.sample_heunpp2,
    "dpm_2": s.sample_dpm_2,
    "dpm_2_ancestral": s.sample_dpm_2_ancestral,
    "lms": s.sample_lms,
    "dpm_fast": e.sample_dpm_fast,
    "dpm_adaptive": e.sample_dpm_adaptive,
    "dpmpp_2s_ancestral": s.sample_dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": e.sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": s.sample_dpmpp_sde,
    "dpmpp_sde_gpu": s.sample_dpmpp_sde,
    "dpmpp_2m": s.sample_dpmpp_2m,
    "dpmpp_2m_cfg_pp": e.sample_dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": s.sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": s.sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": s.sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": s.sample_dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": s.sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": s.sample_dpmpp_3m_sde,
    "ddpm": s.sample_ddpm,
    "lcm": s.sample_lcm,
    "ipndm": s.sample_ipndm,
    "ipndm_v": s.sample_ipndm_v,
    "deis": s.sample_deis,
    "res_multistep": e.sample_res_multistep,
    "res_multistep_cfg_pp": e.sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": e.sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": e.sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": e.sample_gradient_estimation,
    "gradient_estimation_cfg_pp": e.sample_gradient_estimation_cfg_pp,
    "er_sde": e.sample_er_sde,
    "seeds_2": e.sample_seeds_2,
    "seeds_3": e.sample_seeds_3,
    "sa_solver": e.sample_sa_solver,
    "sa_solver_pece": e.sample_sa_solver_pece,
    "ddim": s.sample_euler,  # ComfyUI's "ddim" is k-diffusion Euler
    "uni_pc": u.sample_uni_pc,
    "uni_pc_bh2": u.sample_uni_pc_bh2,
}


def _spec(name: str) -> SamplerSpec:
    noise = "generator" if name in GENERATOR_NOISE else "brownian_tree" if name in BROWNIAN_NOISE else "none"
    return SamplerSpec(
        name=name,
        fn=_FUNCS[name],
        noise=noise,
        needs_uncond="cfg_pp" in name,
        brownian_on_device=name.endswith("_gpu"),
        inpaint_random_noise=name == "ddim",
    )


SAMPLER_REGISTRY: dict[str, SamplerSpec] = {n: _spec(n) for n in SAMPLERS}


def get_sampler(name: str) -> SamplerSpec:
    try:
        return SAMPLER_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})") from None
