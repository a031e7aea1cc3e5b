"""Compiled kernels for the UNet and the VAE decoder.

`--compile` / the editor's setting / the `TorchCompileModel` node: `torch.compile` with the inductor
backend and freezing (weights folded in as constants, so inductor prepacks them for oneDNN's
convolutions and matrix products and picks their memory layout), static shapes. The first call for
each shape compiles (minutes on a small CPU), later calls reuse it; inductor's caches are kept in a
persistent folder (`compile_cache_dir`) so the next process compiles faster. Opt-in: the first image
of each size is slower than eager, and the frozen weights are a second copy in memory
(docs/performance.md has the numbers). channels_last alone was measured too and gave nothing
worth its copies on the CPU, so eager runs keep the loaded layout.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("sdgraph.kernels")

COMPILE_BACKENDS = ("inductor", "cudagraphs")
_lock = threading.Lock()


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled graphs between processes: $TORCHINDUCTOR_CACHE_DIR when set, else
    the user's cache folder (XDG_CACHE_HOME or ~/.cache)/sdgraph/inductor (torch's default, in /tmp,
    is lost at every reboot)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sdgraph" / "inductor"


def compiled(module: torch.nn.Module, backend: str = "inductor", *, key: str = "forward") -> Callable[..., Any]:
    """`module`, compiled once per (backend, key, weight dtype) and kept on the module itself, so the
    compiled code lives and dies with its weights (a cycle the garbage collector frees, no global
    registry) and a copy of the module (a LoRA'd UNet) compiles its own. `key` names a method other
    than forward (the VAE's "decode")."""
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"unknown compile backend {backend!r}; expected one of {', '.join(COMPILE_BACKENDS)}")
    dtype = next(module.parameters()).dtype
    with _lock:
        store = module.__dict__.get("_sdgraph_compiled")
        if store is None or store[0] != id(module):  # absent, or copied along from another module
            store = (id(module), {})
            module.__dict__["_sdgraph_compiled"] = store
        cache_key = (backend, key, dtype)
        fn = store[1].get(cache_key)
        if fn is None:
            fn = _compile(module, backend, key)
            store[1][cache_key] = fn
    return fn


def _compile(module: torch.nn.Module, backend: str, key: str) -> Callable[..., Any]:
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
    target = module if key == "forward" else getattr(module, key)
    log.info("compiling %s.%s with %s (the first call for each shape compiles)", type(module).__name__, key, backend)
    if backend == "cudagraphs":
        return torch.compile(target, backend="cudagraphs", dynamic=False)
    fn = torch.compile(target, backend="inductor", dynamic=False)

    def run(*args: Any, **kwargs: Any) -> Any:
        # Freezing: inference only, weights constant (a changed weight means a new module: LoRA copies).
        # Set around every call, not through torch.compile's options: a new shape compiles on a later
        # call, and Dynamo's capture reads the flag too (with options alone nothing was folded and the
        # compiled UNet ran slower than eager, measured).
        with torch._inductor.config.patch(freezing=True):
            return fn(*args, **kwargs)
    return run
