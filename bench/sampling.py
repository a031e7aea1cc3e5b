"""Sampling speed and memory on CPU: our KSampler path vs diffusers' StableDiffusionPipeline.

Model: a random-weight checkpoint with SD 1.5's exact layout, built from bench/data/sd15_manifest.tsv
(names and shapes only; see bench/data/README.md) by the rules in that README ("Random-weight
checkpoints") and cached in bench/_sd15_cache/ (2.1 GB, git-ignored; built once, then reused).
Workload: 256×256 (32×32 latent), batch 1, 10 steps, euler / normal, cfg 8, float32, CPU.

    python bench/sampling.py [--steps 10] [--threads N] [--no-warmup] [--repeats 1] [--only CASE]

Each case runs in its own subprocess (`--case ours|diffusers`), so its peak RSS
(resource.getrusage(RUSAGE_SELF).ru_maxrss) is its own; this parent never imports torch. Both cases
use the same torch thread count (torch.get_num_threads() of a fresh interpreter, or --threads).

  ours       load_checkpoint(path, device="cpu", dtype=float32); encode_text() for prompt and negative;
             nodes.sampling.ksampler.sample(..., sampler_name="euler", scheduler="normal").
  diffusers  StableDiffusionPipeline.from_single_file(path, config=nodes/configs/sd15, local_files_only=True,
             torch_dtype=float32, safety_checker=None). nodes/configs/sd15 has no tokenizer/; with
             transformers 5.x from_single_file then "loads" an empty 2-token CLIPTokenizer without error and
             the pipeline call fails (OverflowError in encode_prompt). So unless that folder gains a
             tokenizer/, the call is made with tokenizer=nodes.models.clip_tokenizer() as well (diffusers
             still converts and loads unet/vae/text_encoder from the file itself: an independent load);
             if that fails, a pipeline is built from our loaded unet/vae/text_encoder. Scheduler:
             EulerDiscreteScheduler.from_config(sd15 scheduler config). output_type="latent" (no VAE).

Timing, the same for both: s/step = (end of the sampling loop − start of the first UNet forward) / steps,
the start taken by a forward pre-hook on the UNet; ours ends when sample() returns, diffusers' at the
last callback_on_step_end. Text encoding and the setup before the first UNet call (noise, sigmas;
diffusers: prompt encoding, latents, timesteps) are excluded and printed apart. Both cases warm up
with a 1-step run first (unless --no-warmup). The UNet column is the UNet forward time per step (one
batch-2 call: cond + uncond), from forward hooks, so "other" is the driver's own per-step cost.
Both cases check they ran the same UNet weights (checksum) and compare their final latents.
Target: ours/diffusers s/step ≤ 1.0. Exits 0 whether it is met or missed (printed as OK / MISSED);
non-zero only on a crash. Raw numbers go to bench/_sd15_cache/last_result.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "bench" / "data" / "sd15_manifest.tsv"  # shipped in the repo: make bench runs from any clone
CACHE_DIR = REPO / "bench" / "_sd15_cache"
CKPT = CACHE_DIR / "sd15_random_manifest.safetensors"
# The reference bytes of that checkpoint (bench/data/README.md; safetensors 0.8.0, torch 2.13, CPU).
EXPECTED_BYTES = 2_132_651_014
EXPECTED_SHA256 = "d5cc84e59ff6e004777c6907070dd8421f6c2a424d9b439742bd9ccf664e2666"

PROMPT = "a watercolor painting of a lighthouse at dusk"
NEGATIVE = "blurry, low quality"
SEED, CFG, SIZE = 0, 8.0, 256
RESULT_TAG = "SAMPLING_BENCH_RESULT "
OURS_OUT = CACHE_DIR / "last_ours_latent.pt"

sys.path.insert(0, str(REPO))


# -- the checkpoint ----------------------------------------------------------------------------

def _ddpm_buffers():
    """The 12 LDM schedule buffers (scaled linear), computed in float64, returned as float32."""
    import torch

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1.0 - betas, dim=0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    pv = betas * (1.0 - ac_prev) / (1.0 - ac)
    bufs = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1.0).sqrt(),
        "posterior_variance": pv,
        "posterior_log_variance_clipped": pv.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * (1.0 - betas).sqrt() / (1.0 - ac),
    }
    return {k: v.to(torch.float32) for k, v in bufs.items()}


V_MARKER = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"


def manifest_tensors(manifest: Path, *, v_prediction_marker: bool = False):
    """Every tensor of a manifest, filled by the README's rules, in file order."""
    import torch

    from nodes.models.testing import manifest_state_dict

    meta = manifest_state_dict(manifest)  # insertion order == file order (name-sorted)
    ddpm = _ddpm_buffers()
    torch.manual_seed(0)
    out = {}
    for name, m in meta.items():
        shape = tuple(m.shape)
        if v_prediction_marker and name == V_MARKER:
            t = torch.tensor([0.125 if i % 2 == 0 else -0.125 for i in range(m.numel())]).reshape(shape)
        elif name.endswith("position_ids"):
            t = torch.arange(77, dtype=torch.int64).reshape(shape)
        elif "." not in name and name in ddpm:
            t = ddpm[name].reshape(shape)
        elif name.endswith(".bias"):
            t = torch.zeros(shape, dtype=torch.float32)
        elif m.ndim == 1 and name.endswith(".weight"):
            t = torch.ones(shape, dtype=torch.float32)
        else:
            t = torch.randn(shape, dtype=torch.float32) * 0.02
        out[name] = t.to(m.dtype).contiguous()
    return out


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def build_checkpoint() -> dict:
    """Write the random SD 1.5 checkpoint to CKPT (atomically) and check it against the README."""
    from safetensors.torch import save_file

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tensors = manifest_tensors(MANIFEST)
    tmp = CKPT.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    del tensors
    digest = _sha256(tmp)
    os.replace(tmp, CKPT)
    (CACHE_DIR / (CKPT.name + ".sha256")).write_text(digest + "\n")
    return {"seconds": time.perf_counter() - t0, "bytes": CKPT.stat().st_size, "sha256": digest}


# -- measurement helpers -----------------------------------------------------------------------

class UNetTimer:
    """Forward hooks on a UNet: start time of the first call, and the duration of every call."""

    def __init__(self, unet):
        self.calls: list[float] = []
        self.first_start: float | None = None
        self.batch: list[int] = []
        self._t = 0.0
        unet.register_forward_pre_hook(self._pre)
        unet.register_forward_hook(self._post)

    def reset(self):
        self.calls.clear()
        self.batch.clear()
        self.first_start = None

    def _pre(self, module, args):
        self._t = time.perf_counter()
        if self.first_start is None:
            self.first_start = self._t
        if args:
            self.batch.append(int(args[0].shape[0]))

    def _post(self, module, args, output):
        self.calls.append(time.perf_counter() - self._t)


def _fingerprint(unet) -> float:
    """A cheap weight checksum: both cases must run the same UNet weights."""
    import torch

    with torch.no_grad():
        return float(sum(p.sum(dtype=torch.float64) * (i % 7 + 1) for i, (_, p) in enumerate(sorted(unet.state_dict().items()))))


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _attn_processors(unet) -> list[str]:
    return sorted({type(p).__name__ for p in unet.attn_processors.values()})


def _emit(result: dict) -> None:
    result["peak_rss_gb"] = _peak_rss_gb()
    print(RESULT_TAG + json.dumps(result), flush=True)


# -- case: ours ---------------------------------------------------------------------------------

def case_ours(steps: int, warmup: bool) -> dict:
    import torch

    from nodes.core.values import Latent
    from nodes.models import load_checkpoint
    from nodes.sampling import ksampler
    from nodes.text import encode_text

    t0 = time.perf_counter()
    model, clip, _vae = load_checkpoint(CKPT, device="cpu", dtype=torch.float32)
    load_s = time.perf_counter() - t0
    timer = UNetTimer(model.unet)

    t0 = time.perf_counter()
    pos = encode_text(clip, PROMPT)
    neg = encode_text(clip, NEGATIVE)
    encode_s = time.perf_counter() - t0
    lat = SIZE // 8

    def run(n):
        stamps = []
        out = ksampler.sample(
            model, pos, neg, Latent(torch.zeros(1, 4, lat, lat)), seed=SEED, steps=n, cfg=CFG,
            sampler_name="euler", scheduler="normal",
            callback=lambda i, total, x, d: stamps.append(time.perf_counter()),
        )
        return out, stamps

    if warmup:
        run(1)
    timer.reset()
    t_call = time.perf_counter()
    out, stamps = run(steps)
    t_end = time.perf_counter()
    # Sampler space (x * 0.18215), where diffusers' output_type="latent" result lives.
    torch.save(model.latent_format.to_sampler(out), OURS_OUT)
    return {
        "case": "ours", "load_s": load_s, "encode_s": encode_s, "steps": steps,
        "loop_s": t_end - timer.first_start, "call_s": t_end - t_call,
        "setup_s": timer.first_start - t_call,  # noise, sigmas, model sampling: before the first UNet call
        "step_deltas": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
        "unet_calls": list(timer.calls), "unet_batch": timer.batch,
        "attn": _attn_processors(model.unet), "finite": bool(torch.isfinite(out).all()),
        "unet_fingerprint": _fingerprint(model.unet), "load_path": "load_checkpoint",
    }


# -- case: diffusers ---------------------------------------------------------------------------

def _diffusers_pipeline():
    """(pipe, how, errors, t0): the pipeline, which of the three ways loaded it (see the module
    docstring), why the earlier ways failed, and when the successful attempt started."""
    import torch
    from diffusers import StableDiffusionPipeline

    from nodes.models import clip_tokenizer
    from nodes.models.configs import SD15_DIR

    kw = dict(config=str(SD15_DIR), local_files_only=True, torch_dtype=torch.float32, safety_checker=None)
    errors = []
    attempts = [("from_single_file(config=sd15, tokenizer=clip_tokenizer())", {"tokenizer": clip_tokenizer()})]
    if (SD15_DIR / "tokenizer" / "vocab.json").is_file():
        attempts.insert(0, ("from_single_file(config=sd15)", {}))
    else:
        # Without tokenizer/, transformers 5.x silently builds a 2-token CLIPTokenizer with no
        # model_max_length, and the pipeline then fails in encode_prompt (OverflowError).
        errors.append("nodes/configs/sd15 has no tokenizer/ (from_single_file would build an empty "
                      "2-token CLIPTokenizer from it and fail in encode_prompt)")
    for how, extra in attempts:
        t0 = time.perf_counter()
        try:
            pipe = StableDiffusionPipeline.from_single_file(str(CKPT), **kw, **extra)
            if len(pipe.tokenizer) < 49408 or pipe.tokenizer.model_max_length != 77:
                raise ValueError(f"unusable tokenizer ({len(pipe.tokenizer)} tokens)")
            return pipe, how, errors, t0
        except Exception as e:  # noqa: BLE001 - recorded and reported
            errors.append(f"{how} failed: {type(e).__name__}: {_first_line(e)}")
            pipe = None
    t0 = time.perf_counter()
    from diffusers import PNDMScheduler

    from nodes.models import load_checkpoint

    model, clip, vae = load_checkpoint(CKPT, device="cpu", dtype=torch.float32)
    sched = PNDMScheduler.from_pretrained(str(SD15_DIR), subfolder="scheduler", local_files_only=True)
    pipe = StableDiffusionPipeline(
        vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip_tokenizer(), unet=model.unet,
        scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return pipe, "our components (load_checkpoint) + clip_tokenizer()", errors, t0


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:200]


def case_diffusers(steps: int, warmup: bool) -> dict:
    import torch
    from diffusers import EulerDiscreteScheduler

    from nodes.models.configs import SD15_DIR

    pipe, how, errors, t0 = _diffusers_pipeline()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    timer = UNetTimer(pipe.unet)
    sched_file = SD15_DIR / "scheduler" / "scheduler_config.json"

    def run(n):
        stamps = []

        def on_step_end(p, i, t, kwargs):
            stamps.append(time.perf_counter())
            return kwargs

        out = pipe(
            PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=n,
            guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent",
            callback_on_step_end=on_step_end,
        ).images
        return out, stamps

    if warmup:
        run(1)
    timer.reset()
    t_call = time.perf_counter()
    out, stamps = run(steps)
    call_s = time.perf_counter() - t_call
    result = {
        "case": "diffusers", "load_s": load_s, "steps": steps,
        "loop_s": stamps[-1] - timer.first_start, "call_s": call_s,
        "setup_s": timer.first_start - t_call,  # text encoding + latent/timestep preparation
        "step_deltas": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
        "unet_calls": list(timer.calls), "unet_batch": timer.batch,
        "attn": _attn_processors(pipe.unet), "finite": bool(torch.isfinite(out).all()),
        "unet_fingerprint": _fingerprint(pipe.unet), "load_path": how, "load_errors": errors,
        "scheduler": type(pipe.scheduler).__name__, "scheduler_config_file": str(sched_file),
    }
    if OURS_OUT.is_file():  # same noise (seed 0), same model; the schedules differ slightly (see below)
        ours = torch.load(OURS_OUT)
        result["max_abs_diff_vs_ours"] = float((ours - out).abs().max())
        result["max_abs_out"] = float(out.abs().max())
    return result


def run_case(case: str, steps: int, warmup: bool, threads: int) -> int:
    import torch

    torch.set_num_threads(threads)
    if case == "build":
        result = build_checkpoint()
    elif case == "threads":
        result = {"threads": torch.get_num_threads()}
    else:
        fn = case_ours if case == "ours" else case_diffusers
        result = fn(steps, warmup)
    result["threads"] = torch.get_num_threads()
    _emit(result)
    return 0


# -- parent ------------------------------------------------------------------------------------

def run_child(script: str, case: str, options: list[str], tag: str) -> dict:
    """Run one case of a bench script in a fresh process (its own peak RSS, no warm caches from other
    cases) and return the JSON result it printed after `tag`."""
    cmd = [sys.executable, str(Path(script).resolve()), "--case", case, *options]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DIFFUSERS_VERBOSITY="error")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(tag):
            return json.loads(line[len(tag):])
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
    raise SystemExit(f"case {case!r} crashed (exit {proc.returncode})")


def spawn(case: str, args) -> dict:
    options = ["--steps", str(args.steps)] + (["--threads", str(args.threads)] if args.threads else [])
    return run_child(__file__, case, options + (["--no-warmup"] if args.no_warmup else []), RESULT_TAG)


def ensure_checkpoint(args) -> None:
    if CKPT.is_file() and CKPT.stat().st_size == EXPECTED_BYTES:
        print(f"checkpoint: {CKPT.relative_to(REPO)} (cached)")
        return
    print(f"checkpoint: building {CKPT.relative_to(REPO)} from {MANIFEST} ...", flush=True)
    r = spawn("build", args)
    same = r["sha256"] == EXPECTED_SHA256 and r["bytes"] == EXPECTED_BYTES
    print(f"  built in {r['seconds']:.0f} s, {r['bytes']:,} bytes, sha256 {r['sha256'][:16]}… "
          + ("== README" if same else f"!= README ({EXPECTED_SHA256[:16]}…): NOT the reference bytes"))


def _summary(runs: list[dict]) -> dict:
    """One row per case over its repeats: median s/step and UNet time, max peak RSS."""
    per_step = [r["loop_s"] / r["steps"] for r in runs]
    unet = [statistics.mean(r["unet_calls"]) * len(r["unet_calls"]) / r["steps"] for r in runs]
    deltas = [d for r in runs for d in r["step_deltas"]]
    # standard error of s/step, from the spread of the individual step times
    se = statistics.stdev(deltas) / len(deltas) ** 0.5 if len(deltas) > 1 else float("nan")
    return {
        "load_s": statistics.median(r["load_s"] for r in runs),
        "s_per_step": statistics.median(per_step), "s_per_step_runs": per_step, "se": se,
        "median_step": statistics.median(deltas) if deltas else float("nan"),
        "unet_per_step": statistics.median(unet), "peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
        "setup_s": statistics.median(r["setup_s"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["ours", "diffusers", "build", "threads"], help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads for both cases (default: torch's)")
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--repeats", type=int, default=1, help="alternate the two cases this many times (median)")
    p.add_argument("--only", choices=["ours", "diffusers"], help="run one case (no ratio)")
    args = p.parse_args(argv)
    if args.case:
        threads = args.threads or __import__("torch").get_num_threads()
        return run_case(args.case, args.steps, not args.no_warmup, threads)

    ensure_checkpoint(args)
    if not args.threads:
        args.threads = spawn("threads", args)["threads"]
    print(f"workload: {SIZE}x{SIZE}, batch 1, {args.steps} steps, euler/normal, cfg {CFG}, float32, CPU, "
          f"{args.threads} torch threads (both cases), warm-up {'off' if args.no_warmup else '1-step run'}",
          flush=True)
    cases = [args.only] if args.only else ["ours", "diffusers"]
    if OURS_OUT.exists():
        OURS_OUT.unlink()
    runs: dict[str, list[dict]] = {c: [] for c in cases}
    for k in range(args.repeats):
        for case in cases:
            print(f"running {case} ({k + 1}/{args.repeats}) ...", flush=True)
            runs[case].append(spawn(case, args))
    rows = {c: _summary(rs) for c, rs in runs.items()}

    print()
    print(f"{'case':<10} {'load s':>7} {'s/step':>8} {'± se':>6} {'med step':>9} {'UNet/step':>10} {'other/step':>11} "
          f"{'peak RSS GB':>12}")
    for case, r in rows.items():
        print(f"{case:<10} {r['load_s']:>7.2f} {r['s_per_step']:>8.3f} {r['se']:>6.3f} {r['median_step']:>9.3f} "
              f"{r['unet_per_step']:>10.3f} {r['s_per_step'] - r['unet_per_step']:>11.4f} {r['peak_rss_gb']:>12.2f}")
    print("  s/step: from the start of the first UNet forward to the end of the sampling loop, / steps (both cases;")
    print("    excludes text encoding and the setup before the first UNet call). ± se: standard error from the spread")
    print("    of the individual step times. med step: median time between step callbacks (robust to load spikes).")
    print("    UNet/step: UNet forward time (one batch-2 call per step).")
    print("    other/step: s/step − UNet/step, the driver's own per-step cost (CFG, scaling, sampler math).")
    for case, rs in runs.items():
        r = rs[-1]
        print(f"  {case}: loaded via {r['load_path']}; {len(r['unet_calls'])} UNet calls × batch "
              f"{sorted(set(r['unet_batch']))}; attention {', '.join(r['attn'])}; setup before 1st UNet call "
              f"{rows[case]['setup_s']:.3f} s; output finite={r['finite']}")
        for err in r.get("load_errors", []):
            print(f"    fell back: {err}")
    if len(rows) == 2:
        o, d = runs["ours"][-1], runs["diffusers"][-1]
        same = math.isclose(o["unet_fingerprint"], d["unet_fingerprint"], rel_tol=1e-9)
        print(f"  UNet weights identical in both cases (checksum): {same}")
        if "max_abs_diff_vs_ours" in d:
            print(f"  final latents, ours vs diffusers: max |diff| {d['max_abs_diff_vs_ours']:.3g} "
                  f"(max |latent| {d['max_abs_out']:.3g}; diffusers' Euler interpolates sigma linearly in t,")
            print("    ComfyUI's normal schedule log-linearly, so the sigmas differ slightly)")
        ro, rd = rows["ours"], rows["diffusers"]
        ratio = ro["s_per_step"] / rd["s_per_step"]
        noise = 2 * ratio * math.hypot(ro["se"] / ro["s_per_step"], rd["se"] / rd["s_per_step"])
        verdict = "OK" if ratio <= 1.0 else "MISSED"
        print(f"\nours/diffusers s/step = {ratio:.3f} (target <= 1.0): {verdict}   "
              f"[within-run 2-se band ±{noise:.3f}{': the difference is within it' if abs(ratio - 1) < noise else ''}]")
        print(f"  median-step ratio (robust to load spikes, for reference): "
              f"{ro['median_step'] / rd['median_step']:.3f}")
        if args.repeats > 1:
            print("  per-run s/step: " + "; ".join(
                f"{c} " + ", ".join(f"{x:.3f}" for x in rows[c]["s_per_step_runs"]) for c in rows))
        print("  (cases run one after the other: load on a shared machine can shift one case's s/step more than")
        print("   the band shows; use --repeats N to alternate them and take medians)")
        if verdict == "MISSED":
            print("  TARGET MISSED: our KSampler path measured slower per step than diffusers' pipeline.")
    (CACHE_DIR / "last_result.json").write_text(json.dumps({"summary": rows, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
