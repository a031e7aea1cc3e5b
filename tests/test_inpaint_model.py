"""Inpainting checkpoints (9-channel UNets) and InpaintModelConditioning, as ComfyUI runs them: the
UNet reads [x, mask, masked-image latent] on the channel axis, per conditioning entry.

Layouts are checked on the real SD 1.5 / SDXL manifests (meta tensors); the mechanics on a tiny
random-weight model: its stored inputs against an independent computation, one UNet call against
diffusers' StableDiffusionInpaintPipeline, a KSampler run against a hand-built Euler loop, and the
stand-ins ComfyUI uses when an entry carries no inpainting inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nodegraph import REGISTRY, NodeInputError
from nodes.core.values import (
    ConditioningEntry,
    DiffusionModel,
    Latent,
    LatentFormat,
    VaeModel,
    conditioning_set_values,
)
from nodes.models import CheckpointError, load_checkpoint
from nodes.models.configs import alphas_cumprod
from nodes.models.convert import UNET_PREFIX
from nodes.models.detect import detect_checkpoint
from nodes.models.loader import configs_for, convert_state_dict
from nodes.models.testing import manifest_state_dict, tiny_components
from nodes.sampling.concat import BLANK_INPAINT_LATENT
from nodes.sampling.ksampler import UNetCaller, model_sampling_for, sample, sigmas_for
from tests.shared import FIXTURES

REGISTRY.discover("nodes")
SCALE = 0.18215
UNET_IN = UNET_PREFIX + "input_blocks.0.0.weight"
CTX = type("Ctx", (), {"check_cancelled": staticmethod(lambda: None)})()


def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def _model(unet) -> DiffusionModel:
    return DiffusionModel(unet=unet, alphas_cumprod=alphas_cumprod(), dtype=torch.float32, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny():
    """A tiny inpainting model (9-channel UNet) and a 4-channel one of the same shape, with a VAE."""
    unet9, vae, te = tiny_components(0, unet_overrides={"in_channels": 9})
    unet4 = tiny_components(0)[0]
    return {"model9": _model(unet9), "model4": _model(unet4), "vae": VaeModel(vae, LatentFormat(), torch.float32,
            torch.device("cpu")), "components": (unet9, vae, te)}


def _prompts(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ConditioningEntry(torch.randn(1, 77, 32, generator=g))], [ConditioningEntry(torch.randn(1, 77, 32, generator=g))]


def _image_and_mask(h=64, w=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, h, w, 3, generator=g)
    mask = torch.zeros(h, w)
    mask[16:48, 8:40] = 1.0
    return pixels, mask


def inpaint_conditioning(tiny, pixels, mask, noise_mask=True, seed=0):
    pos, neg = _prompts(seed)
    return REGISTRY.get("InpaintModelConditioning")().run(CTX, pos, neg, tiny["vae"], pixels, mask, noise_mask)


class UNetInputs:
    """Records every input a module's forward receives (its first positional argument)."""

    def __init__(self, module):
        self.seen: list[torch.Tensor] = []
        self.handle = module.register_forward_pre_hook(lambda _m, args: self.seen.append(args[0].detach().clone()))

    def __enter__(self):
        return self.seen

    def __exit__(self, *exc):
        self.handle.remove()


def _latent_mask(mask_bhw: torch.Tensor, hw=(8, 8)) -> torch.Tensor:
    """A pixel mask at the latent's size as ComfyUI's concat_cond makes it: bilinear, rounded."""
    return F.interpolate(mask_bhw.reshape(-1, 1, *mask_bhw.shape[-2:]).float(), size=hw, mode="bilinear").round()


# -- detection and loading -------------------------------------------------------------------------


@pytest.mark.parametrize("manifest, family, description", [("sd15", "sd1", "SD 1.x inpainting"),
                                                           ("sdxl", "sdxl", "SDXL inpainting")])
def test_inpainting_checkpoints_are_detected_and_every_tensor_fills_a_9_channel_unet(manifest, family, description):
    from nodes.models.build import empty_unet, fill

    sd = manifest_state_dict(FIXTURES / f"{manifest}_manifest.tsv")
    out_ch, _, kh, kw = sd[UNET_IN].shape
    sd[UNET_IN] = torch.empty((out_ch, 9, kh, kw), dtype=torch.float16, device="meta")
    info = detect_checkpoint(_shapes(sd), {}, lambda name: torch.zeros(320), f"{manifest}-inpainting.safetensors")
    assert (info.family, info.description, info.in_channels, info.inpainting) == (family, description, 9, True)
    cfg = configs_for(info, _shapes(sd))
    assert cfg.unet["in_channels"] == 9 and cfg.unet["out_channels"] == 4
    conv = convert_state_dict(sd, info, cfg)
    assert conv.unused == []
    unet = fill(empty_unet(cfg.unet), conv.unet, what="UNet", filename=manifest, device="meta")
    assert tuple(unet.conv_in.weight.shape) == (out_ch, 9, kh, kw)
    plain = detect_checkpoint(_shapes(manifest_state_dict(FIXTURES / f"{manifest}_manifest.tsv")), {},
                              lambda name: torch.zeros(320), "plain.safetensors")
    assert plain.in_channels == 4 and not plain.inpainting and "inpainting" not in plain.description


@pytest.mark.parametrize("channels, what", [(8, "an InstructPix2Pix"), (7, "a UNet with 7 input channels")])
def test_unets_of_other_input_widths_are_refused_saying_what_they_are(channels, what):
    shapes = _shapes(manifest_state_dict(FIXTURES / "sd15_manifest.tsv"))
    shapes[UNET_IN] = (320, channels, 3, 3)
    with pytest.raises(CheckpointError, match=rf'"odd.safetensors" is {what}.*only text-to-image \(4-channel\) '
                                              r"and inpainting \(9-channel\)"):
        detect_checkpoint(shapes, {}, lambda name: torch.zeros(320), "odd.safetensors")


def test_a_tiny_inpainting_model_in_single_file_names_and_as_a_diffusers_folder_loads_as_a_9_channel_model(
        tiny, tmp_path):
    from safetensors import safe_open

    from nodes.models.testing import write_tiny_checkpoint, write_tiny_diffusers_folder

    unet, vae, te = tiny["components"]
    single = write_tiny_checkpoint(tmp_path / "tiny-inpainting.safetensors", components=(unet, vae, te))
    with safe_open(str(single), "pt") as f:  # the original LDM names, the mask and image on conv_in's inputs
        assert tuple(f.get_slice(UNET_IN).get_shape()) == (32, 9, 3, 3)
    folder = write_tiny_diffusers_folder(tmp_path / "tiny-inpainting", components=(unet, vae, te))
    for path in (single, folder):
        model = load_checkpoint(path)[0]
        assert model.unet.config.in_channels == 9
        assert all(torch.equal(a, b) for a, b in zip(model.unet.state_dict().values(), unet.state_dict().values(),
                                                     strict=True))
    from nodes.models.files import TensorFile

    with TensorFile(single) as f:
        info = detect_checkpoint(f.shapes, f.metadata, f.get, f.name)
    assert (info.description, info.in_channels) == ("sdgraph inpainting model", 9)


# -- InpaintModelConditioning ----------------------------------------------------------------------


def test_inpaint_model_conditioning_stores_comfyuis_mask_and_masked_image_latent(tiny):
    vae = tiny["vae"].vae
    g = torch.Generator().manual_seed(4)
    pixels = torch.rand(1, 70, 67, 3, generator=g)  # not multiples of 8: centre-cropped to 64 × 64
    small_mask = (torch.rand(1, 35, 30, generator=g) > 0.6).float()  # resized bilinear to the image
    pos, neg = _prompts()
    p2, n2, latent = REGISTRY.get("InpaintModelConditioning")().run(CTX, pos, neg, tiny["vae"], pixels, small_mask,
                                                                    True)
    # Independently: the mask at pixel size, cropped like the image (rows 3..66, columns 1..64).
    mask = F.interpolate(small_mask[:, None], size=(70, 67), mode="bilinear")[:, :, 3:67, 1:65]
    image = pixels[:, 3:67, 1:65]
    greyed = torch.where(mask.round().squeeze(1)[..., None] == 1, torch.full_like(image, 0.5), image)

    def encode(img):
        with torch.no_grad():
            return vae.encode(img.movedim(-1, 1) * 2 - 1).latent_dist.mode()

    for entries in (p2, n2):
        assert entries[0].extras["concat_mask"].shape == (1, 1, 64, 64)
        assert torch.equal(entries[0].extras["concat_mask"], mask)  # unrounded: the sampler rounds it
        assert torch.allclose(entries[0].extras["concat_latent_image"], encode(greyed), atol=1e-5)
    assert torch.equal(p2[0].cond, pos[0].cond) and "concat_mask" not in pos[0].extras  # inputs left as they were
    assert torch.allclose(latent.samples, encode(image), atol=1e-5)  # the whole image, unmasked
    assert torch.equal(latent.noise_mask, mask)
    assert (0 < mask).logical_and(mask < 1).any()  # the test mask does have soft edges to round
    off = REGISTRY.get("InpaintModelConditioning")().run(CTX, pos, neg, tiny["vae"], pixels, small_mask, False)[2]
    assert off.noise_mask is None and torch.equal(off.samples, latent.samples)


def test_a_mask_batch_that_fits_no_image_batch_is_refused_naming_the_mask(tiny):
    from nodegraph import NodeInputError

    pixels = torch.rand(3, 64, 64, 3)
    with pytest.raises(NodeInputError, match="2 masks for 3 images"):
        inpaint_conditioning(tiny, pixels, torch.zeros(2, 64, 64))


# -- sampling ------------------------------------------------------------------------------------


def test_one_unet_call_matches_diffusers_inpaint_pipeline(tiny):
    """The same step through diffusers' StableDiffusionInpaintPipeline and through our UNet caller
    with InpaintModelConditioning's conditioning: the same 9-channel input, the same ε."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline
    from PIL import Image

    from nodes.models import configs

    unet, vae, te = tiny["components"]
    pixels, mask = _image_and_mask()
    scheduler = EulerDiscreteScheduler.from_config(configs.component_config(configs.SD15_DIR, "scheduler"))
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=te, tokenizer=configs.clip_tokenizer(), unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    image = Image.fromarray((pixels[0].numpy() * 255).round().astype(np.uint8))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)[None]  # what the pipeline sees
    p2, n2, _ = inpaint_conditioning(tiny, pixels, mask)
    mask_image = Image.fromarray((mask.numpy() * 255).astype(np.uint8))
    # The masked image through diffusers' own preprocessing (−1..1, masked pixels 0) and the VAE's mean.
    init = pipe.image_processor.preprocess(image)
    masked = init * (pipe.mask_processor.preprocess(mask_image) < 0.5)
    with torch.no_grad():
        reference = vae.encode(masked).latent_dist.mode()
    assert torch.allclose(p2[0].extras["concat_latent_image"], reference, atol=1e-5)

    calls = []
    hook = unet.register_forward_hook(lambda _m, args, kwargs, out: calls.append(
        (args[0].clone(), args[1], kwargs["encoder_hidden_states"].clone(), out[0].clone())), with_kwargs=True)
    try:
        pipe(prompt_embeds=p2[0].cond, negative_prompt_embeds=n2[0].cond, image=image, mask_image=mask_image,
             masked_image_latents=reference * SCALE, num_inference_steps=2, guidance_scale=5.0, output_type="latent",
             generator=torch.Generator().manual_seed(0))
        sample_in, t, context, eps = calls[1]  # the second step: [uncond, cond], each [x, mask, image]
        ours = UNetCaller(tiny["model9"])(sample_in[:, :4], torch.as_tensor(t).float().expand(2), context,
                                          [(n2[0], 1), (p2[0], 1)], (8, 8))
    finally:
        hook.remove()
    assert sample_in.shape == (2, 9, 8, 8)
    assert torch.allclose(calls[2][0], sample_in, atol=1e-6)  # our call built the same 9-channel input
    assert torch.allclose(ours, eps, atol=1e-5)


def test_ksampler_on_an_inpainting_model_follows_a_hand_built_euler_loop(tiny):
    model = tiny["model9"]
    pixels, mask = _image_and_mask()
    mask[40:44, 30:33] = 0.5  # a soft patch: the noise mask keeps it, the UNet's mask rounds it
    p2, n2, latent = inpaint_conditioning(tiny, pixels, mask)
    out = sample(model, p2, n2, latent, seed=3, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal")

    # 1. ComfyUI's inputs: the start noise from the seed, the scaled latent, the blend mask (bilinear,
    #    unrounded) and the UNet's concat channels (rounded mask, scaled masked-image latent).
    ms, sigmas = model_sampling_for(model), sigmas_for(model, "normal", "euler", 2)
    noise = torch.randn(latent.samples.shape, generator=torch.manual_seed(3))
    start = latent.samples * SCALE
    blend = F.interpolate(latent.noise_mask, size=(8, 8), mode="bilinear").repeat(1, 4, 1, 1)
    concat = torch.cat([_latent_mask(p2[0].extras["concat_mask"]), p2[0].extras["concat_latent_image"] * SCALE], 1)
    context = torch.cat([p2[0].cond, n2[0].cond])
    # 2. Euler steps around the masked, guided denoiser.
    x = start + noise * (1 + sigmas[0] ** 2) ** 0.5
    with torch.no_grad():
        for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            xb = x * blend + (start + s * noise) * (1 - blend)
            x_in = torch.cat([xb / (s**2 + 1) ** 0.5, concat], 1).repeat(2, 1, 1, 1)
            eps = model.unet(x_in, ms.timestep(s.reshape(1)).float().expand(2), encoder_hidden_states=context).sample
            cond, uncond = xb - s * eps[:1], xb - s * eps[1:]
            denoised = (uncond + (cond - uncond) * 4.0) * blend + start * (1 - blend)
            x = x + (x - denoised) / s * (s_next - s)
    assert torch.allclose(out, x / SCALE, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, sample(tiny["model4"], p2, n2, latent, seed=3, steps=2, cfg=4.0,
                                          sampler_name="euler", scheduler="normal"))


def test_entries_without_inpainting_inputs_get_comfyuis_stand_ins(tiny):
    """No concat inputs on the entry: the run's noise mask and input latent, or (without a noise
    mask) a mask of ones over the blank image."""
    from nodes.core.values import Latent

    model = tiny["model9"]
    pos, neg = _prompts()
    with UNetInputs(model.unet) as seen:
        sample(model, pos, neg, Latent(torch.zeros(1, 4, 8, 8)), seed=1, steps=1, cfg=3.0, sampler_name="euler",
               scheduler="normal")
    blank = torch.tensor(BLANK_INPAINT_LATENT).reshape(1, 4, 1, 1).expand(2, 4, 8, 8)
    assert torch.equal(seen[0][:, 4], torch.ones(2, 8, 8)) and torch.allclose(seen[0][:, 5:], blank)

    g = torch.Generator().manual_seed(2)
    raw = torch.randn(1, 4, 8, 8, generator=g)
    noise_mask = torch.rand(1, 1, 64, 64, generator=g)
    with UNetInputs(model.unet) as seen:
        sample(model, pos, neg, Latent(raw, noise_mask=noise_mask), seed=1, steps=1, cfg=3.0, sampler_name="euler",
               scheduler="normal")
    assert torch.equal(seen[0][:, 4:5], _latent_mask(noise_mask).repeat(2, 1, 1, 1))
    assert torch.allclose(seen[0][:, 5:], (raw * SCALE).repeat(2, 1, 1, 1))


def test_each_entry_of_a_batched_call_reads_its_own_inputs_cut_to_its_area(tiny):
    model = tiny["model9"]
    pixels, mask_a = _image_and_mask()
    mask_b = torch.zeros(64, 64)
    mask_b[40:64, 48:64] = 1.0
    a, n, latent = inpaint_conditioning(tiny, pixels, mask_a, noise_mask=False)
    b = inpaint_conditioning(tiny, pixels.flip(1), mask_b, noise_mask=False)[0]
    plain_negative = _prompts(5)[1]
    full = {name: torch.cat([_latent_mask(e[0].extras["concat_mask"]), e[0].extras["concat_latent_image"] * SCALE], 1)
            for name, e in (("a", a), ("b", b))}
    ones_blank = torch.cat([torch.ones(1, 1, 8, 8), torch.tensor(BLANK_INPAINT_LATENT).reshape(1, 4, 1, 1).expand(
        1, 4, 8, 8)], 1)

    # 1. Two prompts and a plain negative share one call (ComfyUI batches them), each with its inputs.
    with UNetInputs(model.unet) as seen:
        sample(model, a + b, plain_negative, latent, seed=1, steps=1, cfg=3.0, sampler_name="euler", scheduler="normal")
    assert len(seen) == 1 and seen[0].shape == (3, 9, 8, 8)
    for k, want in enumerate((full["a"], full["b"], ones_blank)):
        assert torch.allclose(seen[0][k:k + 1, 4:], want, atol=1e-6), k

    # 2. An entry with an area runs on its crop with its inputs cut to it; the negative side's twin for
    #    that area (the plain negative prompt) is batched with it and gets the stand-ins, cut alike.
    a_area = conditioning_set_values(a, {"area": (4, 4, 2, 2), "strength": 1.0})
    with UNetInputs(model.unet) as seen:
        sample(model, a_area + b, plain_negative, latent, seed=1, steps=1, cfg=3.0, sampler_name="euler",
               scheduler="normal")
    crop, whole = (seen[0], seen[1]) if seen[0].shape[-1] == 4 else (seen[1], seen[0])
    assert crop.shape == (2, 9, 4, 4) and whole.shape == (2, 9, 8, 8)
    assert torch.allclose(crop[:1, 4:], full["a"][:, :, 2:6, 2:6], atol=1e-6)
    assert torch.allclose(crop[1:, 4:], ones_blank[:, :, 2:6, 2:6], atol=1e-6)
    assert torch.allclose(whole[:1, 4:], full["b"], atol=1e-6)


def test_a_4_channel_model_ignores_the_inpainting_inputs(tiny):
    model = tiny["model4"]
    pixels, mask = _image_and_mask()
    p2, n2, latent = inpaint_conditioning(tiny, pixels, mask)
    pos, neg = _prompts()
    args = dict(seed=5, steps=2, cfg=5.0, sampler_name="dpmpp_2m", scheduler="karras")
    with UNetInputs(model.unet) as seen:
        out = sample(model, p2, n2, latent, **args)
    assert all(x.shape[1] == 4 for x in seen)
    assert torch.equal(out, sample(model, pos, neg, latent, **args))


def test_a_controlnet_steering_an_inpainting_model_reads_the_4_channel_latent(tiny):
    from diffusers import ControlNetModel

    from nodes.models.controlnet import ControlNet

    torch.manual_seed(5)
    net = ControlNetModel.from_unet(tiny_components(0)[0]).eval().requires_grad_(False)
    with torch.no_grad():  # a fresh ControlNet adds nothing: give its output convolutions weight
        for name, p in net.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.normal_(0, 0.3)
    model = tiny["model9"]
    pixels, mask = _image_and_mask()
    p2, n2, latent = inpaint_conditioning(tiny, pixels, mask)
    pc, nc = REGISTRY.get("ControlNetApplyAdvanced")().run(CTX, p2, n2, ControlNet(net, torch.float32), pixels, 1.0,
                                                          0.0, 1.0)
    args = dict(seed=2, steps=1, cfg=4.0, sampler_name="euler", scheduler="normal")
    with UNetInputs(net) as net_in, UNetInputs(model.unet) as unet_in:
        out = sample(model, pc, nc, latent, **args)
    assert [x.shape[1] for x in net_in] == [4] and [x.shape[1] for x in unet_in] == [9]
    assert all(torch.equal(c, u[:, :4]) for c, u in zip(net_in, unet_in, strict=True))
    assert not torch.allclose(out, sample(model, p2, n2, latent, **args), atol=1e-3)


def test_the_patched_unet_walk_gives_an_inpainting_model_the_same_input(tiny):
    from nodes.sampling.unet_patched import PatchedUNetCaller

    model = tiny["model9"]
    pixels, mask = _image_and_mask()
    p2, n2, _ = inpaint_conditioning(tiny, pixels, mask)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    args = (x, torch.tensor([500.0, 500.0]), torch.cat([p2[0].cond, n2[0].cond]), [(p2[0], 1), (n2[0], 1)], (8, 8))
    with torch.no_grad():
        plain = UNetCaller(model)(*args)
        walked = PatchedUNetCaller(model)(*args, options={"areas": [None, None]})
    assert torch.allclose(walked, plain, atol=1e-5)


def test_diffusers_sampler_refuses_an_inpainting_model_naming_the_model_input(tiny):
    from nodes.sampling.diffusers_loop import run_diffusers_loop

    pos, neg = _prompts()
    latent = Latent(torch.zeros(1, 4, 8, 8))
    with pytest.raises(NodeInputError, match="inpainting model.*KSampler") as err:
        run_diffusers_loop(tiny["model9"], pos, neg, latent, seed=1, steps=2, cfg=4.0,
                           scheduler_class="EulerDiscreteScheduler")
    assert err.value.input_name == "model"


def test_diffusers_sampler_refuses_a_patched_model_it_would_silently_ignore(tiny):
    from nodes.sampling.diffusers_loop import run_diffusers_loop

    pos, neg = _prompts()
    patched = tiny["model4"].patched(post_cfg_function=lambda args: args["denoised"])
    with pytest.raises(NodeInputError, match="model patches.*KSampler"):
        run_diffusers_loop(patched, pos, neg, Latent(torch.zeros(1, 4, 8, 8)), seed=1, steps=2, cfg=4.0,
                           scheduler_class="EulerDiscreteScheduler")
