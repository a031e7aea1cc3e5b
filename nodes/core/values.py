"""The values that flow along edges between Stable Diffusion nodes.

One module, so a reader sees every edge type in one place (DESIGN.md §3). Nothing here imports
torch at module level: these declarations are read by the node registry, which must stay cheap.
Tensors are annotated as strings and only exist once a node runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch


@dataclass(frozen=True)
class LatentFormat:
    """How a model's latent space relates to the VAE's raw latent space.

    LATENT values are kept unscaled (as the VAE produces them, as ComfyUI holds them); the sampler
    works in `(raw - shift) * scale_factor` space.
    """

    channels: int = 4
    scale_factor: float = 0.18215
    shift: float = 0.0
    downscale: int = 8  # pixels per latent cell along each axis
    # Linear map from a sampler-space latent cell to RGB in -1..1 for live previews: one row per
    # channel, then a bias row. Fitted to the model's own VAE when it is loaded.
    rgb_factors: tuple[tuple[float, float, float], ...] | None = None

    def to_sampler(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.shift) * self.scale_factor

    def from_sampler(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale_factor + self.shift


@dataclass
class DiffusionModel:
    """MODEL: the denoising UNet plus everything needed to sample with it.

    `unet` is a diffusers `UNet2DConditionModel`. `alphas_cumprod` is the training schedule
    (float64, 1000 entries for every SD model); the sampler derives its sigma table from it.
    """

    unet: Any
    alphas_cumprod: torch.Tensor
    prediction_type: str = "epsilon"  # "epsilon" or "v_prediction"
    latent_format: LatentFormat = field(default_factory=LatentFormat)
    dtype: Any = None  # torch.dtype the UNet runs in
    device: Any = None  # torch.device the UNet lives on
    name: str = ""  # where it came from, for messages

    def cache_nbytes(self) -> int:
        return _module_nbytes(self.unet)


@dataclass
class ClipModel:
    """CLIP: a tokenizer plus a text encoder, and which hidden layer to stop at.

    `tokenizer` is a transformers `CLIPTokenizer`; `text_encoder` a `CLIPTextModel` (or one with
    projection). `layer` follows CLIPSetLastLayer: -1 is the last layer, -2 the one before.
    `final_layer_norm` says whether the encoder's final LayerNorm is applied to the chosen layer
    (SD1.x and SD2.x: yes).
    """

    tokenizer: Any
    text_encoder: Any
    layer: int = -1
    pad_id: int = 49407
    final_layer_norm: bool = True
    dtype: Any = None
    device: Any = None
    name: str = ""

    def with_layer(self, layer: int) -> ClipModel:
        return replace(self, layer=layer)

    def cache_nbytes(self) -> int:
        return _module_nbytes(self.text_encoder)


@dataclass
class VaeModel:
    """VAE: a diffusers `AutoencoderKL` and its latent format."""

    vae: Any
    latent_format: LatentFormat = field(default_factory=LatentFormat)
    dtype: Any = None
    device: Any = None
    name: str = ""

    def cache_nbytes(self) -> int:
        return _module_nbytes(self.vae)


@dataclass
class Tokens:
    """TOKENS: a prompt after the tokenizer, before the text encoder.

    `ids` and `weights` are lists of chunks; every chunk holds exactly 77 entries (start, up to 75
    tokens, end, padding). `words` gives, per chunk and position, the text piece each id stands
    for ("<start>", "<end>", "<pad>" for the special ones), so a learner can read what the encoder
    sees. `text` is the prompt the tokens came from.
    """

    ids: list[list[int]]
    weights: list[list[float]]
    words: list[list[str]]
    text: str = ""

    @property
    def has_weights(self) -> bool:
        return any(w != 1.0 for chunk in self.weights for w in chunk)


@dataclass
class ConditioningEntry:
    """One entry of CONDITIONING: hidden states [batch, tokens, dim] plus optional extras."""

    cond: torch.Tensor
    pooled: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


# CONDITIONING is a list of entries, as in ComfyUI (several prompts can be combined later).
Conditioning = list[ConditioningEntry]


@dataclass
class Latent:
    """LATENT: samples [B, C, H/8, W/8] in raw (unscaled) VAE space."""

    samples: torch.Tensor
    noise_mask: torch.Tensor | None = None
    batch_index: list[int] | None = None

    def cache_nbytes(self) -> int:
        return int(self.samples.numel() * self.samples.element_size())


def _module_nbytes(module: Any) -> int:
    try:
        return int(sum(p.numel() * p.element_size() for p in module.parameters()))
    except AttributeError:
        return 0
