"""Behaviour of the KSampler driver beyond fixture parity: noise, CFG batching, step slicing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nodes.core.values import ConditioningEntry, Latent
from nodes.sampling import ksampler
from nodes.sampling.noise import prepare_noise
from tests.test_sampling_parity import ToyUNet, conds, toy_model

ROOT = Path(__file__).resolve().parents[1]


def _sample(model=None, pos_neg=None, latent=None, **kw):
    model = model or toy_model()
    pos, neg = pos_neg or conds()
    latent = latent or Latent(samples=torch.zeros(1, 4, 8, 8))
    args = dict(seed=7, steps=4, cfg=4.0, sampler_name="euler", scheduler="normal")
    args.update(kw)
    return ksampler.sample(model, pos, neg, latent, **args)


def test_importing_the_package_does_not_import_torch():
    code = "import sys, nodes.sampling as s; assert s.SAMPLERS; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_batch_index_gives_each_image_the_noise_it_has_in_the_full_batch():
    full = prepare_noise(torch.zeros(4, 4, 8, 8), 42)
    picked = prepare_noise(torch.zeros(2, 4, 8, 8), 42, batch_index=[3, 1])
    assert torch.equal(picked[0], full[3]) and torch.equal(picked[1], full[1])


def test_cfg_one_skips_the_uncond_pass_without_changing_the_result():
    model = toy_model()
    out = _sample(model=model, cfg=1.0)
    assert model.unet.calls == 4
    # Same numbers as evaluating both and combining with cfg = 1.
    ms = ksampler.model_sampling_for(model)
    pos, neg = conds()
    full = ksampler.CFGDenoiser(ksampler.UNetCaller(model), ms, pos, neg, 1.0, keep_uncond=True)
    skip = ksampler.CFGDenoiser(ksampler.UNetCaller(model), ms, pos, neg, 1.0)
    x, s = torch.randn(1, 4, 8, 8), torch.tensor(3.0)
    assert torch.equal(full(x, s), skip(x, s))
    assert out.shape == (1, 4, 8, 8)


def test_different_token_lengths_are_repeated_to_their_lcm_in_one_batch():
    seen = []

    class Spy(ToyUNet):
        def __call__(self, x_in, timestep, encoder_hidden_states):
            seen.append(tuple(encoder_hidden_states.shape))
            return super().__call__(x_in, timestep, encoder_hidden_states)

    model = toy_model()
    model.unet = Spy()
    a = _sample(model=model, pos_neg=conds(154, 77))
    assert seen and all(s == (2, 154, 8) for s in seen)
    assert torch.allclose(a, _sample(), atol=0, rtol=0)  # repeating tokens does not change the toy result


def test_start_and_end_steps_chain_like_ksampler_advanced():
    model_full = _sample(steps=6)
    first = _sample(steps=6, end_step=3, return_with_leftover_noise=True)
    second = _sample(steps=6, start_step=3, add_noise=False, latent=Latent(samples=first))
    assert torch.allclose(second, model_full, rtol=1e-5, atol=1e-5)


def test_start_step_past_the_end_returns_the_input_latent():
    lat = Latent(samples=torch.randn(1, 4, 8, 8))
    assert torch.equal(_sample(latent=lat, steps=4, start_step=10), lat.samples)


def test_sigmas_for_shows_the_noise_levels_used():
    sig = ksampler.sigmas_for(toy_model(), "karras", "dpm_2", 8)
    assert len(sig) == 9 and sig[-1] == 0 and sig[0] > sig[1]
    assert len(ksampler.sigmas_for(toy_model(), "normal", "euler", 10, denoise=0.5)) == 11


def test_callback_runs_once_per_step_and_raising_from_it_stops_sampling():
    steps = []
    _sample(steps=5, callback=lambda i, total, x, den: steps.append((i, total)))
    assert steps == [(i, 5) for i in range(5)]

    class Stop(Exception):
        pass

    def stop(i, total, x, den):
        steps.append("stopped")
        raise Stop  # the node's callback raises Interrupted this way once the run is cancelled

    steps.clear()
    with pytest.raises(Stop):
        _sample(steps=5, callback=stop)
    assert steps == ["stopped"]


def test_noise_mask_keeps_unmasked_area_on_the_input_latent():
    lat = torch.linspace(-1, 1, 256).reshape(1, 4, 8, 8)
    mask = torch.zeros(8, 8)
    mask[:, 4:] = 1.0
    out = _sample(latent=Latent(samples=lat, noise_mask=mask), sampler_name="ddim")
    assert torch.allclose(out[..., :4], lat[..., :4], atol=1e-5)
    assert not torch.allclose(out[..., 4:], lat[..., 4:], atol=1e-2)


def test_multiple_conditioning_entries_are_averaged():
    pos, neg = conds()
    two = [pos[0], ConditioningEntry(cond=torch.full((1, 77, 8), 0.3))]
    assert torch.allclose(_sample(pos_neg=(two, neg)), _sample(), rtol=1e-6, atol=1e-6)


def test_one_entry_per_side_is_plain_cfg_of_one_batched_unet_call_bit_for_bit():
    model = toy_model()
    ms = ksampler.model_sampling_for(model)
    pos, neg = conds()
    x, sigma = torch.randn(1, 4, 8, 8), torch.tensor(3.0)
    out = ksampler.CFGDenoiser(ksampler.UNetCaller(model), ms, pos, neg, 4.0)(x, sigma)
    # the area/strength weighting (sum of weight·x0 over sum of weights) must leave one entry untouched
    s = sigma.expand(1).repeat(2)
    xb = torch.cat([x, x])
    eps = ToyUNet()(ms.calculate_input(s, xb), ms.timestep(s).float(),
                    encoder_hidden_states=torch.cat([pos[0].cond, neg[0].cond])).sample
    den = ms.calculate_denoised(s, eps, xb)
    assert torch.equal(out, den[1:] + (den[:1] - den[1:]) * 4.0)
