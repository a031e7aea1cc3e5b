#!/usr/bin/env python
"""Train the small bundled Stable-Diffusion-architecture model (sdgraph-shapes).

Phases (time-budgeted, resumable; state lives in --work-dir):
  1. VAE      AutoencoderKL 64x64 -> 4x8x8, on-the-fly synthetic images      (--vae-minutes)
  2. pool     encode a fixed pool of training images to latents (VAE mean) + tokenize captions
  3. UNet     UNet2DConditionModel + CLIPTextModel trained jointly, SD 1.5 noise schedule,
              epsilon prediction, 10% empty-prompt dropout for CFG, weight EMA  (--unet-minutes)
  4. export   measure latent scale factor, save diffusers modules + single safetensors file

    .venv/bin/python tools/train_bundled_model.py                    # defaults: VAE 15 + pool 3 + UNet 70 min (~88 min)
    .venv/bin/python tools/train_bundled_model.py --resume            # continue after a kill
    .venv/bin/python tools/train_bundled_model.py --export-only       # redo the export

See docs/bundled-model.md.
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
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a save every 3 min would print shard bars

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import shapes_data as SD  # noqa: E402

TOKENIZER_DIR = ROOT / "nodes" / "configs" / "clip_tokenizer"  # the tokenizer the SD nodes ship
DEFAULT_OUT = ROOT / "models" / "checkpoints" / "sdgraph-shapes.safetensors"
DEFAULT_WORK = ROOT / "tools" / "_train_work"
PAD_ID = 49407
MAX_LEN = 77

# ------------------------------------------------------------------ configs
VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(48, 64, 64, 64),
    layers_per_block=1, latent_channels=4, norm_num_groups=16, sample_size=64,
)
UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4,
    # 8x8 -> 4x4 -> 2x2 -> 1x1, cross-attention at every resolution incl. the 1x1 bottleneck
    down_block_types=("CrossAttnDownBlock2D",) * 4,
    up_block_types=("CrossAttnUpBlock2D",) * 4,
    block_out_channels=(64, 96, 112, 128),
    layers_per_block=1, cross_attention_dim=96, attention_head_dim=4,
    norm_num_groups=16,
)
TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=96, intermediate_size=384, num_hidden_layers=4,
    num_attention_heads=4, max_position_embeddings=MAX_LEN, hidden_act="quick_gelu",
    bos_token_id=49406, eos_token_id=49407, pad_token_id=PAD_ID,
)


def log(msg: str, work: Path | None = None):
    line = f"[{time.strftime('%H:%M:%S', time.gmtime())}Z] {msg}"
    print(line, flush=True)
    if work is not None:
        with open(work / "train.log", "a") as f:
            f.write(line + "\n")


def build_modules():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(**VAE_CONFIG)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    te = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    return vae, unet, te


def load_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR, local_files_only=True)


def tokenize(tok, captions: list[str]) -> torch.Tensor:
    ids = tok(captions, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
    return ids


def nparams(m) -> int:
    return sum(p.numel() for p in m.parameters())


def make_batch(rng: random.Random, n: int) -> tuple[torch.Tensor, list[str]]:
    imgs, caps = [], []
    for _ in range(n):
        img, scene = SD.sample(rng, "train")
        imgs.append(SD.image_to_array(img))
        caps.append(scene.caption)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x, caps


def save_state(path: Path, state: dict):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def lr_at(frac: float, base: float, warm_frac: float = 0.03) -> float:
    if frac < warm_frac:
        return base * frac / warm_frac
    p = min(1.0, (frac - warm_frac) / (1 - warm_frac))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


# --------------------------------------------------------------------- VAE
def train_vae(args, work: Path, vae):
    ck = work / "vae_state.pt"
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    rng = random.Random(args.seed + 1)
    if ck.exists():
        st = torch.load(ck, weights_only=False)
        vae.load_state_dict(st["vae"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        rng.setstate(st["rng"])
        torch.set_rng_state(st["torch_rng"])
        budget = args.vae_minutes * 60
        if st.get("done") and elapsed >= budget - 1:
            log(f"VAE phase already done (step {step})", work)
            return
        if st.get("done"):  # a larger --vae-minutes on --resume extends a finished phase
            for p in ("pool.pt", "latent_scale.json", "unet_state.pt"):
                (work / p).unlink(missing_ok=True)
        log(f"VAE resume at step {step}, {elapsed/60:.1f} of {args.vae_minutes} min", work)
    budget = args.vae_minutes * 60
    vae.train()
    t0 = time.time() - elapsed
    last_ck = time.time()
    ema_l = None
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(elapsed / budget, args.vae_lr)
        x, _ = make_batch(rng, args.vae_batch)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        # foreground pixels (differ from the corner/background colour) weigh --vae-fg-weight x: shapes are a
        # few % of the pixels, and with a plain mean the VAE learns shape colours very slowly (they collapsed
        # to an orange/cyan pair after 430 steps in the first run).
        fg = ((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.15).float()
        w = 1.0 + (args.vae_fg_weight - 1.0) * fg
        w = w / w.mean()
        mse = ((rec - x) ** 2 * w).mean()
        l1 = ((rec - x).abs() * w).mean()
        kl = post.kl().mean() / (4 * 8 * 8)  # per latent element
        loss = mse + 0.5 * l1 + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        ema_l = mse.item() if ema_l is None else 0.98 * ema_l + 0.02 * mse.item()
        if step % 50 == 0:
            log(f"vae step {step} t={elapsed/60:.1f}m mse {mse.item():.5f} (ema {ema_l:.5f}) l1 {l1.item():.4f} kl {kl.item():.3f}", work)
        if time.time() - last_ck > args.ckpt_seconds:
            save_state(ck, dict(vae=vae.state_dict(), opt=opt.state_dict(), step=step, elapsed=time.time() - t0,
                                rng=rng.getstate(), torch_rng=torch.get_rng_state(), done=False))
            last_ck = time.time()
    save_state(ck, dict(vae=vae.state_dict(), opt=opt.state_dict(), step=step, elapsed=time.time() - t0,
                        rng=rng.getstate(), torch_rng=torch.get_rng_state(), done=True, final_mse_ema=ema_l))
    vae.save_pretrained(work / "vae")
    log(f"VAE done: {step} steps, {(time.time()-t0)/60:.1f} min, mse(ema) {ema_l:.5f}", work)


# -------------------------------------------------------------------- pool
@torch.no_grad()
def build_pool(args, work: Path, vae, tok):
    path = work / "pool.pt"
    if path.exists():
        pool = torch.load(path, weights_only=False)
        log(f"pool loaded: {pool['latents'].shape[0]} samples, scale {pool['scale']:.5f}", work)
        return pool
    vae.eval()
    rng = random.Random(args.seed + 2)
    lat, caps = [], []
    t0 = time.time()
    n = 0
    while n < args.pool_size and time.time() - t0 < args.pool_minutes * 60:
        x, c = make_batch(rng, 256)
        lat.append(vae.encode(x).latent_dist.mean.to(torch.float16))
        caps += c
        n += x.shape[0]
    latents = torch.cat(lat)
    std = latents.float().std().item()
    scale = 1.0 / std
    ids = tokenize(tok, caps)
    pool = dict(latents=latents, ids=ids.to(torch.int32), captions=caps, scale=scale,
                latent_mean=latents.float().mean().item(), latent_std=std)
    save_state(path, pool)
    log(f"pool built: {len(caps)} samples in {(time.time()-t0)/60:.1f} min; latent mean "
        f"{pool['latent_mean']:.4f} std {std:.4f} -> scale factor {scale:.5f}", work)
    return pool


# -------------------------------------------------------------------- UNet
def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False)


class EMA:
    def __init__(self, modules: dict, decay: float):
        self.decay = decay
        self.shadow = {k: {n: p.detach().clone() for n, p in m.state_dict().items()} for k, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for k, m in modules.items():
            sh = self.shadow[k]
            for n, p in m.state_dict().items():
                if p.dtype.is_floating_point:
                    sh[n].mul_(d).add_(p.detach(), alpha=1 - d)
                else:
                    sh[n].copy_(p)


def train_unet(args, work: Path, unet, te, pool):
    ck = work / "unet_state.pt"
    sched = make_scheduler()
    ac = sched.alphas_cumprod
    snr = ac / (1 - ac)
    # loss weight on the epsilon MSE: min-SNR(5) for low noise; for snr<1 up-weight by 1/snr (capped), i.e. an
    # x0-space loss at high noise, where the layout is decided and the plain eps-loss is nearly blind.
    w_t = torch.minimum(snr, torch.tensor(args.min_snr_gamma)) / snr
    w_t = w_t * torch.clamp(1.0 / snr, 1.0, args.high_noise_cap)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01, betas=(0.9, 0.99))
    modules = {"unet": unet, "text_encoder": te}
    ema = EMA(modules, args.ema_decay)
    step, elapsed = 0, 0.0
    gen = torch.Generator().manual_seed(args.seed + 3)
    if ck.exists():
        st = torch.load(ck, weights_only=False)
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["text_encoder"])
        opt.load_state_dict(st["opt"])
        ema.shadow = st["ema"]
        step, elapsed = st["step"], st["elapsed"]
        gen.set_state(st["gen"])
        if st.get("done") and elapsed >= args.unet_minutes * 60 - 1:
            log(f"UNet phase already done (step {step})", work)
            return ema
        log(f"UNet resume at step {step}, {elapsed/60:.1f} of {args.unet_minutes} min", work)
    N = pool["latents"].shape[0]
    latents_all = pool["latents"]
    ids_all = pool["ids"].long()
    scale = pool["scale"]
    empty_ids = pool["empty_ids"].long()
    budget = args.unet_minutes * 60
    unet.train()
    te.train()
    t0 = time.time() - elapsed
    last_ck = time.time()
    run = {"loss": None, "mse": None}
    B = args.unet_batch
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(elapsed / budget, args.unet_lr)
        idx = torch.randint(0, N, (B,), generator=gen)
        x0 = latents_all[idx].float() * scale
        ids = ids_all[idx].clone()
        drop = torch.rand(B, generator=gen) < args.uncond_prob
        ids[drop] = empty_ids
        t = torch.randint(0, 1000, (B,), generator=gen)
        hi = torch.rand(B, generator=gen) < args.high_noise_frac
        t[hi] = torch.randint(600, 1000, (int(hi.sum()),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = sched.add_noise(x0, noise, t)
        cond = te(ids)[0]
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (per * w_t[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema.update(modules, step)
        m = per.mean().item()
        run["loss"] = loss.item() if run["loss"] is None else 0.99 * run["loss"] + 0.01 * loss.item()
        run["mse"] = m if run["mse"] is None else 0.99 * run["mse"] + 0.01 * m
        if step % 100 == 0:
            log(f"unet step {step} t={elapsed/60:.1f}m ({step/max(elapsed,1):.2f} it/s) loss {loss.item():.4f} "
                f"(ema {run['loss']:.4f}) eps-mse(ema) {run['mse']:.4f} lr {opt.param_groups[0]['lr']:.2e}", work)
        if time.time() - last_ck > args.ckpt_seconds:
            save_state(ck, dict(unet=unet.state_dict(), text_encoder=te.state_dict(), opt=opt.state_dict(),
                                ema=ema.shadow, step=step, elapsed=time.time() - t0, gen=gen.get_state(), done=False))
            last_ck = time.time()
            save_ema_modules(work, ema)
    save_state(ck, dict(unet=unet.state_dict(), text_encoder=te.state_dict(), opt=opt.state_dict(),
                        ema=ema.shadow, step=step, elapsed=time.time() - t0, gen=gen.get_state(), done=True,
                        final=run))
    save_ema_modules(work, ema)
    log(f"UNet done: {step} steps, {(time.time()-t0)/60:.1f} min, loss(ema) {run['loss']:.4f} eps-mse(ema) {run['mse']:.4f}", work)
    return ema


def save_ema_modules(work: Path, ema: EMA):
    """diffusers/transformers save_pretrained dirs of the EMA weights (for --export-only / self-check)."""
    _, unet, te = build_modules()
    unet.load_state_dict(ema.shadow["unet"])
    te.load_state_dict(ema.shadow["text_encoder"])
    unet.save_pretrained(work / "unet_ema")
    te.save_pretrained(work / "text_encoder_ema")


# ------------------------------------------------------------------ export
def load_exported_modules(work: Path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    vae = AutoencoderKL.from_pretrained(work / "vae")
    unet = UNet2DConditionModel.from_pretrained(work / "unet_ema")
    te = CLIPTextModel.from_pretrained(work / "text_encoder_ema")
    return vae.eval(), unet.eval(), te.eval()


def export(args, work: Path):
    vae, unet, te = load_exported_modules(work)
    if getattr(args, "export_raw", False):  # the last raw (non-EMA) weights instead of the EMA ones
        st = torch.load(work / "unet_state.pt", weights_only=False, map_location="cpu")
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["text_encoder"])
        log(f"exporting RAW weights from unet_state.pt (step {st['step']})", work)
    pool_meta = json.loads((work / "latent_scale.json").read_text())
    scale = round(pool_meta["scale"], 5)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        sys.path.insert(0, str(ROOT))
        from nodes.models import save_checkpoint  # type: ignore
    except Exception as e:  # loader not merged yet -> fallback format
        log(f"nodes.models.save_checkpoint not available ({type(e).__name__}: {e}); writing fallback format", work)
        save_checkpoint = None
    if save_checkpoint is not None:
        save_checkpoint(out, unet, vae, te, prediction_type="epsilon", latent_scale_factor=scale, clip_pad_id=PAD_ID,
                        dtype=torch.float16)
        os.chmod(out, 0o644)  # the atomic writer's temp file is 0600
        log(f"exported with nodes.models.save_checkpoint -> {out} ({out.stat().st_size/1e6:.1f} MB), scale {scale}", work)
    else:
        fallback_save(out, unet, vae, te, scale)
        os.chmod(out, 0o644)
        log(f"exported (fallback format) -> {out} ({out.stat().st_size/1e6:.1f} MB), scale {scale}", work)


def fallback_save(out: Path, unet, vae, te, scale: float):
    """Stand-in until nodes.models.save_checkpoint exists: one fp16 safetensors with prefixed diffusers
    state dicts (unet./vae./text_encoder.) and the three configs in the metadata.  Atomic."""
    from safetensors.torch import save_file

    tensors = {}
    for prefix, m in (("unet.", unet), ("vae.", vae), ("text_encoder.", te)):
        for k, v in m.state_dict().items():
            tensors[prefix + k] = v.detach().to(torch.float16).contiguous() if v.dtype.is_floating_point else v.contiguous()
    meta = {
        "format": "sdgraph-diffusers-fallback",
        "unet_config": json.dumps(dict(unet.config)),
        "vae_config": json.dumps(dict(vae.config)),
        "text_encoder_config": te.config.to_json_string(),
        "prediction_type": "epsilon",
        "latent_scale_factor": str(scale),
        "clip_pad_id": str(PAD_ID),
        "tokenizer": "CLIP ViT-L/14 BPE (sd15), max_length 77",
    }
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, out)


# -------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default=str(DEFAULT_WORK))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true", help="continue from the state in --work-dir")
    ap.add_argument("--export-only", action="store_true", help="only (re-)export from the saved modules")
    ap.add_argument("--export-raw", action="store_true", help="export the raw weights instead of the EMA ones")
    ap.add_argument("--vae-minutes", type=float, default=15.0)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-4)
    ap.add_argument("--vae-fg-weight", type=float, default=10.0)
    ap.add_argument("--pool-size", type=int, default=50000)
    ap.add_argument("--pool-minutes", type=float, default=3.0)
    ap.add_argument("--unet-minutes", type=float, default=70.0)
    ap.add_argument("--unet-batch", type=int, default=64)
    ap.add_argument("--unet-lr", type=float, default=5e-4)
    ap.add_argument("--uncond-prob", type=float, default=0.1)
    ap.add_argument("--min-snr-gamma", type=float, default=5.0)
    ap.add_argument("--high-noise-cap", type=float, default=3.0)
    ap.add_argument("--high-noise-frac", type=float, default=0.4)
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--ckpt-seconds", type=float, default=180.0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.export_only:
        export(args, work)
        return
    existing = [p for p in ("vae_state.pt", "pool.pt", "unet_state.pt") if (work / p).exists()]
    if existing and not args.resume:
        sys.exit(f"{work} already has {existing}; pass --resume to continue or use a fresh --work-dir")
    (work / "args.json").write_text(json.dumps(vars(args), indent=1))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    vae, unet, te = build_modules()
    log(f"params: vae {nparams(vae)/1e6:.3f}M unet {nparams(unet)/1e6:.3f}M text {nparams(te)/1e6:.3f}M "
        f"(fp16 total {2*(nparams(vae)+nparams(unet)+nparams(te))/1e6:.1f} MB)", work)
    tok = load_tokenizer()

    t_start = time.time()
    train_vae(args, work, vae)
    vae.requires_grad_(False)
    pool = build_pool(args, work, vae, tok)
    pool["empty_ids"] = tokenize(tok, [""])[0]
    (work / "latent_scale.json").write_text(json.dumps(
        {"scale": pool["scale"], "latent_mean": pool["latent_mean"], "latent_std": pool["latent_std"]}, indent=1))
    if not (work / "vae").exists():
        vae.save_pretrained(work / "vae")
    train_unet(args, work, unet, te, pool)
    export(args, work)
    log(f"all done in {(time.time()-t_start)/60:.1f} min (this invocation)", work)


if __name__ == "__main__":
    main()
