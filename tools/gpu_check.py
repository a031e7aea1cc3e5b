"""`make gpu-check`: the GPU tests and the GPU benchmark, in one command, on a machine without internet.

    python tools/gpu_check.py pack     # here (online): wheels a bare CUDA machine lacks -> .gpu_check/wheels/
    python tools/gpu_check.py run      # there: install them (if needed), then tests + benchmark (< 8 min)
    python tools/gpu_check.py run --quick   # 2 steps, 256x256: a smoke test of the script itself

Such a machine has CUDA torch (and numpy, pillow, safetensors, transformers, networkx, pyyaml, scipy),
but not diffusers or torchsde. `pack` downloads their wheels (pure Python, --no-deps: diffusers at the
version installed here, torchsde, trampoline, importlib_metadata) into .gpu_check/wheels/
(git-ignored); copy the repo with that folder (the benchmark's model layout ships in
bench/data/sd15_manifest.tsv). `run` installs the wheels with pip --no-index into .gpu_check/site
when an import is missing, and then:

1. GPU tests
   a. the default workflow (bundled model) on CUDA with `--dtype auto` (fp16): finite, and the
      prompt's red circle at the top left is found in the picture (tools/shapes_data.analyse_image).
   b. a random-weight SD 1.5 layout (bench/data/sd15_manifest.tsv, bench/data/README.md's rules) at
      256², 4 steps, euler: CUDA fp16 against CPU fp32, same seed. Tolerance: PSNR >= 30 dB over the
      decoded image (fp16 has 11 bits of mantissa; a wrong cast or layout gives < 15 dB).
2. Benchmark, SD 1.5 layout, 512², 20 steps, euler, cfg 8, batch 1, fp16: sdgraph eager, sdgraph with
   `--compile` (UNet and VAE decoder through inductor with freezing; compiled during a warm-up run), and diffusers'
   StableDiffusionPipeline around the same weights. Columns: steps/s (step callbacks, after a
   warm-up), end-to-end s (prompt encoding + sampling + VAE decode, CUDA-synchronized), peak VRAM
   (torch.cuda.max_memory_allocated). Ratios against diffusers.
3. SDXL base layout (random weights) at 1024², 10 steps, fp16, if at most 5 minutes have been used:
   sdgraph's KSampler against diffusers' StableDiffusionXLPipeline on the same modules, steps/s
   (sampling only) and peak VRAM.

Without CUDA, `run` says so and skips the GPU parts (exit 0). Exit 1 when a GPU test fails.
Results also go to .gpu_check/result.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".gpu_check"
WHEELS = WORK / "wheels"
SITE = WORK / "site"
PROMPT, NEGATIVE = "a watercolor painting of a lighthouse at dusk", "blurry, low quality"
PSNR_MIN_DB = 30.0
SDXL_START_BEFORE_S = 300  # SDXL's part takes about 2-3 minutes on an H100: start it only with that left
# diffusers' own needs that a CUDA image with torch and transformers may lack (all pure Python).
EXTRA_WHEELS = ("torchsde==0.2.6", "trampoline==0.1.2", "importlib_metadata")


def pack() -> int:
    from importlib.metadata import version

    WHEELS.mkdir(parents=True, exist_ok=True)
    wanted = [f"diffusers=={version('diffusers')}", *EXTRA_WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(WHEELS), *wanted]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    print(f"packed {len(list(WHEELS.glob('*.whl')))} wheels in {WHEELS.relative_to(REPO)}/; copy the repo with it, "
          "then run `make gpu-check` (or `python tools/gpu_check.py run`) there")
    return 0


def ensure_packages() -> None:
    """Make diffusers/torchsde importable: install the packed wheels into .gpu_check/site if needed."""
    if SITE.is_dir():
        sys.path.insert(0, str(SITE))
    missing = [m for m in ("diffusers", "torchsde", "trampoline") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    wheels = sorted(str(w) for w in WHEELS.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"missing {', '.join(missing)} and no wheels in {WHEELS}: run `python tools/gpu_check.py "
                         "pack` on a machine with internet access and copy .gpu_check/ here")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(SITE), *wheels], check=True)
    if str(SITE) not in sys.path:
        sys.path.insert(0, str(SITE))
    importlib.invalidate_caches()


def psnr(a, b) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


class Sync:
    """Wall-clock time with the GPU's queue drained first."""

    def __init__(self, torch):
        self.torch = torch

    def __call__(self) -> float:
        self.torch.cuda.synchronize()
        return time.perf_counter()


# -- 1. GPU tests -----------------------------------------------------------------------------------

def test_default_workflow_on_cuda() -> dict:
    sys.path.insert(0, str(REPO / "tools"))
    import shapes_data

    from nodegraph import REGISTRY, Executor
    from nodegraph.workflow import load_workflow
    from nodes.core.env import SDEnvironment
    from nodes.imaging.ops import image_to_pil

    REGISTRY.discover("nodes")
    graph = load_workflow(REPO / "workflows" / "default.json", REGISTRY)
    graph.set_value("6", "batch_size", 4)
    images = {}
    for device in ("cuda", "cpu"):
        env = SDEnvironment(output_dir=WORK / "out", device=device, dtype="auto" if device == "cuda" else "fp32")
        result = Executor(REGISTRY, env=env).run(graph, outputs=["8"], check=False)
        if not result.ok:
            return {"ok": False, "why": f"{device}: {result.error.message}"}
        images[device] = result.outputs["8"][0]
        if device == "cuda":
            dtype = str(env.dtype)
    readings = [shapes_data.analyse_image(image_to_pil(i), 1) for i in images["cuda"]]
    found = sum(bool(r["objects"]) and r["objects"][0]["colour"] == "red" and r["objects"][0]["shape"] == "circle"
                for r in readings)
    finite = bool(images["cuda"].isfinite().all())
    value = min(psnr(a, b) for a, b in zip(images["cuda"], images["cpu"], strict=True))
    return {"ok": finite and found >= 3, "dtype": dtype, "finite": finite, "red_circles_of_4": found,
            "min_psnr_vs_cpu_fp32_db": round(value, 1)}


def sd15_checkpoint() -> Path:
    sys.path.insert(0, str(REPO / "bench"))
    import sampling  # bench/sampling.py: builds it from bench/data/sd15_manifest.tsv (cached)

    if not sampling.CKPT.is_file():
        print("  building the random SD 1.5 checkpoint from bench/data/sd15_manifest.tsv ...", flush=True)
        sampling.build_checkpoint()
    return sampling.CKPT


def render(ckpt: Path, device: str, dtype, size: int, steps: int, *, compile_unet: bool = False):
    """(image [1, H, W, 3], step stamps, end-to-end s, model) with sdgraph's own path."""
    import torch

    from nodes.core.values import Latent
    from nodes.imaging.vae import decode
    from nodes.models import load_checkpoint
    from nodes.sampling import ksampler
    from nodes.text import encode_text

    model, clip, vae = load_checkpoint(ckpt, device=device, dtype=dtype)
    backend = "inductor" if compile_unet else None
    if backend:
        model = model.patched(compile=backend)  # what --compile does (nodes/core/kernels.py)
    now = Sync(torch) if device == "cuda" else time.perf_counter

    def once(n):
        stamps = []
        t0 = now()
        pos, neg = encode_text(clip, PROMPT), encode_text(clip, NEGATIVE)
        out = ksampler.sample(model, pos, neg, Latent(torch.zeros(1, 4, size // 8, size // 8)), seed=0, steps=n,
                              cfg=8.0, sampler_name="euler", scheduler="normal",
                              callback=lambda i, total, x, d: stamps.append(now()))
        image = decode(vae, out, compile=backend)
        return image, stamps, now() - t0

    return once, model


def test_fp16_matches_cpu_fp32(ckpt: Path, size: int, steps: int) -> dict:
    import torch

    cpu_once, _ = render(ckpt, "cpu", torch.float32, size, steps)
    cpu_image = cpu_once(steps)[0]
    gpu_once, _ = render(ckpt, "cuda", torch.float16, size, steps)
    gpu_image = gpu_once(steps)[0]
    value = psnr(gpu_image, cpu_image)
    return {"ok": bool(gpu_image.isfinite().all()) and value >= PSNR_MIN_DB, "psnr_db": round(value, 2),
            "tolerance_db": PSNR_MIN_DB, "max_abs_diff": round(float((gpu_image - cpu_image).abs().max()), 4),
            "size": size, "steps": steps}


# -- 2. benchmark ---------------------------------------------------------------------------------

def bench_sdgraph(ckpt: Path, size: int, steps: int, compiled: bool) -> dict:
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    once, _ = render(ckpt, "cuda", torch.float16, size, steps, compile_unet=compiled)
    warm_t = time.perf_counter()
    once(2)  # warm-up (compiles the UNet for this shape when compiled)
    warm_s = time.perf_counter() - warm_t
    _, stamps, total = once(steps)
    return {"steps_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "end_to_end_s": total,
            "peak_vram_gb": torch.cuda.max_memory_allocated() / 2**30, "warmup_s": warm_s,
            "setup_s": warm_t - t0}


def bench_diffusers(ckpt: Path, size: int, steps: int) -> dict:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from nodes.models import clip_tokenizer, load_checkpoint
    from nodes.models.configs import SD15_DIR

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, clip, vae = load_checkpoint(ckpt, device="cuda", dtype=torch.float16)  # the same weights
    sched = EulerDiscreteScheduler.from_pretrained(str(SD15_DIR), subfolder="scheduler", local_files_only=True)
    pipe = StableDiffusionPipeline(vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip_tokenizer(),
                                   unet=model.unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    now = Sync(torch)

    def once(n):
        stamps = []

        def on_step_end(p, i, t, kwargs):
            stamps.append(now())
            return kwargs

        t0 = now()
        pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=n, guidance_scale=8.0,
             generator=torch.Generator("cpu").manual_seed(0), output_type="pt", callback_on_step_end=on_step_end)
        return stamps, now() - t0

    once(2)
    stamps, total = once(steps)
    return {"steps_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "end_to_end_s": total,
            "peak_vram_gb": torch.cuda.max_memory_allocated() / 2**30}


def bench_sdxl(size: int, steps: int, device: str = "cuda", quick: bool = False) -> dict:
    """SDXL base layout with random weights (bench/models.py builds it from nodes/configs/sdxl), fp16 on
    the GPU: sdgraph's KSampler and diffusers' StableDiffusionXLPipeline on the same modules, sampling
    only (latent output: a random VAE tells nothing), alternating, after a warm-up of each."""
    from dataclasses import replace

    import torch

    sys.path.insert(0, str(REPO / "bench"))
    import models as bench_models  # bench/models.py
    from nodes.core.values import Latent
    from nodes.sampling import ksampler
    from nodes.text import encode_text

    dtype = torch.float16 if device == "cuda" else torch.float32
    model, clip, vae, tok, tok2 = bench_models.sdxl_random(quick)
    for module in (model.unet, vae, clip.text_encoder, clip.second.text_encoder):
        module.to(device=device, dtype=dtype)
    model = replace(model, dtype=dtype, device=torch.device(device))
    pipe = bench_models.sdxl_pipeline(model, clip, vae, tok, tok2)
    now = Sync(torch) if device == "cuda" else time.perf_counter
    pos, neg = encode_text(clip, PROMPT), encode_text(clip, NEGATIVE)

    def ours(n):
        stamps = []
        ksampler.sample(model, pos, neg, Latent(torch.zeros(1, 4, size // 8, size // 8)), seed=0, steps=n, cfg=7.0,
                        sampler_name="euler", scheduler="normal", callback=lambda i, total, x, d: stamps.append(now()))
        return stamps

    def theirs(n):
        stamps = []

        def on_step_end(p, i, t, kwargs):
            stamps.append(now())
            return kwargs

        pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=n, guidance_scale=7.0,
             generator=torch.Generator("cpu").manual_seed(0), output_type="latent", callback_on_step_end=on_step_end)
        return stamps

    rates: dict[str, list[float]] = {"sdgraph": [], "diffusers": []}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        ours(2), theirs(2)  # warm-up
        for _ in range(2):
            for name, fn in (("sdgraph", ours), ("diffusers", theirs)):
                stamps = fn(steps)
                rates[name].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    best = {name: max(r) for name, r in rates.items()}
    return {"size": size, "steps": steps, "steps_per_s": best, "ratio": best["sdgraph"] / best["diffusers"],
            "peak_vram_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


# -- main -----------------------------------------------------------------------------------------

def guarded(test) -> dict:
    """A test's result; a crash is a failed test with its error (the run goes on to the benchmark)."""
    try:
        return test()
    except Exception as e:  # noqa: BLE001 - reported as FAIL with the error and its traceback's end
        import traceback

        return {"ok": False, "error": f"{type(e).__name__}: {e}", "where": traceback.format_exc()[-1500:]}


def run(args) -> int:
    import torch

    t_start = time.perf_counter()
    if not torch.cuda.is_available():
        print(f"gpu-check: CUDA is not available here (torch {torch.__version__}): skipping the GPU tests and the GPU "
              "benchmark. Run it on a machine with an NVIDIA GPU and a CUDA build of torch.")
        return 0
    ensure_packages()
    sys.path.insert(0, str(REPO))
    WORK.mkdir(exist_ok=True)
    size, steps = (256, 2) if args.quick else (512, 20)
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"bf16 supported: {torch.cuda.is_bf16_supported()}", flush=True)
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    print("1a. default workflow on CUDA (--dtype auto) ...", flush=True)
    report["default_workflow"] = a = guarded(test_default_workflow_on_cuda)
    print(f"    {'PASS' if a['ok'] else 'FAIL'}: {a}", flush=True)
    ckpt = sd15_checkpoint()
    print("1b. random SD 1.5 layout, CUDA fp16 vs CPU fp32, 256x256, 4 steps ...", flush=True)
    report["fp16_vs_cpu_fp32"] = b = guarded(lambda: test_fp16_matches_cpu_fp32(ckpt, 256, 2 if args.quick else 4))
    print(f"    {'PASS' if b['ok'] else 'FAIL'}: {b}", flush=True)

    print(f"2. benchmark: SD 1.5 layout, {size}x{size}, {steps} steps, euler, cfg 8, fp16", flush=True)
    rows = {}
    for name, fn in (("diffusers", lambda: bench_diffusers(ckpt, size, steps)),
                     ("sdgraph eager", lambda: bench_sdgraph(ckpt, size, steps, False)),
                     ("sdgraph compiled", lambda: bench_sdgraph(ckpt, size, steps, True))):
        print(f"   {name} ...", flush=True)
        try:
            rows[name] = fn()
        except Exception as e:  # noqa: BLE001 - one failed case must not hide the others' numbers
            rows[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            print(f"     failed: {rows[name]['error']}", flush=True)
    report["benchmark"] = {"size": size, "steps": steps, "rows": rows}
    base = rows.get("diffusers", {})
    print(f"\n{'case':<18} {'steps/s':>8} {'x diff.':>8} {'end-to-end s':>13} {'x diff.':>8} {'peak VRAM GB':>13}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<18} failed: {r['error']}")
            continue
        sp = r["steps_per_s"] / base["steps_per_s"] if "steps_per_s" in base else float("nan")
        e2e = base["end_to_end_s"] / r["end_to_end_s"] if "end_to_end_s" in base else float("nan")
        print(f"{name:<18} {r['steps_per_s']:>8.2f} {sp:>8.2f} {r['end_to_end_s']:>13.2f} {e2e:>8.2f} "
              f"{r['peak_vram_gb']:>13.2f}")
    print("  x diff.: speed relative to diffusers (> 1: sdgraph faster). Targets: eager >= 1.0, compiled >= 1.4.")
    if "sdgraph compiled" in rows and "warmup_s" in rows["sdgraph compiled"]:
        print(f"  compile + 2-step warm-up: {rows['sdgraph compiled']['warmup_s']:.0f} s")
    # 3. SDXL at 1024², while the 8-minute budget allows (building the random model takes about a minute).
    elapsed = time.perf_counter() - t_start
    if args.quick or elapsed < SDXL_START_BEFORE_S:
        sdxl_size, sdxl_steps = (256, 3) if args.quick else (1024, 10)
        print(f"\n3. SDXL base layout, {sdxl_size}x{sdxl_size}, {sdxl_steps} steps, euler, cfg 7, fp16, sampling only ...",
              flush=True)
        report["sdxl"] = x = guarded(lambda: bench_sdxl(sdxl_size, sdxl_steps))
        if "ratio" in x:
            print(f"   steps/s sdgraph {x['steps_per_s']['sdgraph']:.2f}, diffusers {x['steps_per_s']['diffusers']:.2f}: "
                  f"x diff. {x['ratio']:.2f}; peak VRAM {x['peak_vram_gb']:.1f} GB", flush=True)
        else:
            print(f"   failed: {x.get('error')}", flush=True)
    else:
        print(f"\n3. SDXL skipped: {elapsed:.0f} s used of the 8-minute budget", flush=True)
    report["seconds"] = time.perf_counter() - t_start
    (WORK / "result.json").write_text(json.dumps(report, indent=2))
    print(f"\ngpu-check done in {report['seconds']:.0f} s; results in .gpu_check/result.json")
    return 0 if a["ok"] and b["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("pack", help="download the wheels a bare CUDA machine lacks into .gpu_check/wheels/")
    r = sub.add_parser("run", help="GPU tests, then the GPU benchmark")
    r.add_argument("--quick", action="store_true", help="256x256, 2 steps: a smoke test of this script")
    args = p.parse_args(argv)
    return pack() if args.command == "pack" else run(args)


if __name__ == "__main__":
    sys.exit(main())
