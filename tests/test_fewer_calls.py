"""Fewer model calls: DeepCache (step caching) and GuidanceInterval (CFG only inside a σ range) as
model-patch nodes. Exact where they should be exact, fewer UNet blocks / batch rows where they
save work, no state left in the base MODEL or the next run, and the bundled model still draws
what the prompt asks for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from nodegraph import REGISTRY, Executor, NodeInputError
from nodes import model_patches as mp
from nodes.core.env import SDEnvironment
from nodes.core.values import ConditioningEntry, DiffusionModel, Guider, Latent, ModelPatches
from nodes.sampling import ksampler

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
REGISTRY.discover("nodes")


@pytest.fixture(scope="module")
def tiny():
    """A tiny random SD-shaped MODEL (input blocks 0-3, output blocks 0-3) and a prompt pair."""
    from nodes.models.configs import alphas_cumprod as sd_alphas_cumprod
    from nodes.models.testing import tiny_components

    unet, _vae, _text = tiny_components(seed=4)
    model = DiffusionModel(unet=unet, alphas_cumprod=sd_alphas_cumprod(), dtype=torch.float32,
                           device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    pos = [ConditioningEntry(cond=torch.randn(1, 77, 32, generator=g))]
    neg = [ConditioningEntry(cond=torch.randn(1, 77, 32, generator=g))]
    return model, pos, neg


def sample(model, pos, neg, cfg=5.0, steps=9, batch=1):
    return ksampler.sample(model, pos, neg, Latent(samples=torch.zeros(batch, 4, 8, 8)), seed=11, steps=steps,
                           cfg=cfg, sampler_name="euler", scheduler="normal")


class Counter:
    """Forward pre-hooks counting calls and batch rows of some of the UNet's modules."""

    def __init__(self, **modules):
        self.calls = {name: 0 for name in modules}
        self.rows: dict[str, list[int]] = {name: [] for name in modules}
        self.hooks = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(_module, args):
            self.calls[name] += 1
            self.rows[name].append(int(args[0].shape[0]))
        return hook

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()


def unet_counter(unet) -> Counter:
    return Counter(all=unet.conv_in, deep_in=unet.down_blocks[1].resnets[0], middle=unet.mid_block.resnets[0],
                   deep_out=unet.up_blocks[0].resnets[0], shallow_out=unet.up_blocks[-1].resnets[-1])


def deepcache(model, interval=3, depth=1, start=0.0, end=1.0):
    return mp.DeepCache().run(None, model, interval, depth, start, end)[0]


def interval(model, high, low):
    return mp.GuidanceInterval().run(None, model, high, low)[0]


# -- DeepCache ------------------------------------------------------------------------------------------


def test_deepcache_with_interval_1_is_the_unpatched_sampling(tiny):
    model, pos, neg = tiny
    with torch.inference_mode():
        assert torch.equal(sample(deepcache(model, interval=1), pos, neg), sample(model, pos, neg))


def test_deepcache_runs_the_deep_blocks_on_one_step_in_three(tiny):
    model, pos, neg = tiny
    patched = deepcache(model, interval=3, depth=1)
    with unet_counter(model.unet) as count, torch.inference_mode():
        cached = sample(patched, pos, neg, steps=9)
    # cond and uncond share one call a step: 9 calls, the deep ones at steps 0, 3 and 6 only
    assert count.calls["all"] == 9 and count.calls["shallow_out"] == 9
    assert count.calls["deep_in"] == count.calls["middle"] == count.calls["deep_out"] == 3
    with torch.inference_mode():
        exact = sample(model, pos, neg, steps=9)
    assert not torch.equal(cached, exact)  # the cache stood in for something
    assert torch.isfinite(cached).all()


def test_deepcache_depth_0_keeps_only_conv_in_and_the_last_output_block(tiny):
    model, pos, neg = tiny
    unet = model.unet
    with Counter(first_down=unet.down_blocks[0].resnets[0], last_up=unet.up_blocks[-1].resnets[-1],
                 before_last=unet.up_blocks[-1].resnets[0]) as count, torch.inference_mode():
        sample(deepcache(model, interval=2, depth=0), pos, neg, steps=6)
    assert count.calls["last_up"] == 6
    assert count.calls["first_down"] == count.calls["before_last"] == 3


def test_deepcache_leaves_the_base_model_and_the_next_run_alone(tiny):
    model, pos, neg = tiny
    with torch.inference_mode():
        before = sample(model, pos, neg)
        patched = deepcache(model)
        first, second = sample(patched, pos, neg), sample(patched, pos, neg)
        after = sample(model, pos, neg)
    assert torch.equal(first, second)  # the second run started with an empty cache
    assert torch.equal(before, after)
    assert model.patches == ModelPatches() and patched.unet is model.unet
    assert not ksampler.unet_caller(model).__dict__.get("deep_cache")


def test_deepcache_keeps_one_cache_per_batch_layout(tiny):
    """GuidanceInterval switches the batch between cond alone and cond + uncond: each layout
    runs in full on its first call instead of reusing the other's features (of another batch size)."""
    model, pos, neg = tiny
    sigmas = ksampler.sigmas_for(model, "normal", "euler", 9)
    high = float(sigmas[2]) + 1e-3  # steps 0-1: cond alone; 2-8: cond and uncond
    patched = interval(deepcache(model, interval=3), high, 0.0)
    with unet_counter(model.unet) as count, torch.inference_mode():
        out = sample(patched, pos, neg, steps=9)
    assert count.rows["all"] == [1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert count.rows["middle"] == [1, 2, 2, 2]  # steps 0 (cond), 2, 5 and 8 (cond + uncond)
    assert torch.isfinite(out).all()


def test_deepcache_only_caches_inside_its_percent_range(tiny):
    model, pos, neg = tiny
    with unet_counter(model.unet) as count, torch.inference_mode():
        sample(deepcache(model, interval=3, start=0.0, end=0.5), pos, neg, steps=9)
    # past the halfway σ every call is a full one
    assert 3 < count.calls["middle"] < 9


def test_deepcache_rejects_a_depth_the_unet_does_not_have(tiny):
    model, _, _ = tiny
    with pytest.raises(NodeInputError) as err:
        deepcache(model, depth=4)
    assert err.value.input_name == "cache_depth"


# -- GuidanceInterval ----------------------------------------------------------------------------------


def test_guidance_interval_covering_every_sigma_is_plain_cfg(tiny):
    model, pos, neg = tiny
    with torch.inference_mode():
        assert torch.equal(sample(interval(model, 1000.0, 0.0), pos, neg), sample(model, pos, neg))


def test_outside_the_interval_one_batch_row_per_step_and_cfg_1_there(tiny):
    model, pos, neg = tiny
    sigmas = ksampler.sigmas_for(model, "normal", "euler", 9)
    high, low = float(sigmas[2]), float(sigmas[6])  # guidance at steps 2-6
    patched = interval(model, high, low)
    with unet_counter(model.unet) as count, torch.inference_mode():
        sample(patched, pos, neg, steps=9)
    assert count.rows["all"] == [1, 1, 2, 2, 2, 2, 2, 1, 1]
    # the denoiser itself: cfg-1's prediction outside, cfg 5's inside
    ms = ksampler.model_sampling_for(model)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    with torch.inference_mode():
        den = {name: ksampler.guided_denoiser(Guider(m, {"positive": pos, "negative": neg}, cfg=cfg), ms)
               for name, m, cfg in (("gi", patched, 5.0), ("cfg5", model, 5.0), ("cfg1", model, 1.0))}
        for s, inside in ((sigmas[0], False), (sigmas[4], True), (sigmas[8], False)):
            expected = den["cfg5" if inside else "cfg1"](x, s)
            assert torch.equal(den["gi"](x, s), expected)


def test_an_interval_no_sigma_falls_in_samples_as_cfg_1(tiny):
    model, pos, neg = tiny
    with torch.inference_mode():
        assert torch.equal(sample(interval(model, 0.001, 0.0), pos, neg), sample(model, pos, neg, cfg=1.0))


def test_guidance_interval_applies_to_dual_cfg(tiny):
    model, pos, neg = tiny
    ms = ksampler.model_sampling_for(model)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * 3
    conds = {"positive": pos, "middle": neg, "negative": neg}
    with torch.inference_mode():
        for nested in (False, True):
            gi = ksampler.guided_denoiser(Guider(interval(model, 1.0, 0.5), conds, kind="dual", cfg=4.0, cfg2=3.0,
                                                 nested=nested), ms)
            plain = ksampler.guided_denoiser(Guider(model, conds, kind="dual", cfg=4.0, cfg2=3.0, nested=nested), ms)
            cond_only = ksampler.guided_denoiser(Guider(model, {"positive": pos}, cfg=1.0), ms)
            assert torch.equal(gi(x, torch.tensor(0.7)), plain(x, torch.tensor(0.7)))
            assert torch.equal(gi(x, torch.tensor(5.0)), cond_only(x, torch.tensor(5.0)))


def test_guidance_interval_rejects_an_upside_down_interval(tiny):
    with pytest.raises(NodeInputError) as err:
        interval(tiny[0], 0.5, 2.0)
    assert err.value.input_name == "sigma_end"


# -- the bundled model -----------------------------------------------------------------------------------


def test_bundled_model_with_both_patches_still_draws_the_prompt(tmp_path):
    import eval_bundled_model as ev
    import shapes_data

    spec = ((("large", "blue", "square", "top right"),), "black")
    executor = Executor(REGISTRY, env=SDEnvironment(models_dir=REPO / "models", output_dir=tmp_path, device="cpu",
                                                    dtype="fp32"))
    graph = ev.build_graph(ev.BUNDLED, 20, [ev.parse_patch("deepcache"), ev.parse_patch("guidance-interval")])
    images = ev.generate(executor, graph, ev.caption(spec), 5.0, 4, 1000)
    rights = [ev.score(spec, image)[0] for image in images]
    for attribute in ("colour", "shape", "position", "background"):
        assert sum(r[attribute] for r in rights) >= 3, (attribute, rights)
    assert shapes_data.analyse_image(images[0], 1)["objects"]
