"""What the SD nodes import and build lazily, done ahead of time: `nodes.warm_up()`.

The nodes import torch & co. inside `run`. The editor calls `warm_up` on a background thread once
its window is idle (ui/warmup.py), so the first run starts warm instead of importing for seconds.
"""

from __future__ import annotations

import importlib
import pkgutil

# Third-party modules the nodes import lazily. `diffusers` and `transformers` are lazy modules:
# the classes have to be looked up for their code to be imported.
THIRD_PARTY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ()),
    ("numpy", ()),
    ("PIL.Image", ()),
    ("PIL.PngImagePlugin", ()),
    ("safetensors.torch", ()),
    ("scipy.stats", ()),
    ("scipy.integrate", ()),
    ("diffusers", ("AutoencoderKL", "UNet2DConditionModel")),
    ("transformers", ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTextConfig", "CLIPTokenizer")),
)


def warm_up() -> list[str]:
    """Import every machinery module and build the tokenizer; returns what failed (never raises)."""
    failed = []
    for name, attrs in THIRD_PARTY:
        try:
            module = importlib.import_module(name)
            for attr in attrs:
                getattr(module, attr)
        except Exception as e:  # noqa: BLE001 - a missing optional package only means a colder first run
            failed.append(f"{name}: {type(e).__name__}: {e}")
    import nodes

    for info in pkgutil.walk_packages(nodes.__path__, prefix="nodes."):
        if "test" in info.name.rsplit(".", 1)[-1]:
            continue
        try:
            importlib.import_module(info.name)
        except Exception as e:  # noqa: BLE001
            failed.append(f"{info.name}: {type(e).__name__}: {e}")
    try:  # CLIPTokenizer's vocabulary becomes a Rust BPE model in one GIL-holding call (~100 ms)
        from nodes.models.configs import clip_tokenizer

        clip_tokenizer()
    except Exception as e:  # noqa: BLE001
        failed.append(f"clip tokenizer: {type(e).__name__}: {e}")
    return failed
