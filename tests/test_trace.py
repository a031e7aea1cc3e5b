"""The explain trace (nodes/sampling/trace.py, nodes/explain_trace.py): what it records is what the
sampler did, recording changes nothing, and the attention maps point where the words were drawn."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nodegraph import NodeInputError
from nodes.core.values import ConditioningEntry, DiffusionModel, Latent
from nodes.sampling import ksampler
from nodes.sampling.trace import TraceRecorder, combined_attention, record_sampling

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "models" / "checkpoints" / "sdgraph-shapes.safetensors"
CFG = 4.0


def _alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


@pytest.fixture(scope="module")
def tiny():
    """A tiny random SD-shaped UNet (eps and v-prediction MODELs sharing it) and two random prompts."""
    from nodes.models.testing import tiny_components

    unet, _, _ = tiny_components(0)
    eps = DiffusionModel(unet=unet, alphas_cumprod=_alphas_cumprod(), dtype=torch.float32, device=torch.device("cpu"))
    v = DiffusionModel(unet=unet, alphas_cumprod=_alphas_cumprod(), prediction_type="v_prediction",
                       dtype=torch.float32, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    pos = [ConditioningEntry(cond=torch.randn(1, 77, 32, generator=g))]
    neg = [ConditioningEntry(cond=torch.randn(1, 77, 32, generator=g))]
    return SimpleNamespace(eps=eps, v=v, pos=pos, neg=neg)


def _run(tiny, model=None, sampler="euler", steps=5, cfg=CFG, attention=False, dtype=torch.float32):
    model = model or tiny.eps
    return record_sampling(model, tiny.pos, tiny.neg, Latent(torch.zeros(1, 4, 8, 8)), seed=3, steps=steps, cfg=cfg,
                           sampler_name=sampler, scheduler="normal", record_attention=attention, dtype=dtype)


def _plain(tiny, model=None, sampler="euler", steps=5, cfg=CFG):
    return ksampler.sample(model or tiny.eps, tiny.pos, tiny.neg, Latent(torch.zeros(1, 4, 8, 8)), seed=3, steps=steps,
                           cfg=cfg, sampler_name=sampler, scheduler="normal")


# -- recording changes nothing ---------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "heun", "dpmpp_2m_sde"])
def test_recording_leaves_the_latent_bit_identical(tiny, sampler):
    plain = _plain(tiny, sampler=sampler)
    traced, trace = _run(tiny, sampler=sampler, attention=True, dtype=torch.float16)
    assert torch.equal(plain, traced)
    assert len(trace.steps) == 5


def test_the_attention_processors_are_restored_even_when_sampling_fails(tiny):
    unet = tiny.eps.unet
    before = dict(unet.attn_processors)
    recorder = TraceRecorder(record_attention=True)
    with pytest.raises(RuntimeError, match="stop"), recorder.attention_on(unet):
        assert any(type(p).__name__ == "_AttentionRecorder" for p in unet.attn_processors.values())
        raise RuntimeError("stop")
    after = unet.attn_processors
    assert all(after[name] is proc for name, proc in before.items())


# -- the numbers are the sampler's -----------------------------------------------------------------

def _close(a, b, scale=1.0):
    return torch.allclose(a.float(), b.float(), atol=2e-5 * scale, rtol=1e-5)


def test_eps_model_steps_satisfy_x0_equals_x_minus_sigma_eps(tiny):
    _, trace = _run(tiny)
    for step in trace.steps:
        call, s = step.main, step.sigma_from
        assert call.sigma == pytest.approx(s) and torch.equal(call.x, step.x)
        assert _close(call.cond_x0, step.x - s * call.pred_cond, s)
        assert _close(call.uncond_x0, step.x - s * call.pred_uncond, s)
        guided_eps = call.pred_uncond + CFG * (call.pred_cond - call.pred_uncond)
        assert _close(step.denoised, step.x - s * guided_eps, s)
        assert _close(step.eps, guided_eps, float(step.x.abs().max()) / s)  # the guided ε̂ the viewers show
    assert [s.sigma_from for s in trace.steps] == pytest.approx(trace.sigmas[:-1])
    assert [s.t for s in trace.steps][0] == 999.0


def test_v_model_steps_satisfy_the_v_form(tiny):
    _, trace = _run(tiny, model=tiny.v)
    assert trace.prediction_type == "v_prediction"
    for step in trace.steps:
        call, s = step.main, step.sigma_from
        # x̂₀ = x/(σ²+1) − v̂·σ/√(σ²+1)  (sampler space, σ_data = 1)
        for x0, v in ((call.cond_x0, call.pred_cond), (call.uncond_x0, call.pred_uncond)):
            assert _close(x0, step.x / (s * s + 1) - v * s / math.sqrt(s * s + 1), s)
        # and not the ε form: the test tells the two apart
        assert not _close(call.cond_x0, step.x - s * call.pred_cond, s)


def test_guided_prediction_is_uncond_plus_cfg_times_the_difference(tiny):
    _, trace = _run(tiny)
    for step in trace.steps:
        call = step.main
        assert _close(step.denoised, call.uncond_x0 + CFG * (call.cond_x0 - call.uncond_x0))
        assert not _close(call.cond_x0, call.uncond_x0)  # two different prompts


def test_cfg_one_records_no_uncond_pass(tiny):
    _, trace = _run(tiny, cfg=1.0, steps=2)
    assert all(s.main.uncond_x0 is None and s.main.pred_uncond is None for s in trace.steps)
    assert torch.equal(trace.steps[0].denoised, trace.steps[0].main.cond_x0)


def test_updates_chain_the_steps_and_the_last_state_is_the_returned_latent(tiny):
    samples, trace = _run(tiny)
    for step, nxt in zip(trace.steps, trace.steps[1:], strict=False):
        assert _close(step.x + step.update, nxt.x, step.sigma_from)
    last = trace.steps[-1]
    assert _close(trace.final, last.x + last.update)
    assert torch.equal(tiny.eps.latent_format.from_sampler(trace.final)[None], samples)
    # Euler's update is d·Δσ with d = (x − x̂₀)/σ
    for step in trace.steps:
        assert _close(step.update, step.eps * (step.sigma_to - step.sigma_from), step.sigma_from)


def test_heun_records_its_second_model_call_under_the_step(tiny):
    _, trace = _run(tiny, sampler="heun")
    assert [len(s.calls) for s in trace.steps] == [2, 2, 2, 2, 1]  # the last step (to σ 0) is an Euler step
    for step in trace.steps[:-1]:
        second = step.calls[1]
        assert second.sigma == pytest.approx(step.sigma_to)
        d = (step.x - step.denoised) / step.sigma_from
        assert _close(second.x, step.x + d * (step.sigma_to - step.sigma_from), step.sigma_from)
        d2 = (second.x - second.denoised) / second.sigma
        assert _close(step.update, (d + d2) / 2 * (step.sigma_to - step.sigma_from), step.sigma_from)


def test_ancestral_noise_is_what_the_step_added_beyond_its_euler_part(tiny):
    from nodes.sampling.samplers import ancestral_step

    _, trace = _run(tiny, sampler="euler_ancestral")
    assert trace.steps[-1].noise is None  # the step to σ 0 adds none
    for step in trace.steps[:-1]:
        down, up = ancestral_step(torch.tensor(step.sigma_from), torch.tensor(step.sigma_to))
        deterministic = (step.x - step.denoised) / step.sigma_from * (float(down) - step.sigma_from)
        assert _close(step.update - step.noise, deterministic, step.sigma_from)
        assert float(step.noise.std()) == pytest.approx(float(up), rel=0.5)  # unit noise × σ_up (64·4 samples)


def test_the_trace_is_stored_compactly_on_the_cpu(tiny):
    _, trace = _run(tiny, attention=True, dtype=torch.float16, steps=4)
    tensors = [t for s in trace.steps for c in s.calls
               for t in (c.x, c.denoised, c.cond_x0, c.uncond_x0, c.pred_cond, c.pred_uncond, *c.attention.values())]
    assert all(t.dtype == torch.float16 and t.device.type == "cpu" for t in tensors)
    # Per step: at most 10 latent-sized tensors plus one [77, h, w] map per UNet resolution, 2 bytes each;
    # so a 30-step SD 1.5 trace at 512² (64² latent, 4 resolutions) stays near 33 MB.
    per_step_attention = sum(m.numel() for m in trace.steps[0].attention.values())
    bound = len(trace.steps) * (10 * 4 * 8 * 8 + per_step_attention) * 2
    assert trace.cache_nbytes() <= bound
    assert per_step_attention == 77 * (8 * 8 + 4 * 4)  # the tiny UNet's two attention resolutions


# -- attention --------------------------------------------------------------------------------------

def test_each_pixel_distributes_its_attention_over_the_77_tokens(tiny):
    _, trace = _run(tiny, attention=True, steps=3)
    assert trace.attention_sum_error < 1e-5  # float32, every layer, before anything is dropped
    maps = combined_attention(trace)  # [steps, 77, 8, 8], stored as float16
    assert maps.shape == (3, 77, 8, 8)
    assert torch.allclose(maps.sum(dim=1), torch.ones(3, 8, 8), atol=2e-3)
    assert float(maps.min()) >= 0


@pytest.fixture(scope="module")
def bundled():
    assert BUNDLED.is_file(), f"the bundled model is missing: {BUNDLED}"
    from nodes.models.loader import load_checkpoint

    model, clip, vae = load_checkpoint(BUNDLED, device="cpu")
    return SimpleNamespace(model=model, clip=clip, vae=vae)


def _shape_region(image) -> torch.Tensor | None:
    """The drawn shape's pixels: the largest blob far from the border's colour (shapes_data's rule)."""
    sys.path.insert(0, str(REPO / "tools"))
    import shapes_data

    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    fg = np.sqrt(((a - np.median(border, axis=0)) ** 2).sum(-1)) > 60
    blobs = sorted(shapes_data._components(fg), key=lambda b: -b.sum())
    return torch.from_numpy(blobs[0]) if blobs and blobs[0].sum() >= 12 else None


def test_the_shape_word_attends_where_the_shape_is_drawn(bundled):
    """The shape word's summed map (summed_attention: the 8×8 level, the steps from σ ≤ 1 on, one
    value per latent cell) against the pixels the shape was drawn on, for the first prompt of each
    shape in the bundled eval's seen split, with its seed: on average at least 40 % of the word's
    mass lies in the shape, and each shape gets well over twice a uniform map's share (its area:
    about 17 % of the picture for circles and squares, 9 % for triangles and stars).
    tools/measure_attention.py measures all 32 seen prompts at 20 steps (0.50 on average)."""
    from nodes.imaging.tiles import image_to_pils
    from nodes.imaging.vae import decode
    from nodes.sampling.trace import summed_attention
    from nodes.text import encode_tokens, tokenize

    sys.path.insert(0, str(REPO / "tools"))
    import eval_bundled_model as ev

    clip = bundled.clip
    negative = encode_tokens(clip, tokenize(clip.tokenizer, "", pad_id=clip.pad_id))
    seen = ev.prompt_list()["seen"]
    first = {}  # shape -> index of its first seen prompt (the eval's seed is 1000 + index)
    for i, spec in enumerate(seen):
        first.setdefault(spec[0][0][2], i)
    assert len(first) == 4
    measured = {}
    for shape, i in first.items():
        tokens = tokenize(clip.tokenizer, ev.caption(seen[i]), pad_id=clip.pad_id)
        words = [w for chunk in tokens.words for w in chunk]
        samples, trace = record_sampling(bundled.model, encode_tokens(clip, tokens), negative,
                                         Latent(torch.zeros(1, 4, 8, 8)), seed=1000 + i, steps=12, cfg=5.0,
                                         sampler_name="euler", scheduler="normal", record_attention=True, words=words)
        region = _shape_region(image_to_pils(decode(bundled.vae, samples))[0])
        assert region is not None, f"no {shape} was drawn"
        maps = combined_attention(trace, size=(64, 64))[:, words.index(shape)]  # [steps, 64, 64]
        total = summed_attention(trace, maps)  # [64, 64]
        measured[shape] = (float(total[region].sum() / total.sum()), float(region.float().mean()))
    assert np.mean([share for share, _area in measured.values()]) >= 0.4, measured
    assert all(share > 2.5 * area for share, area in measured.values()), measured


def test_the_summed_map_adds_up_the_steps_from_sigma_one_on(tiny):
    from nodes.sampling.trace import attention_resolutions, decided_steps, summed_attention

    _, trace = _run(tiny, attention=True, steps=8)
    kept = decided_steps(trace)
    assert kept == [i for i, s in enumerate(trace.steps) if s.sigma_from <= 1.0] and 0 < len(kept) < 8
    maps = combined_attention(trace)
    assert torch.allclose(summed_attention(trace), maps[kept].sum(dim=0))
    assert set(trace.steps[0].attention) == {(8, 8), (4, 4)}
    assert attention_resolutions(trace) == [(8, 8)]  # a 4×4 map is too coarse to say where a word went
    only_8 = combined_attention(trace, resolutions=[(8, 8)])
    assert torch.equal(maps, only_8) and not torch.equal(maps, combined_attention(trace, resolutions=[(4, 4)]))


# -- the nodes --------------------------------------------------------------------------------------

class Ctx:
    """The parts of NodeContext the explain nodes use."""

    compile = None  # the run's compile setting: off

    def __init__(self, temp: Path):
        self.node_id = "7"
        self.paths = SimpleNamespace(temp=temp)
        self.progress_calls: list[tuple[int, int]] = []

    def progress(self, step, total):
        self.progress_calls.append((step, total))

    def preview(self, image, step=0):
        pass

    def check_cancelled(self):
        pass


def test_ksampler_trace_node_gives_the_editor_its_view(bundled, tmp_path):
    from nodes.explain_trace import CFGInspector, CrossAttentionMaps, KSamplerTrace, TraceFilmstrip
    from nodes.samplers import KSampler
    from nodes.text import encode_tokens, tokenize

    clip = bundled.clip
    tokens = tokenize(clip.tokenizer, "a large red circle at the top left on a white background", pad_id=clip.pad_id)
    positive = encode_tokens(clip, tokens)
    negative = encode_tokens(clip, tokenize(clip.tokenizer, "", pad_id=clip.pad_id))
    args = (bundled.model, 5, 4, 5.0, "euler", "karras", positive, negative, Latent(torch.zeros(1, 4, 8, 8)), 1.0)
    ctx = Ctx(tmp_path)
    out = KSamplerTrace().run(ctx, *args, True, tokens)
    (latent, trace), ui = out.values, out.ui
    assert torch.equal(latent.samples, KSampler().run(Ctx(tmp_path), *args)[0].samples)
    assert ctx.progress_calls[-1] == (4, 4)
    [view] = ui["trace"]
    assert [s["index"] for s in view["steps"]] == [0, 1, 2, 3]
    assert view["steps"][0]["sigma_from"] == pytest.approx(trace.sigmas[0])
    assert set(view["tiles"]) == {"x_t", "denoised", "eps", "update"} == set(view["row_labels"])
    assert all(len(paths) == 4 and all(Path(p).is_file() for p in paths) for paths in view["tiles"].values())
    assert view["schedule"]["active"] == "karras"
    assert view["schedule"]["sigmas"]["karras"] == pytest.approx(trace.sigmas)
    assert len(view["schedule"]["sigmas"]) >= 5
    assert view["tokens"][:4] == ["a", "large", "red", "circle"] and view["tokens"][-1] == "<end>"
    with np.load(view["attention"]) as data:
        assert data["maps"].shape == (4, len(view["tokens"]), 8, 8) and data["maps"].dtype == np.float32
        kept = [i for i, s in enumerate(view["steps"]) if s["sigma_from"] <= 1.0]
        assert list(data["total_steps"]) == kept and kept
        assert np.allclose(data["total"], data["maps"][kept].sum(axis=0))
    assert view["image_size"] == [64, 64]

    film = TraceFilmstrip().run(ctx, trace, "x_t, x0, eps, update", "latent preview", 1)[0]
    assert film.ndim == 4 and film.shape[0] == 1 and film.shape[2] > 4 * 128  # four step columns
    maps = CrossAttentionMaps().run(ctx, trace, 0, 24)[0]
    assert maps.shape[0] == 1 and maps.shape[1] >= 2 * 128  # 13 tokens: two rows of tiles
    figure = CFGInspector().run(ctx, trace, "1, 4", "x0", bundled.vae)[0]
    assert figure.shape[0] == 1 and figure.shape[1] > 2 * 128
    with pytest.raises(NodeInputError, match="vae"):
        TraceFilmstrip().run(ctx, trace, "x0", "vae", 1)
    with pytest.raises(NodeInputError, match="steps"):
        CFGInspector().run(ctx, trace, "1, 9", "x0")
    long_prompt = tokenize(clip.tokenizer, " ".join(["a red circle"] * 30), pad_id=clip.pad_id)  # two chunks
    with pytest.raises(NodeInputError, match="154 positions") as refused:
        KSamplerTrace().run(ctx, *args, True, long_prompt)
    assert refused.value.input_name == "tokens"
    with pytest.raises(NodeInputError, match="record_attention"):
        CrossAttentionMaps().run(ctx, KSamplerTrace().run(ctx, *args, False).values[1], 0, 24)
