"""Where a CFG step's time goes: torch.profiler over one UNet call (batch 2: cond + uncond), eager and
compiled (`--compile`: inductor with freezing), on the random SD 1.5 layout.

    python bench/profile_step.py                 # 512², fp32, eager then compiled
    python bench/profile_step.py --size 256 --no-compile
    python bench/profile_step.py --quick         # tiny random model: checks the script only

Each operator's self time is put in a group (convolutions, matrix products, attention, norms,
inductor's generated kernels, the rest); the table prints each group's ms and share, eager against
compiled. The compiled column is measured after the compiling call.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for p in (str(REPO), str(REPO / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

# (group, substrings of operator names), first match wins.
GROUPS = (
    ("convolution", ("convolution", "conv2d", "_convolution_pointwise")),
    ("attention (SDPA)", ("scaled_dot_product", "attention")),
    ("matrix products", ("addmm", "aten::mm", "bmm", "linear", "matmul", "mkl_linear")),
    ("norms", ("group_norm", "layer_norm")),
    ("inductor's generated kernels", ("CompiledFxGraph", "cpp_fused", "kernel_cpp")),
    ("compiled-call overhead (guards, wrappers)", ("TorchDynamo", "Torch-Compiled", "Pregraph", "AOTDispatcher")),
    ("copies and layout", ("copy_", "contiguous", "clone", "reorder", "to_dense", "to_mkldnn")),
)


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other (elementwise, views, allocation)"


def profile_call(fn) -> tuple[dict[str, float], float]:
    """{group: self CPU ms} of one call of fn, and the call's wall time in s."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        groups[group_of(event.key)] = groups.get(group_of(event.key), 0.0) + event.self_cpu_time_total / 1000.0
    return groups, wall


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--no-compile", action="store_true", help="profile eager only")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny random model at 64x64 (mechanics only)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from nodes.core.kernels import compiled
    from nodes.models import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="sdgraph-profile-") as tmp:
        if args.quick:
            from nodes.models.testing import write_tiny_checkpoint

            ckpt, args.size = write_tiny_checkpoint(Path(tmp) / "tiny.safetensors", seed=0), 64
        else:
            import sampling  # bench/sampling.py builds and caches the SD 1.5 layout

            sampling.ensure_checkpoint(argparse.Namespace(steps=1, threads=args.threads, no_warmup=True))
            ckpt = sampling.CKPT
        model, _clip, _vae = load_checkpoint(ckpt, device="cpu", dtype=torch.float32)
    unet, lat = model.unet, args.size // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, lat, lat, generator=g)  # [2, 4, h, w]: cond + uncond rows
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)  # [2, 77, 768]

    columns: dict[str, tuple[dict[str, float], float]] = {}
    with torch.inference_mode():
        def eager():
            return unet(x, t, encoder_hidden_states=context).sample
        eager()  # warm-up: first-call allocations
        plain: dict[str, float] = {"eager": timed(eager)}
        columns["eager"] = profile_call(eager)
        if not args.no_compile:
            fast = compiled(unet)
            t0 = time.perf_counter()
            fast(x, t, encoder_hidden_states=context)
            print(f"compiling call: {time.perf_counter() - t0:.0f} s", flush=True)
            plain["compiled"] = timed(lambda: fast(x, t, encoder_hidden_states=context))
            columns["compiled"] = profile_call(lambda: fast(x, t, encoder_hidden_states=context).sample)

    print(f"one UNet call, batch 2, {args.size}², fp32, {torch.get_num_threads()} threads "
          f"({'tiny model' if args.quick else 'SD 1.5 layout'}); self CPU time per group")
    names = sorted({g for groups, _ in columns.values() for g in groups},
                   key=lambda g: -columns["eager"][0].get(g, 0.0))
    print(f"{'group':<44}" + "".join(f"{c + ' ms':>14}{'%':>7}" for c in columns))
    for name in names:
        cells = ""
        for groups, _ in columns.values():
            total = sum(groups.values())
            ms = groups.get(name, 0.0)
            cells += f"{ms:>14.0f}{100 * ms / total:>6.1f}%"
        print(f"{name:<44}{cells}")
    print(f"{'wall time of the profiled call (s)':<44}" + "".join(f"{wall:>14.2f}{'':>7}" for _, wall in columns.values()))
    print(f"{'wall time without the profiler (s)':<44}" + "".join(f"{plain[c]:>14.2f}{'':>7}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
