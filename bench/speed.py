"""Speed and memory on CPU, in one run: sdgraph vs diffusers' StableDiffusionPipeline, same weights.

    python bench/speed.py                  # SD 1.5 layout, 256² and 512², fp32 and bf16, 10 steps
    python bench/speed.py --quick          # tiny random model, 64², 1 step: checks the mechanics only
    python bench/speed.py --sizes 512 --dtypes bf16 --steps 20 --threads 2

Model: the random-weight SD 1.5 checkpoint bench/sampling.py builds from bench/data/sd15_manifest.tsv
(cached in bench/_sd15_cache/, 2.1 GB, built once). --quick: a tiny random SD-shaped model
(nodes.models.testing) written to a temporary file.

Each (implementation, dtype, size) runs in its own subprocess, so its peak RSS
(getrusage ru_maxrss) is its own; the parent reads the checkpoint once first so that every
"load s" is a load from the page cache. Per case, in this order:
  load s     (Python imports done before) sdgraph: load_checkpoint(path, dtype); diffusers: StableDiffusionPipeline.from_single_file
             (config nodes/configs/sd15, our CLIP tokenizer, torch_dtype) — for --quick, or if that
             fails, a pipeline around modules loaded by load_checkpoint (noted in the output).
  s/step     euler, normal/linear schedule, cfg 8, batch 1, after a 1-step warm-up; from the start of
             the first UNet forward to the end of the loop, / steps (text encoding excluded).
  VAE s      decoding the final latent to pixels once (no warm-up, the same for both).
  peak RSS   the subprocess's peak resident memory.
Ratio columns are sdgraph / diffusers (below 1: sdgraph is faster or smaller). Exits 0 unless a case
crashes. Raw numbers: bench/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results" / "speed.json"
RESULT_TAG = "SPEED_BENCH_RESULT "
PROMPT, NEGATIVE, SEED, CFG = "a watercolor painting of a lighthouse at dusk", "blurry, low quality", 0, 8.0
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

for p in (str(REPO), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)


# -- cases (run in a subprocess) ----------------------------------------------------------------

def _torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[name])


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _preimport() -> None:
    """Import what either load path imports, so that "load s" times loading, not Python imports."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401

    import nodes.models  # noqa: F401


def case_sdgraph(ckpt: Path, dtype_name: str, size: int, steps: int, compiled: bool = False) -> dict:
    import torch

    from nodes.core.values import Latent
    from nodes.imaging.vae import decode
    from nodes.models import load_checkpoint
    from nodes.sampling import ksampler
    from nodes.text import encode_text

    dtype = _torch_dtype(dtype_name)
    _preimport()
    t0 = time.perf_counter()
    model, clip, vae = load_checkpoint(ckpt, device="cpu", dtype=dtype)
    load_s = time.perf_counter() - t0
    if compiled:
        model = model.patched(compile="inductor")  # what --compile does (nodes/core/kernels.py)
    pos, neg = encode_text(clip, PROMPT), encode_text(clip, NEGATIVE)
    lat = size // model.latent_format.downscale

    def run(n):
        return ksampler.sample(model, pos, neg, Latent(torch.zeros(1, model.latent_format.channels, lat, lat)),
                               seed=SEED, steps=n, cfg=CFG, sampler_name="euler", scheduler="normal")

    t0 = time.perf_counter()
    run(1)  # warm-up (compiles the UNet for this shape when compiled)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = run(steps)  # text encoding is done: this is the sampling loop alone
    loop_s = time.perf_counter() - t0
    result = {"load_s": load_s, "s_per_step": loop_s / steps}
    if compiled:
        t0 = time.perf_counter()
        decode(vae, out, compile="inductor")  # compiles the decoder
        result["compile_s"] = warmup_s + time.perf_counter() - t0
    t0 = time.perf_counter()
    image = decode(vae, out, compile="inductor" if compiled else None)
    result["vae_s"] = time.perf_counter() - t0
    result["finite"] = bool(torch.isfinite(out).all() and torch.isfinite(image).all())
    return result


def _pipeline(ckpt: Path, dtype, quick: bool):
    """(pipe, how): diffusers' own single-file load, or a pipeline around modules we loaded."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from nodes.models import clip_tokenizer, load_checkpoint
    from nodes.models.configs import SD15_DIR

    sched = EulerDiscreteScheduler.from_pretrained(str(SD15_DIR), subfolder="scheduler", local_files_only=True)
    why = "--quick: a tiny sdgraph-format file"
    if not quick:
        try:
            pipe = StableDiffusionPipeline.from_single_file(
                str(ckpt), config=str(SD15_DIR), local_files_only=True, torch_dtype=dtype, safety_checker=None,
                tokenizer=clip_tokenizer())
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
            return pipe, "from_single_file"
        except Exception as e:  # noqa: BLE001 - reported; the fallback still compares the same weights
            why = f"from_single_file failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    model, clip, vae = load_checkpoint(ckpt, device="cpu", dtype=dtype)
    pipe = StableDiffusionPipeline(vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip_tokenizer(),
                                   unet=model.unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe, f"modules from load_checkpoint ({why})"


def case_diffusers(ckpt: Path, dtype_name: str, size: int, steps: int, quick: bool) -> dict:
    import torch
    from sampling import UNetTimer  # bench/sampling.py

    dtype = _torch_dtype(dtype_name)
    _preimport()
    t0 = time.perf_counter()
    pipe, how = _pipeline(ckpt, dtype, quick)
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    timer = UNetTimer(pipe.unet)
    stamps: list[float] = []

    def run(n):
        stamps.clear()

        def on_step_end(p, i, t, kwargs):
            stamps.append(time.perf_counter())
            return kwargs

        return pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=n,
                    guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent",
                    callback_on_step_end=on_step_end).images

    run(1)  # warm-up
    timer.reset()
    out = run(steps)
    loop_s = stamps[-1] - timer.first_start
    t0 = time.perf_counter()
    with torch.inference_mode():
        image = pipe.vae.decode(out / pipe.vae.config.scaling_factor).sample
    vae_s = time.perf_counter() - t0
    return {"load_s": load_s, "s_per_step": loop_s / steps, "vae_s": vae_s, "load_path": how,
            "finite": bool(torch.isfinite(out).all() and torch.isfinite(image).all())}


def run_case(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    impl, dtype_name, size = args.case.split(",")
    ckpt = Path(args.ckpt)
    if impl in ("sdgraph", "compiled"):
        result = case_sdgraph(ckpt, dtype_name, int(size), args.steps, compiled=impl == "compiled")
    else:
        result = case_diffusers(ckpt, dtype_name, int(size), args.steps, args.quick)
    result.update(impl=impl, dtype=dtype_name, size=int(size), steps=args.steps, threads=torch.get_num_threads(),
                  peak_rss_gb=_peak_rss_gb())
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# -- parent -------------------------------------------------------------------------------------

def spawn(case: str, ckpt: Path, args) -> dict:
    from sampling import run_child

    options = ["--ckpt", str(ckpt), "--steps", str(args.steps), "--threads", str(args.threads)]
    return run_child(__file__, case, options + (["--quick"] if args.quick else []), RESULT_TAG)


def tiny_checkpoint(folder: Path) -> Path:
    from nodes.models.testing import write_tiny_checkpoint

    return write_tiny_checkpoint(folder / "tiny.safetensors", seed=0)


def sd15_checkpoint(args) -> Path:
    import sampling  # bench/sampling.py builds and caches it

    sampling.ensure_checkpoint(argparse.Namespace(steps=1, threads=args.threads, no_warmup=True))
    return sampling.CKPT


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def summarise(results: list[dict]) -> list[dict]:
    """One row per (impl, dtype, size): the median of each timing over the repeats, the largest peak RSS."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["impl"], r["dtype"], r["size"]), []).append(r)
    rows = []
    for runs in groups.values():
        row = dict(runs[0], repeats=len(runs), finite=all(r["finite"] for r in runs),
                   peak_rss_gb=max(r["peak_rss_gb"] for r in runs))
        for key in ("load_s", "s_per_step", "vae_s", "compile_s"):
            if key in runs[0]:
                row[key] = statistics.median(r[key] for r in runs)
                row[key + "_all"] = [round(r[key], 3) for r in runs]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> list[str]:
    def ratio(a, b):
        return f"{a / b:5.2f}" if b else "   - "

    lines = [f"{'size':>5} {'dtype':>5} {'impl':>8} | {'load s':>6} {'diff.':>6} {'ratio':>5} | {'s/step':>7} "
             f"{'diff.':>7} {'ratio':>5} | {'VAE s':>6} {'diff.':>6} {'ratio':>5} | {'RSS GB':>6} {'diff.':>6} {'ratio':>5}"]
    keyed = {(r["impl"], r["dtype"], r["size"]): r for r in rows}
    for size in sorted({r["size"] for r in rows}):
        for dt in [d for d in DTYPES if any(r["dtype"] == d for r in rows)]:
            d = keyed.get(("diffusers", dt, size))
            for impl in ("sdgraph", "compiled"):
                o = keyed.get((impl, dt, size))
                if not (o and d):
                    continue
                lines.append(
                    f"{size:>5} {dt:>5} {impl:>8} | {o['load_s']:>6.2f} {d['load_s']:>6.2f} {ratio(o['load_s'], d['load_s'])} | "
                    f"{o['s_per_step']:>7.3f} {d['s_per_step']:>7.3f} {ratio(o['s_per_step'], d['s_per_step'])} | "
                    f"{o['vae_s']:>6.2f} {d['vae_s']:>6.2f} {ratio(o['vae_s'], d['vae_s'])} | "
                    f"{o['peak_rss_gb']:>6.2f} {d['peak_rss_gb']:>6.2f} {ratio(o['peak_rss_gb'], d['peak_rss_gb'])}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads in every case (default: torch's)")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of each case, in alternating order; the table shows medians (default 2)")
    p.add_argument("--compile", action="store_true",
                   help="also run sdgraph with --compile (inductor; minutes of compiling per size and dtype)")
    p.add_argument("--quick", action="store_true", help="tiny random model, 64x64, 1 step (mechanics only)")
    args = p.parse_args(argv)
    if args.case:
        return run_case(args)
    if args.quick:
        args.sizes, args.steps = [64], 1
    with tempfile.TemporaryDirectory(prefix="sdgraph-speed-") as tmp:
        ckpt = tiny_checkpoint(Path(tmp)) if args.quick else sd15_checkpoint(args)
        warm_page_cache(ckpt)
        what = "tiny random SD-shaped model (--quick)" if args.quick else "random SD 1.5 layout"
        print(f"speed: {what}, sizes {args.sizes}, {args.dtypes}, {args.steps} steps, euler, cfg {CFG}, batch 1, "
              f"CPU, threads {args.threads or 'torch default'}", flush=True)
        results = []
        impls = ["sdgraph", "diffusers"] + (["compiled"] if args.compile else [])
        for size in args.sizes:
            for dt in args.dtypes:
                for r in range(args.repeats):
                    # Alternate the order: a machine that slows down or warms up favours neither side.
                    for impl in (impls if r % 2 == 0 else impls[::-1]):
                        print(f"  running {impl} {dt} {size}x{size} (repeat {r + 1}/{args.repeats}) ...", flush=True)
                        results.append(spawn(f"{impl},{dt},{size}", ckpt, args))
    rows = summarise(results)
    print()
    print("\n".join(table(rows)))
    print("  ratio = sdgraph / diffusers (< 1: sdgraph faster or smaller). load: from the page cache. s/step: CFG step")
    print("  (batch-2 UNet call + sampler), after a 1-step warm-up. VAE: one decode of the final latent, no warm-up.")
    print(f"  medians of {args.repeats} runs per case, in alternating order. compiled: sdgraph --compile, timed after "
          "its compiling warm-up")
    for row in rows:
        if "compile_s" in row:
            print(f"  compiled {row['dtype']} {row['size']}: compiling (UNet warm-up step + first decode) "
                  f"{row['compile_s']:.0f} s")
    paths = sorted({r["load_path"] for r in results if "load_path" in r})
    print(f"  diffusers loaded via: {'; '.join(paths)}")
    bad = [f"{r['impl']} {r['dtype']} {r['size']}" for r in rows if not r["finite"]]
    if bad:
        print(f"  NON-FINITE output in: {', '.join(bad)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
