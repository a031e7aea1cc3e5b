"""Models users bring, on CPU: LoRA apply time and memory (SD 1.5), SDXL s/step against diffusers.

    python bench/models.py [--only lora|sdxl] [--size 256] [--steps 4] [--threads N] [--quick]

lora   A random-weight SD 1.5 UNet + CLIP-L with the real layout (nodes/configs/sd15, checked against
       ../shared/fixtures/sd15_manifest.tsv: same parameter count per tower) and a rank-16 kohya LoRA
       with SD 1.5's usual kohya key set (every transformer block's attn1/attn2 q/k/v/out, ff, proj_in/out;
       every CLIP layer's q/k/v/out_proj, fc1/fc2: 264 modules, as kohya's train_network writes them),
       saved to a temporary .safetensors. Timed: LoraLoader's work, read_lora + patch_model +
       patch_clip, median of --repeats; memory: the bytes of the new (patched) weights, which are all a
       LoRA adds (every other tensor is shared with the base model), and the process RSS growth.
sdxl   SDXL base with random weights: UNet, both text towers and VAE built from nodes/configs/sdxl (the
       UNet's parameter count checked against ../shared/fixtures/sdxl_manifest.tsv); with --quick the tiny
       SDXL-shaped test model instead (seconds, for checking the script runs). One process, one UNet
       object: our KSampler path (nodes.sampling.ksampler.sample, euler / normal) and diffusers'
       StableDiffusionXLPipeline built from the same modules (EulerDiscreteScheduler with our
       schedule, output_type="latent"), --size² px, batch 1, cfg 7, float32. After a 1-step warm-up of
       each, the two are timed alternately (--repeats times, medians). s/step = (end of the loop − start
       of the first UNet forward) / steps, as bench/sampling.py measures it. Target: ours/diffusers ≤ 1.0.

Full-size SDXL needs about 14 GB of RAM and, on 2 cores, tens of seconds per step at 512² — run it on a
quiet machine:  python bench/models.py --only sdxl --size 512 --steps 4 --repeats 2
Exits 0 whether the target is met or missed (printed OK / MISSED); non-zero only on a crash.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "bench" / "data"  # names and shapes of the real files (bench/data/README.md)
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPT = "a watercolor painting of a lighthouse at dusk"
NEGATIVE = "blurry, low quality"
RANK = 16
KOHYA_UNET = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
              "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
KOHYA_TE = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _manifest_count(manifest: Path, prefix: str) -> int:
    """Number of parameters under `prefix` in a fixture manifest (name, [shape], dtype per line)."""
    import math

    total = 0
    for line in manifest.read_text(encoding="utf-8").splitlines():
        name, shape, _ = line.split("\t")
        if name.startswith(prefix) and not name.endswith("position_ids"):
            total += math.prod(int(x) for x in shape.strip("[] ").split(",") if x.strip())
    return total


def _nparams(module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- LoRA ------------------------------------------------------------------------------------------

def sd15_random():
    """(MODEL, CLIP) with SD 1.5's architecture and random weights (no file needed)."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.core.values import ClipModel, DiffusionModel
    from nodes.models import configs
    from nodes.models.convert import CLIP_PREFIX, UNET_PREFIX

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**configs.component_config(configs.SD15_DIR, "unet")).eval().requires_grad_(False)
    te = CLIPTextModel(CLIPTextConfig(**configs.component_config(configs.SD15_DIR, "text_encoder")))
    te.eval().requires_grad_(False)
    manifest = MANIFESTS / "sd15_manifest.tsv"
    assert _nparams(unet) == _manifest_count(manifest, UNET_PREFIX), "UNet differs from SD 1.5's layout"
    assert _nparams(te) == _manifest_count(manifest, CLIP_PREFIX), "CLIP-L differs from SD 1.5's layout"
    model = DiffusionModel(unet=unet, alphas_cumprod=torch.ones(1000), dtype=torch.float32, device=torch.device("cpu"))
    return model, ClipModel(tokenizer=None, text_encoder=te)


def kohya_lora(unet, te, path: Path) -> int:
    """Write a rank-16 kohya LoRA for every module SD 1.5 LoRAs usually touch; returns the module count."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    sd = {}
    for prefix, root, targets in (("lora_unet_", unet, KOHYA_UNET), ("lora_te_", te, KOHYA_TE)):
        for name, m in root.named_modules():
            if not (isinstance(m, torch.nn.Linear | torch.nn.Conv2d) and name.endswith(targets)):
                continue
            key = prefix + ("text_model." + name.removeprefix("text_model.") if prefix == "lora_te_" else name).replace(".", "_")
            conv = isinstance(m, torch.nn.Conv2d)
            n_in, n_out = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
            down = torch.randn(RANK, n_in, generator=g) * 0.01
            up = torch.randn(n_out, RANK, generator=g) * 0.01
            if conv:  # SD 1.5's proj_in/proj_out are 1×1 convolutions: kohya stores 4-D factors
                down, up = down[:, :, None, None], up[:, :, None, None]
            sd[f"{key}.lora_down.weight"] = down.half().contiguous()
            sd[f"{key}.lora_up.weight"] = up.half().contiguous()
            sd[f"{key}.alpha"] = torch.tensor(float(RANK / 2), dtype=torch.float16)
    save_file(sd, str(path))
    return len(sd) // 3


def new_bytes(patched, base) -> int:
    """Bytes of the tensors `patched` holds that `base` does not (the LoRA's cost)."""
    shared = {p.data_ptr() for p in base.parameters()}
    return sum(p.numel() * p.element_size() for p in patched.parameters() if p.data_ptr() not in shared)


def bench_lora(args) -> None:
    import gc

    from nodes.models.lora import patch_clip, patch_model, read_lora

    t0 = time.perf_counter()
    model, clip = sd15_random()
    print(f"SD 1.5 random model built in {time.perf_counter() - t0:.1f} s "
          f"(UNet {_nparams(model.unet) / 1e6:.0f} M, CLIP-L {_nparams(clip.text_encoder) / 1e6:.0f} M parameters)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_lora_r16.safetensors"
        n_modules = kohya_lora(model.unet, clip.text_encoder, path)
        size_mb = path.stat().st_size / 2**20
        phases: dict[str, list[float]] = {"read": [], "patch MODEL": [], "patch CLIP": [], "total": []}
        rss, extra = [], {}
        for _ in range(args.repeats):
            gc.collect()
            rss0 = _rss_mb()
            t = [time.perf_counter()]
            lora = read_lora(path)
            t.append(time.perf_counter())
            m2 = patch_model(model, lora, 1.0)
            t.append(time.perf_counter())
            c2 = patch_clip(clip, lora, 1.0)
            t.append(time.perf_counter())
            for name, a, b in (("read", 0, 1), ("patch MODEL", 1, 2), ("patch CLIP", 2, 3), ("total", 0, 3)):
                phases[name].append(t[b] - t[a])
            rss.append(_rss_mb() - rss0)
            extra = {"patch MODEL": new_bytes(m2.unet, model.unet), "patch CLIP": new_bytes(c2.text_encoder, clip.text_encoder)}
            extra["total"] = sum(extra.values())
            del lora, m2, c2
    print(f"LoRA: rank {RANK}, {n_modules} modules (kohya SD 1.5 key set), file {size_mb:.1f} MB fp16")
    print(f"{'what':<14} {'ms':>8} {'extra MB':>9}")
    for name, times in phases.items():
        mb = f"{extra[name] / 2**20:>9.1f}" if name in extra else f"{'':>9}"
        print(f"{name:<14} {statistics.median(times) * 1e3:>8.0f} {mb}")
    print(f"RSS growth while the patched copies live: {statistics.median(rss):.0f} MB")
    print("  ms: median of --repeats (LoraLoader's work: read the file, patch the UNet, patch the text encoder);")
    print("  extra MB: the patched weights (fp32), the only new tensors: the rest is shared with the base MODEL/CLIP,")
    print("  which stay unchanged for other branches.")


# -- SDXL ------------------------------------------------------------------------------------------

def sdxl_random(quick: bool):
    """(MODEL, CLIP, vae module, tokenizer, tokenizer_2): SDXL base with random weights, or the tiny one."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from nodes.core.values import ClipModel, DiffusionModel, LatentFormat
    from nodes.models import configs
    from nodes.models.convert import UNET_PREFIX

    torch.manual_seed(0)
    if quick:
        from nodes.models.testing import tiny_sdxl_components

        unet, vae, te, te2 = tiny_sdxl_components(0)
    else:
        unet = UNet2DConditionModel(**configs.component_config(configs.SDXL_DIR, "unet"))
        vae = AutoencoderKL(**configs.component_config(configs.SDXL_DIR, "vae"))
        te = CLIPTextModel(CLIPTextConfig(**configs.component_config(configs.SDXL_DIR, "text_encoder")))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**configs.component_config(configs.SDXL_DIR, "text_encoder_2")))
        manifest = MANIFESTS / "sdxl_manifest.tsv"
        assert _nparams(unet) == _manifest_count(manifest, UNET_PREFIX), "UNet differs from SDXL's layout"
    for m in (unet, vae, te, te2):  # float32 throughout (a text config may name another torch_dtype)
        m.float().eval().requires_grad_(False)
    sched = configs.component_config(configs.SDXL_DIR, "scheduler")
    model = DiffusionModel(unet=unet, alphas_cumprod=configs.alphas_cumprod_from_scheduler_config(sched),
                           latent_format=LatentFormat(scale_factor=0.13025), dtype=torch.float32,
                           device=torch.device("cpu"), name="sdxl-random")
    tok = configs.clip_tokenizer()
    tok2 = CLIPTokenizer.from_pretrained(configs.TOKENIZER_DIR, pad_token="!", local_files_only=True)
    second = ClipModel(tokenizer=tok, text_encoder=te2, layer=-2, pad_id=0, final_layer_norm=False)
    clip = ClipModel(tokenizer=tok, text_encoder=te, layer=-2, pad_id=49407, final_layer_norm=False, second=second)
    return model, clip, vae, tok, tok2


def sdxl_pipeline(model, clip, vae, tok, tok2):
    """diffusers' StableDiffusionXLPipeline around the same modules (shared UNet), with the Euler
    scheduler on the model's own training schedule: the reference every SDXL benchmark compares with."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from nodes.sampling.diffusers_loop import make_scheduler

    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=clip.text_encoder, text_encoder_2=clip.second.text_encoder,
                                     tokenizer=tok, tokenizer_2=tok2, unet=model.unet,
                                     scheduler=EulerDiscreteScheduler.from_config(
                                         make_scheduler(model, "EulerDiscreteScheduler").config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_sdxl(args) -> None:
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from sampling import UNetTimer

    from nodes.core.values import Latent
    from nodes.sampling import ksampler
    from nodes.text import encode_text

    size = 64 if args.quick and args.size is None else (args.size or 256)
    t0 = time.perf_counter()
    model, clip, vae, tok, tok2 = sdxl_random(args.quick)
    print(f"SDXL {'tiny (--quick)' if args.quick else 'base'} random model built in {time.perf_counter() - t0:.1f} s "
          f"(UNet {_nparams(model.unet) / 1e6:.0f} M parameters); {size}x{size}, {args.steps} steps, euler, cfg 7, "
          f"float32, {torch.get_num_threads()} threads")
    timer = UNetTimer(model.unet)
    pos, neg = encode_text(clip, PROMPT), encode_text(clip, NEGATIVE)
    lat = size // 8
    pipe = sdxl_pipeline(model, clip, vae, tok, tok2)

    def ours(steps):
        out = ksampler.sample(model, pos, neg, Latent(torch.zeros(1, 4, lat, lat)), seed=0, steps=steps, cfg=7.0,
                              sampler_name="euler", scheduler="normal")
        return time.perf_counter(), out

    def theirs(steps):
        out = pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=steps,
                   guidance_scale=7.0, generator=torch.Generator().manual_seed(0), output_type="latent").images
        return time.perf_counter(), out

    per_step: dict[str, list[float]] = {"ours": [], "diffusers": []}
    unet_step: dict[str, list[float]] = {"ours": [], "diffusers": []}
    with torch.inference_mode():
        ours(1), theirs(1)  # warm-up
        for _ in range(args.repeats):
            for case, fn in (("ours", ours), ("diffusers", theirs)):
                timer.reset()
                end, out = fn(args.steps)
                assert torch.isfinite(out).all(), f"{case}: non-finite latents"
                per_step[case].append((end - timer.first_start) / args.steps)
                unet_step[case].append(sum(timer.calls) / args.steps)
    print(f"{'case':<10} {'s/step':>8} {'UNet/step':>10} {'ratio':>7}")
    base = statistics.median(per_step["diffusers"])
    for case in ("ours", "diffusers"):
        s = statistics.median(per_step[case])
        print(f"{case:<10} {s:>8.3f} {statistics.median(unet_step[case]):>10.3f} {s / base:>7.3f}")
    ratio = statistics.median(per_step["ours"]) / base
    print(f"\nSDXL ours/diffusers s/step = {ratio:.3f} (target <= 1.0): {'OK' if ratio <= 1.0 else 'MISSED'}"
          + ("   [--quick: a tiny model, the per-step overhead dominates; not the real measurement]" if args.quick else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["lora", "sdxl"])
    p.add_argument("--size", type=int, default=None, help="SDXL picture size in px (default 256; --quick: 64)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case (medians)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny SDXL stand-in, 1 repeat: checks the script runs")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats = 1
    if args.only in (None, "lora"):
        print("== LoRA apply (SD 1.5)")
        bench_lora(args)
    if args.only in (None, "sdxl"):
        print("\n== SDXL sampling, ours vs diffusers' StableDiffusionXLPipeline")
        bench_sdxl(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
