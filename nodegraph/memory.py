"""Out-of-memory errors: telling them apart, and handing cached accelerator memory back.

Used by the executor (which also empties its cache) and by nodes that retry in smaller pieces
(tiled VAE, tiled upscaling). The engine never imports torch (DESIGN.md §1): if no node has
imported it, no tensor exists to free.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("sdgraph.memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS out-of-memory errors, Python's MemoryError, and torch's CPU allocator failing
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate … bytes")."""
    text = str(exc).lower() if isinstance(exc, RuntimeError) else ""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        "out of memory" in text or "can't allocate memory" in text)


def release_accelerator_memory() -> None:
    """Hand the memory the GPU allocator keeps cached back to the device."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            torch.mps.empty_cache()
    except Exception:  # noqa: BLE001 - best effort: the out-of-memory message is what the user needs
        log.debug("could not release accelerator memory", exc_info=True)
