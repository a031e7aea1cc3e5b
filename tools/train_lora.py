#!/usr/bin/env python
"""Train a small kohya-format LoRA that teaches the bundled model (sdgraph-shapes) a shape it never saw.

The bundled model knows circle, square, triangle and star (docs/bundled-model.md).  This script adds
low-rank deltas to its UNet (attention and feed-forward layers of every transformer block, and the
resnets' 3x3 convolutions in kohya's LoCon layout) and to its text encoder (attention and MLP of every layer), trained on `tools/shapes_data.py` pictures of the new
shape (an opt-in extra shape, "heart" by default) mixed with the usual shapes, with the bundled model's
own recipe: SD 1.5 noise schedule, epsilon target, min-SNR and high-noise weighting, 10 % empty prompts
for classifier-free guidance.  The base weights stay frozen; the CLIP token embeddings too (the word
"heart" is one BPE token whose untrained embedding row the text-encoder LoRA learns to read).

The file uses kohya's key names, which LoraLoader reads like any downloaded LoRA:

    lora_unet_<diffusers module path, dots as _>.lora_down.weight / .lora_up.weight / .alpha
    lora_te_text_model_<CLIP module path, dots as _>.…

    .venv/bin/python tools/train_lora.py                  # 10 min, 1 thread -> models/loras/sdgraph-shapes-heart.safetensors
    .venv/bin/python tools/train_lora.py --minutes 20 --threads 2
    .venv/bin/python tools/train_lora.py --init models/loras/sdgraph-shapes-heart.safetensors   # train on
    .venv/bin/python tools/train_lora.py --eval 4          # measure the shipped file: LoRA at 1.0 vs 0.0

Budgeted in wall-clock minutes, so the number of steps depends on the machine's load.  See the LoRA
section of docs/bundled-model.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))
import shapes_data as SD  # noqa: E402
import train_bundled_model as TB  # noqa: E402

DEFAULT_BASE = ROOT / "models" / "checkpoints" / "sdgraph-shapes.safetensors"
UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
CONV_TARGETS = ("conv1", "conv2")  # inside resnets (the only convs with those names)
TE_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


class LoraLinear(torch.nn.Module):
    """y = base(x) + (alpha / rank) · up(down(x)); base frozen, up starts at zero (no change at step 0)."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.down = torch.nn.Linear(base.in_features, rank, bias=False)
        self.up = torch.nn.Linear(rank, base.out_features, bias=False)
        torch.nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        torch.nn.init.zeros_(self.up.weight)
        self.rank, self.alpha = rank, alpha

    def forward(self, x):
        return self.base(x) + self.up(self.down(x)) * (self.alpha / self.rank)


class LoraConv(LoraLinear):
    """kohya's LoCon layout for a convolution: down has the base's kernel, stride and padding, up is 1x1."""

    def __init__(self, base: torch.nn.Conv2d, rank: int, alpha: float):
        torch.nn.Module.__init__(self)
        self.base = base
        self.down = torch.nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
        self.up = torch.nn.Conv2d(rank, base.out_channels, 1, bias=False)
        torch.nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        torch.nn.init.zeros_(self.up.weight)
        self.rank, self.alpha = rank, alpha


def add_lora(root: torch.nn.Module, targets: tuple[str, ...], rank: int, alpha: float, prefix: str,
             strip: str = "", kind: type = torch.nn.Linear) -> dict[str, LoraLinear]:
    """Wrap every Linear (or Conv2d) whose name ends with one of `targets`; returns kohya key name → wrapper."""
    wrapped: dict[str, LoraLinear] = {}
    for name, module in list(root.named_modules()):
        if type(module) is kind and name.endswith(targets):
            parent_name, _, attr = name.rpartition(".")
            lora = (LoraConv if kind is torch.nn.Conv2d else LoraLinear)(module, rank, alpha)
            setattr(root.get_submodule(parent_name), attr, lora)
            wrapped[prefix + (strip + name).replace(".", "_")] = lora
    return wrapped


def lora_state_dict(loras: dict[str, LoraLinear], dtype=torch.float16) -> dict[str, torch.Tensor]:
    out = {}
    for key, m in loras.items():
        out[f"{key}.lora_down.weight"] = m.down.weight.detach().to(dtype).contiguous()
        out[f"{key}.lora_up.weight"] = m.up.weight.detach().to(dtype).contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(m.alpha), dtype=dtype)
    return out


def make_batch(rng: random.Random, n: int, shape: str, p_new: float) -> tuple[torch.Tensor, list[str]]:
    """n pictures in [-1, 1] (n, 3, 64, 64): a share p_new of scenes drawn only from the new shape (single
    or pairs, the full caption grammar), the rest ordinary training scenes so the known shapes stay put."""
    imgs, caps = [], []
    for _ in range(n):
        shapes = (shape,) if rng.random() < p_new else SD.SHAPES
        img, scene = SD.sample(rng, "train", shapes=shapes)
        imgs.append(SD.image_to_array(img))
        caps.append(scene.caption)
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(), caps


def train(args) -> dict:
    from safetensors.torch import save_file

    from nodes.models import load_checkpoint

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    model, clip, vae = load_checkpoint(args.base)
    unet, te, ae = model.unet, clip.text_encoder, vae.vae.eval()
    scale = model.latent_format.scale_factor
    for m in (unet, te, ae):
        m.requires_grad_(False)
    # 1. wrap the target layers; only the LoRA factors train
    loras = add_lora(unet, UNET_TARGETS, args.rank, args.alpha or args.rank, "lora_unet_")
    if args.conv_rank:  # the resnets' 3x3 convolutions, where the outline is drawn
        loras.update(add_lora(unet, CONV_TARGETS, args.conv_rank, args.conv_rank, "lora_unet_", kind=torch.nn.Conv2d))
    # kohya spells CLIP modules with transformers 4's "text_model." level; the loader accepts both
    strip = "" if any(n.startswith("text_model.") for n, _ in te.named_modules()) else "text_model."
    te_loras = add_lora(te, TE_TARGETS, args.te_rank, args.te_alpha or args.te_rank, "lora_te_", strip) if args.te_rank else {}
    loras.update(te_loras)
    if args.init:  # continue from an earlier file with the same layers (ranks must match)
        from safetensors.torch import load_file

        start = load_file(args.init)
        with torch.no_grad():
            for key, m in loras.items():
                m.down.weight.copy_(start[f"{key}.lora_down.weight"])
                m.up.weight.copy_(start[f"{key}.lora_up.weight"])
        print(f"started from {args.init}", flush=True)
    params = [p for m in loras.values() for p in (m.down.weight, m.up.weight)]
    n_params = sum(p.numel() for p in params)
    print(f"LoRA: {len(loras) - len(te_loras)} UNet + {len(te_loras)} text-encoder layers, {n_params/1e3:.1f} k parameters "
          f"({2 * n_params / 1e6:.2f} MB in fp16)", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))

    # 2. the bundled model's loss: SD 1.5 schedule, epsilon, min-SNR(5) x clamp(1/snr, 1, 3), with extra
    #    high-noise samples (--high-noise-frac)
    sched = TB.make_scheduler()
    ac = sched.alphas_cumprod
    snr = ac / (1 - ac)
    w_t = torch.minimum(snr, torch.tensor(5.0)) / snr * torch.clamp(1.0 / snr, 1.0, 3.0)
    tok = clip.tokenizer
    empty = TB.tokenize(tok, [""])[0]
    unet.train()
    te.train()
    budget = args.minutes * 60
    t0 = time.time()
    step, run_loss = 0, None
    # 3. time-budgeted loop, fresh pictures every step (the VAE encoder is cheap at 64x64)
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = TB.lr_at(frac, args.lr, warm_frac=0.05)
        x, caps = make_batch(rng, args.batch, args.shape, args.p_new)
        with torch.no_grad():
            x0 = ae.encode(x).latent_dist.mean * scale  # (B, 4, 8, 8) in sampler space
        ids = TB.tokenize(tok, caps)
        drop = torch.rand(len(caps), generator=gen) < 0.1
        ids[drop] = empty
        t = torch.randint(0, 1000, (len(caps),), generator=gen)
        hi = torch.rand(len(caps), generator=gen) < args.high_noise_frac
        t[hi] = torch.randint(600, 1000, (int(hi.sum()),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = sched.add_noise(x0, noise, t)
        cond = te(ids)[0]  # (B, 77, 96): last layer after the final LayerNorm, as the nodes encode
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        loss = (((pred - noise) ** 2).mean(dim=(1, 2, 3)) * w_t[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        if step % 25 == 0:
            print(f"step {step} t={(time.time() - t0) / 60:.1f}m loss {loss.item():.4f} (ema {run_loss:.4f}) "
                  f"lr {opt.param_groups[0]['lr']:.2e}", flush=True)

    # 4. save in kohya's layout, fp16, with kohya-style metadata
    out = Path(args.out or ROOT / "models" / "loras" / f"sdgraph-shapes-{args.shape}.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"steps": step, "minutes": round((time.time() - t0) / 60, 2), "final_loss_ema": round(run_loss or 0.0, 5)}
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(args.rank),
            "ss_network_alpha": str(args.alpha or args.rank), "ss_base_model_version": "sd_v1",
            "ss_sd_model_name": Path(args.base).name, "sdgraph_new_shape": args.shape,
            "sdgraph_training": json.dumps({**vars(args), **info, "base": Path(args.base).name, "out": out.name})}
    tmp = out.with_name(out.name + ".tmp")
    save_file(lora_state_dict(loras), str(tmp), metadata=meta)
    os.replace(tmp, out)
    os.chmod(out, 0o644)
    print(f"saved {out} ({out.stat().st_size / 1e3:.0f} kB): {step} steps in {info['minutes']} min, "
          f"loss (ema) {info['final_loss_ema']}", flush=True)
    return info


def evaluate(lora_name: str, seeds: int, steps: int, cfg: float, prompt: str | None = None,
             colours: tuple[str, ...] = ("red",), grid: str | None = None) -> dict:
    """Run workflows/lora.json at LoRA strength 1.0 and 0.0 (both sliders) over `seeds` seeds per colour and
    read every picture with shapes_data.analyse_image over all shapes: {strength: {shape: count}}.
    `grid`: also save the first seed of each colour, strength 1.0 above 0.0, as one picture."""
    from PIL import Image

    from nodegraph import REGISTRY, Executor
    from nodegraph.workflow import load_workflow
    from nodes.core.env import SDEnvironment
    from nodes.imaging.ops import image_to_pil

    REGISTRY.discover("nodes")
    graph = load_workflow(ROOT / "workflows" / "lora.json", REGISTRY)
    graph.set_value("2", "lora_name", lora_name)
    graph.set_value("5", "batch_size", seeds)
    graph.set_value("6", "steps", steps)
    graph.set_value("6", "cfg", cfg)
    executor = Executor(REGISTRY, env=SDEnvironment(device="cpu", dtype="fp32"))
    counts: dict[float, dict[str, int]] = {}
    firsts: list = []
    for strength in (1.0, 0.0):
        graph.set_value("2", "strength_model", strength)
        graph.set_value("2", "strength_clip", strength)
        tally = counts.setdefault(strength, {})
        for colour in colours:
            graph.set_value("3", "text", prompt or f"a {colour} {SHAPE_OF[lora_name]} in the centre on a white background")
            result = executor.run(graph, outputs=["7"], check=False)
            assert result.ok, result.error
            firsts.append(image_to_pil(result.outputs["7"][0][0]))
            for image in result.outputs["7"][0]:
                objects = SD.analyse_image(image_to_pil(image), 1, SD.ALL_SHAPES)["objects"]
                key = objects[0]["shape"] if objects else "nothing"
                tally[key] = tally.get(key, 0) + 1
    if grid:
        size, cols = SD.IMAGE_SIZE, len(colours)
        sheet = Image.new("RGB", (size * cols, size * 2), "white")
        for i, image in enumerate(firsts):
            sheet.paste(image, ((i % cols) * size, (i // cols) * size))
        sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST).save(grid)
    return counts


SHAPE_OF = {f"sdgraph-shapes-{s}.safetensors": s for s in SD.EXTRA_SHAPES}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="heart", choices=SD.EXTRA_SHAPES, help="the new shape to teach")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base", default=str(DEFAULT_BASE), help="the model to train against")
    ap.add_argument("--init", default=None, help="a LoRA file from an earlier run (same ranks) to continue from")
    ap.add_argument("--out", default=None, help="default: models/loras/sdgraph-shapes-<shape>.safetensors")
    ap.add_argument("--rank", type=int, default=4, help="UNet attention / feed-forward LoRA rank")
    ap.add_argument("--alpha", type=float, default=None, help="UNet LoRA alpha (default: the rank, scale 1)")
    ap.add_argument("--conv-rank", type=int, default=4, help="LoRA rank of the resnets' 3x3 convs (0: none)")
    ap.add_argument("--te-rank", type=int, default=4, help="text-encoder LoRA rank (0: UNet only)")
    ap.add_argument("--te-alpha", type=float, default=None)
    ap.add_argument("--batch", type=int, default=64, help="at 8x8 latents a step costs little more for 64 than for 16")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--p-new", type=float, default=0.75, help="share of pictures showing only the new shape")
    ap.add_argument("--high-noise-frac", type=float, default=0.6,
                    help="share of each batch drawn from t in [600, 999], where the shape's outline is decided")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--eval", type=int, default=0, metavar="N",
                    help="only measure: N seeds x 8 colours through workflows/lora.json, LoRA at 1.0 and 0.0")
    ap.add_argument("--save-grid", default=None, help="with --eval: save the first seed per colour, 1.0 over 0.0")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.eval:
        name = Path(args.out).name if args.out else f"sdgraph-shapes-{args.shape}.safetensors"
        counts = evaluate(name, args.eval, 20, 5.0, colours=tuple(SD.COLOURS), grid=args.save_grid)
        for strength, tally in counts.items():
            print(f"strength {strength}: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items(), key=lambda kv: -kv[1])))
        return
    train(args)


if __name__ == "__main__":
    main()
