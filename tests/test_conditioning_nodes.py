"""ComfyUI's conditioning nodes and what the sampler does with several conditionings: areas with
feathered weights, masks, strengths, timestep ranges, area twins on the other side, and batching
into UNet calls as ComfyUI batches them."""

from __future__ import annotations

import pytest
import torch

from nodes.conditioning import (
    ConditioningAverage,
    ConditioningCombine,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
    ConditioningSetMask,
    ConditioningSetTimestepRange,
    ConditioningZeroOut,
)
from nodes.core.values import ConditioningEntry, Latent
from nodes.models.configs import alphas_cumprod
from nodes.sampling import conds, ksampler
from nodes.sampling.model_sampling import ModelSampling
from tests.test_sampling_parity import ToyUNet, toy_model

MS = ModelSampling(alphas_cumprod())


def entry(value: float, tokens: int = 77, pooled: float | None = None) -> list[ConditioningEntry]:
    return [ConditioningEntry(cond=torch.full((1, tokens, 8), value),
                              pooled=None if pooled is None else torch.full((1, 4), pooled))]


def run(node, *args):
    return node().run(None, *args)[0]


# -- the nodes ---------------------------------------------------------------------------------------


def test_combine_keeps_both_entries_in_order():
    a, b = entry(0.1), entry(0.2)
    assert run(ConditioningCombine, a, b) == [a[0], b[0]]


def test_average_blends_tokens_cutting_or_zero_padding_the_source():
    to, longer, shorter = entry(1.0), entry(3.0, tokens=154), entry(3.0, tokens=10)
    out = run(ConditioningAverage, to, longer, 0.25)[0].cond
    assert out.shape == (1, 77, 8) and torch.allclose(out, torch.full_like(out, 0.25 + 0.75 * 3.0))
    padded = run(ConditioningAverage, to, shorter, 0.25)[0].cond
    assert torch.allclose(padded[:, :10], torch.full((1, 10, 8), 2.5))
    assert torch.allclose(padded[:, 10:], torch.full((1, 67, 8), 0.25))  # source padded with zeros


def test_average_blends_pooled_outputs_and_keeps_the_extras():
    to = [ConditioningEntry(cond=torch.ones(1, 77, 8), pooled=torch.ones(1, 4), extras={"strength": 0.5})]
    out = run(ConditioningAverage, to, entry(0.0, pooled=3.0), 0.5)[0]
    assert torch.allclose(out.pooled, torch.full((1, 4), 2.0)) and out.extras == {"strength": 0.5}


def test_concat_appends_the_first_source_entry_along_the_tokens():
    out = run(ConditioningConcat, entry(1.0) + entry(2.0), entry(5.0, tokens=10))
    assert [e.cond.shape[1] for e in out] == [87, 87]
    assert torch.equal(out[1].cond[:, 77:], torch.full((1, 10, 8), 5.0))


def test_zero_out_zeroes_hidden_states_and_pooled_output():
    out = run(ConditioningZeroOut, entry(0.7, pooled=0.3))[0]
    assert not out.cond.any() and not out.pooled.any() and out.cond.shape == (1, 77, 8)


def test_set_area_stores_latent_cells_and_leaves_the_input_alone():
    c = entry(0.1)
    out = run(ConditioningSetArea, c, 128, 256, 96, 64, 0.8)
    assert out[0].extras == {"area": (32, 16, 8, 12), "strength": 0.8, "set_area_to_bounds": False}
    assert c[0].extras == {} and out[0].cond is c[0].cond


def test_set_area_strength_and_timestep_range_add_to_the_extras():
    out = run(ConditioningSetAreaStrength, run(ConditioningSetTimestepRange, entry(0.1), 0.25, 0.75), 2.0)
    assert out[0].extras == {"start_percent": 0.25, "end_percent": 0.75, "strength": 2.0}


def test_percentage_area_resolves_against_the_latent_size():
    c = run(ConditioningSetAreaPercentage, entry(0.1), 0.25, 0.5, 0.0, 0.5, 1.0)[0]
    assert conds.resolve(c, (32, 48), MS, "cpu").area == (16, 12, 16, 0)
    tiny = run(ConditioningSetAreaPercentage, entry(0.1), 0.0, 0.0, 0.0, 0.0, 1.0)[0]
    assert conds.resolve(tiny, (32, 48), MS, "cpu").area == (1, 1, 0, 0)  # never smaller than one cell


def test_mask_is_resized_to_the_latent_and_mask_bounds_crops_to_its_box():
    mask = torch.zeros(64, 64)
    mask[8:24, 40:48] = 1.0  # 16×8 pixels of a 64×64 mask
    default = run(ConditioningSetMask, entry(0.1), mask, 0.5, "default")[0]
    resolved = conds.resolve(default, (32, 32), MS, "cpu")
    assert resolved.mask.shape == (1, 32, 32) and resolved.area is None and resolved.mask_strength == 0.5
    bounded = conds.resolve(run(ConditioningSetMask, entry(0.1), mask, 1.0, "mask bounds")[0], (32, 32), MS, "cpu")
    # the resized mask covers rows 4–11 and columns 20–23; the box is at least 8 cells each way
    assert bounded.area == (8, 8, 4, 20)


# -- weights ---------------------------------------------------------------------------------------------


def test_area_weight_ramps_at_edges_inside_the_image_only():
    c = conds.Cond(entry=entry(0.1)[0], area=(32, 16, 0, 0), strength=1.0)  # left half of a 32×32 latent
    chunk = conds.chunk_for(c, 0, torch.zeros(1, 4, 32, 32), torch.tensor([1.0]))
    assert chunk.x.shape == (1, 4, 32, 16)
    row = chunk.mult[0, 0, 5]
    # rr = min(8, 16 // 4) = 4 cells of ramp at the right edge; none at the image borders
    assert row[:12].eq(1).all() and torch.allclose(row[12:], torch.tensor([1.0, 0.75, 0.5, 0.25]))
    assert chunk.mult[0, 0, :, 0].eq(1).all()
    inner = conds.chunk_for(conds.Cond(entry=c.entry, area=(16, 16, 8, 12), strength=0.8), 0,
                            torch.zeros(1, 4, 32, 32), torch.tensor([1.0]))
    assert torch.allclose(inner.mult[0, 0, 8, :4], 0.8 * torch.tensor([0.25, 0.5, 0.75, 1.0]))


def test_masked_cond_is_weighted_by_mask_times_strength_without_feather():
    mask = torch.rand(1, 16, 16)
    c = conds.Cond(entry=entry(0.1)[0], mask=mask, mask_strength=0.5, strength=2.0, area=(8, 8, 4, 4))
    chunk = conds.chunk_for(c, 0, torch.zeros(2, 4, 16, 16), torch.tensor([1.0, 1.0]))
    assert chunk.mult.shape == (2, 4, 8, 8)
    assert torch.allclose(chunk.mult[1, 3], mask[0, 4:12, 4:12] * 0.5 * 2.0)


def test_predictions_are_summed_with_their_weights_and_normalised_per_cell():
    full = conds.Cond(entry=entry(0.0)[0])
    area = conds.Cond(entry=entry(1.0)[0], area=(4, 4, 0, 0), strength=3.0)  # top-left corner, no ramp inside
    x = torch.zeros(1, 1, 8, 8)

    def run_batch(chunks):  # each cond predicts its own constant
        return [torch.full_like(c.x, float(c.cond.entry.cond[0, 0, 0])) for c in chunks]

    (out,) = conds.calc_cond_batch(run_batch, [[full, area]], x, torch.tensor([1.0]))
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor(3.0 / 4.0))  # (0·1 + 1·3) / (1 + 3)
    assert out[0, 0, 7, 7] == 0.0
    rr = min(8, 4 // 4)  # a 4-cell area ramps over one cell: its weight there is 3 · 1/1
    assert rr == 1 and torch.allclose(out[0, 0, 3, 3], torch.tensor(0.75))


def test_a_side_with_nothing_active_predicts_zero():
    late = conds.Cond(entry=entry(1.0)[0], sigma_start=0.5)
    (out,) = conds.calc_cond_batch(lambda ch: [c.x + 1 for c in ch], [[late]], torch.ones(1, 1, 4, 4),
                                   torch.tensor([2.0]))
    assert not out.any()


# -- areas on both sides, batching -----------------------------------------------------------------------


def test_each_area_gets_a_twin_with_the_other_sides_prompt():
    positive = [entry(0.3)[0], run(ConditioningSetArea, entry(0.5), 128, 256, 0, 0, 1.0)[0],
                run(ConditioningSetArea, entry(0.7), 128, 128, 96, 64, 0.8)[0]]
    negative = entry(-0.2)
    sides = conds.process_conds({"positive": positive, "negative": negative}, (32, 32), MS, "cpu")
    neg = sides["negative"]
    assert [(c.area, c.strength) for c in neg] == [(None, 1.0), ((32, 16, 0, 0), 1.0), ((16, 16, 8, 12), 0.8)]
    assert all(c.entry is negative[0] for c in neg)
    assert len(sides["positive"]) == 3  # the negative twins have exact matches on the positive side


def test_the_smallest_covering_area_lends_its_prompt_to_a_twin():
    big = run(ConditioningSetArea, entry(-0.5), 256, 256, 0, 0, 1.0)[0]
    small = run(ConditioningSetArea, entry(-0.9), 128, 128, 0, 0, 1.0)[0]
    inner = run(ConditioningSetArea, entry(0.4), 64, 64, 64, 64, 1.0)[0]
    sides = conds.process_conds({"positive": [inner], "negative": [entry(0.0)[0], big, small]}, (32, 32), MS, "cpu")
    assert sides["negative"][-1].entry is small and sides["negative"][-1].area == (8, 8, 8, 8)


def test_area_composition_runs_three_unet_calls_per_step_as_comfyui_batches_it():
    shapes = []

    class Spy(ToyUNet):
        def __call__(self, x_in, timestep, encoder_hidden_states):
            shapes.append(tuple(x_in.shape))
            return super().__call__(x_in, timestep, encoder_hidden_states)

    model = toy_model()
    model.unet = Spy()
    positive = run(ConditioningCombine, run(ConditioningCombine, entry(0.3),
                                            run(ConditioningSetArea, entry(0.5), 128, 256, 0, 0, 1.0)),
                   run(ConditioningSetArea, entry(0.7), 128, 128, 96, 64, 0.8))
    out = ksampler.sample(model, positive, entry(-0.2), Latent(samples=torch.zeros(1, 4, 32, 32)), seed=42, steps=3,
                          cfg=7.0, sampler_name="euler", scheduler="normal")
    # full prompt + uncond share a call; each area with its negative twin is its own call
    assert shapes == [(2, 4, 32, 32), (2, 4, 32, 16), (2, 4, 16, 16)] * 3
    plain = ksampler.sample(toy_model(), entry(0.3), entry(-0.2), Latent(samples=torch.zeros(1, 4, 32, 32)), seed=42,
                            steps=3, cfg=7.0, sampler_name="euler", scheduler="normal")
    assert torch.allclose(out[..., 20:, 28:], plain[..., 20:, 28:])  # outside both areas: the full prompt alone
    assert not torch.allclose(out[..., :16], plain[..., :16], atol=1e-3)


def test_token_lengths_batch_by_their_repeat_to_the_first_waiting_chunk():
    x = torch.zeros(1, 4, 8, 8)
    lengths = [77, 154, 231, 385]  # vs 77: lcm ratios 2, 3, 5
    side = [conds.Cond(entry=entry(0.1, tokens=n)[0]) for n in lengths]
    batches = []
    conds.calc_cond_batch(lambda ch: batches.append([c.cond.entry.cond.shape[1] for c in ch]) or [c.x for c in ch],
                          [side], x, torch.tensor([1.0]))
    assert batches == [[77, 154, 231], [385]]


def test_timestep_range_switches_conditioning_at_its_sigma():
    seen = []

    class Spy(ToyUNet):
        def __call__(self, x_in, timestep, encoder_hidden_states):
            seen.append(sorted({round(float(v), 2) for v in encoder_hidden_states[:, 0, 0]}))
            return super().__call__(x_in, timestep, encoder_hidden_states)

    model = toy_model()
    model.unet = Spy()
    first = run(ConditioningSetTimestepRange, entry(0.5), 0.0, 0.5)
    second = run(ConditioningSetTimestepRange, entry(0.9), 0.5, 1.0)
    ksampler.sample(model, first + second, entry(-0.2), Latent(samples=torch.zeros(1, 4, 8, 8)), seed=1, steps=10,
                    cfg=7.0, sampler_name="euler", scheduler="normal")
    assert MS.percent_to_sigma(0.5) == pytest.approx(1.6156, abs=1e-4)
    # normal/10 steps: sigmas 14.6 … 1.95 (steps 0–4) are above 1.6156, 1.34 … (steps 5–9) below
    assert seen == [[-0.2, 0.5]] * 5 + [[-0.2, 0.9]] * 5


def test_diffusers_sampler_refuses_conditioning_it_cannot_place():
    from nodegraph import NodeInputError
    from nodes.samplers import DiffusersSampler

    placed = run(ConditioningSetArea, entry(0.3), 64, 64, 0, 0, 1.0)
    with pytest.raises(NodeInputError, match="areas, masks, time ranges.*this one has area"):
        DiffusersSampler().run(None, toy_model(), 1, 4, 5.0, "EulerDiscreteScheduler", "default", placed, entry(0.0),
                               Latent(samples=torch.zeros(1, 4, 8, 8)), 1.0)


def test_entries_with_different_controlnet_hints_never_share_a_unet_call():
    hint = object()
    plain = conds.Cond(entry=entry(0.1)[0])
    controlled = conds.Cond(entry=ConditioningEntry(cond=torch.full((1, 77, 8), 0.2), extras={"control": hint}))
    same_hint = conds.Cond(entry=ConditioningEntry(cond=torch.full((1, 77, 8), 0.3), extras={"control": hint}))
    batches = []
    conds.calc_cond_batch(lambda ch: batches.append(len(ch)) or [c.x for c in ch], [[plain, controlled], [same_hint]],
                          torch.zeros(1, 4, 8, 8), torch.tensor([1.0]))
    assert batches == [1, 2]
