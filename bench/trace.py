"""What recording an explain trace costs: KSamplerTrace's run vs KSampler's, on CPU.

Model: a UNet with SD 1.5's exact layout (nodes/configs/sd15/unet, the layout of
../shared/fixtures/sd15_manifest.tsv) filled by the fixture README's rules for random checkpoints
(biases 0, 1-D weights 1, the rest N(0, 0.02²)), built in memory: the UNet is all that sampling
runs, and the prompts are random [1, 77, 768] hidden states (no text encoder, no VAE needed).
Workload: euler / normal, cfg 8, batch 1, float32, at --size px (default 512: a 64×64 latent).

    python bench/trace.py                 # 512², 10 steps, 2 repeats (minutes per run on a CPU)
    python bench/trace.py --quick         # 128², 3 steps, 1 repeat: a smoke run of the same code

Three cases, interleaved per repeat after a 1-step warm-up of each: plain sampling
(ksampler.sample), a trace without attention, and a trace with cross-attention maps
(trace.record_sampling; the schedule table it also builds is included), then the time the node
spends writing the editor's view files (trace_figures.write_view) once. Each row is the median
wall time over the repeats, with the process's CPU time beside it (less disturbed by other load on
a shared machine; with --threads 1 it is the better measure); the overhead (wall) is relative to
plain. Targets: trace ≤ +10 %,
trace + attention ≤ +15 %. Memory: the trace's own bytes (Trace.cache_nbytes, float16) for the
steps run, and extrapolated to 30 steps. Every case checks its latent equals plain's (torch.equal).
Exits 0 whether the targets are met or missed (printed as OK / MISSED); non-zero only on a crash.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = {"trace": 0.10, "trace + attention": 0.15}


def sd15_model():
    """A DiffusionModel around a random UNet with SD 1.5's layout (float32, CPU)."""
    import torch

    from nodes.core.values import DiffusionModel
    from nodes.models.build import empty_unet
    from nodes.models.configs import SD15_DIR, alphas_cumprod_from_scheduler_config, component_config

    unet = empty_unet(component_config(SD15_DIR, "unet")).to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    unet.eval().requires_grad_(False)
    schedule = component_config(SD15_DIR, "scheduler")
    return DiffusionModel(unet=unet, alphas_cumprod=alphas_cumprod_from_scheduler_config(schedule),
                          dtype=torch.float32, device=torch.device("cpu"), name="random SD 1.5 layout")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128², 3 steps, 1 repeat")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 512; quick 128)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 10; quick 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 2; quick 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = parser.parse_args()
    size = args.size or (128 if args.quick else 512)
    steps = args.steps or (3 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 2)

    import torch

    from nodes.core.values import ConditioningEntry, Latent
    from nodes.imaging.trace_figures import write_view
    from nodes.sampling import ksampler
    from nodes.sampling.trace import record_sampling

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = sd15_model()
    print(f"model: {model.name}, built in {time.perf_counter() - t0:.0f} s; {size}² ({size // 8}² latent), "
          f"{steps} steps, euler/normal, cfg 8, {torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    positive = [ConditioningEntry(cond=torch.randn(1, 77, 768, generator=g))]
    negative = [ConditioningEntry(cond=torch.randn(1, 77, 768, generator=g))]
    latent = Latent(torch.zeros(1, 4, size // 8, size // 8))
    settings = dict(seed=0, cfg=8.0, sampler_name="euler", scheduler="normal")

    def plain(n):
        return ksampler.sample(model, positive, negative, latent, steps=n, **settings), None

    def traced(n, attention):
        return record_sampling(model, positive, negative, latent, steps=n, record_attention=attention, **settings)

    cases = {"plain": plain, "trace": lambda n: traced(n, False), "trace + attention": lambda n: traced(n, True)}
    for run in cases.values():  # warm-up: first-call costs (allocator, kernels) out of the timings
        run(1)
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    results: dict[str, tuple] = {}
    for _ in range(repeats):
        for name, run in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = run(steps)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)

    reference = results["plain"][0]
    base, base_cpu = statistics.median(times["plain"]), statistics.median(cpu["plain"])
    print(f"{'case':<20}{'s/run':>9}{'s/step':>9}{'cpu s':>9}{'cpu +':>9}{'overhead':>10}{'target':>9}  "
          f"{'trace MB':>9}{'MB @30 steps':>14}  same latent")
    for name in cases:
        t, c = statistics.median(times[name]), statistics.median(cpu[name])
        samples, trace = results[name]
        overhead = t / base - 1.0
        target = TARGETS.get(name)
        verdict = "" if target is None else (" OK" if overhead <= target else " MISSED")
        mb = "" if trace is None else f"{trace.cache_nbytes() / 1e6:9.2f}"
        mb30 = "" if trace is None else f"{trace.cache_nbytes() / 1e6 * 30 / steps:14.1f}"
        print(f"{name:<20}{t:9.2f}{t / steps:9.3f}{c:9.2f}{c / base_cpu - 1.0:+9.1%}{overhead:+10.1%}"
              f"{'' if target is None else f'≤{target:.0%}':>9}{verdict:<8}{mb:>9}{mb30:>14}  "
              f"{torch.equal(samples, reference)}")
    # The node's extra work after sampling: the editor's tiles (PNG) and the attention .npz.
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_view(results["trace + attention"][1], folder, "normal")
        print(f"KSamplerTrace's view files (tiles + attention.npz) for {steps} steps: "
              f"{time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
