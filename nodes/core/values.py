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
    patches: ModelPatches = field(default_factory=lambda: ModelPatches())  # applied on use, never to `unet`
    # LoRA (nodes.models.lora): `unet` is then a copy of `base_unet` that shares every tensor but the
    # patched weights, rebuilt from the base with all `weight_patches` in order (ComfyUI's rounding).
    base_unet: Any = None
    weight_patches: tuple = ()

    def patched(self, **changes: Any) -> DiffusionModel:
        """A new MODEL sharing this one's UNet, with patches added (see ModelPatches.add)."""
        return replace(self, patches=self.patches.add(**changes))

    def cache_nbytes(self) -> int:
        # A patched MODEL shares its base's weights; the base's cache entry counts them.
        if self.base_unet is not None:
            return _own_nbytes(self.unet, self.base_unet)
        return 0 if self.patches.active else _module_nbytes(self.unet)


@dataclass(frozen=True)
class ModelPatches:
    """What a patched MODEL changes about sampling (ComfyUI's ModelPatcher `model_options`).

    Nothing here touches the UNet's weights: the sampler applies these while it runs. CFG hooks
    receive ComfyUI's `args` dicts (`cond`, `uncond`, `cond_denoised`, `uncond_denoised`, `input`,
    `sigma`, `cond_scale`, `denoised`…, plus `denoiser` for a second model call). Block patches see
    the UNet in ComfyUI's block numbering: `input_block` (h, options) -> h after each input block,
    before or after its skip is saved; `output_block` (h, skip, options) -> (h, skip) before each
    output block joins them; `attn1_replace` maps (block, number, transformer) to a
    self-attention function (q, k, v, options) -> out. `attn1_patch` / `attn2_patch` (q, k, v,
    options) -> (q, k, v) change the inputs of every transformer's self- / cross-attention before
    their projections (ComfyUI's patches of the same names; hypernetworks use them).
    """

    sampler_cfg_function: Any = None  # args -> noise prediction (x - denoised); replaces the CFG formula
    sampler_post_cfg_functions: tuple[Any, ...] = ()  # args -> denoised, after CFG, in order
    disable_cfg1_optimization: bool = False  # run the uncond pass even at cfg 1
    input_block: tuple[Any, ...] = ()
    input_block_after_skip: tuple[Any, ...] = ()
    output_block: tuple[Any, ...] = ()
    attn1_replace: tuple[tuple[tuple[str, int, int], Any], ...] = ()
    attn1_patch: tuple[Any, ...] = ()
    attn2_patch: tuple[Any, ...] = ()
    # Fewer model calls (nodes/sampling/deepcache.py): step caching settings (DeepCache), and the σ
    # range (high, low) outside which CFG is off and the uncond pass is skipped (GuidanceInterval).
    deep_cache: Any = None
    guidance_interval: tuple[float, float] | None = None
    # torch.compile backend for the plain UNet call (nodes/core/kernels.py); None: eager.
    compile: str | None = None

    @property
    def active(self) -> bool:
        return self != ModelPatches()

    @property
    def changes_unet(self) -> bool:
        return bool(self.input_block or self.input_block_after_skip or self.output_block or self.attn1_replace
                    or self.attn1_patch or self.attn2_patch or self.deep_cache is not None)

    def add(self, *, sampler_cfg_function: Any = None, post_cfg_function: Any = None,
            disable_cfg1_optimization: bool = False, input_block: Any = None, input_block_after_skip: Any = None,
            output_block: Any = None, attn1_replace: tuple[tuple[str, int, int], Any] | None = None,
            attn1_patch: Any = None, attn2_patch: Any = None, deep_cache: Any = None,
            guidance_interval: tuple[float, float] | None = None, compile: str | None = None) -> ModelPatches:
        """A copy with one more patch of each kind given (a CFG function, step caching settings, a
        guidance interval or a compile backend replaces the previous one)."""
        def more(current: tuple, item: Any) -> tuple:
            return current if item is None else (*current, item)

        return ModelPatches(
            sampler_cfg_function=sampler_cfg_function or self.sampler_cfg_function,
            sampler_post_cfg_functions=more(self.sampler_post_cfg_functions, post_cfg_function),
            disable_cfg1_optimization=self.disable_cfg1_optimization or disable_cfg1_optimization,
            input_block=more(self.input_block, input_block),
            input_block_after_skip=more(self.input_block_after_skip, input_block_after_skip),
            output_block=more(self.output_block, output_block),
            attn1_replace=more(tuple(kv for kv in self.attn1_replace if attn1_replace is None
                                     or kv[0] != attn1_replace[0]), attn1_replace),
            attn1_patch=more(self.attn1_patch, attn1_patch),
            attn2_patch=more(self.attn2_patch, attn2_patch),
            deep_cache=self.deep_cache if deep_cache is None else deep_cache,
            guidance_interval=self.guidance_interval if guidance_interval is None else guidance_interval,
            compile=self.compile if compile is None else compile,
        )


@dataclass
class ClipModel:
    """CLIP: a tokenizer plus a text encoder, and which hidden layer to stop at.

    `tokenizer` is a transformers `CLIPTokenizer`; `text_encoder` a `CLIPTextModel` (or one with
    projection). `layer` follows CLIPSetLastLayer: -1 is the last layer, -2 the one before.
    `final_layer_norm` says whether the encoder's final LayerNorm is applied to the chosen layer
    (SD1.x and SD2.x: yes; SDXL: no). `second` is SDXL base's second tower (OpenCLIP bigG, padded
    with 0): its hidden states are joined to this tower's along the feature axis, and the pooled
    embedding is its own.
    """

    tokenizer: Any
    text_encoder: Any
    layer: int = -1
    pad_id: int = 49407
    final_layer_norm: bool = True
    dtype: Any = None
    device: Any = None
    name: str = ""
    second: ClipModel | None = None
    base_text_encoder: Any = None  # LoRA: as DiffusionModel.base_unet, per tower
    weight_patches: tuple = ()

    def with_layer(self, layer: int) -> ClipModel:
        """CLIPSetLastLayer: the same layer for every tower (as ComfyUI sets it on SDXL's two)."""
        second = self.second.with_layer(layer) if self.second is not None else None
        return replace(self, layer=layer, second=second)

    def cache_nbytes(self) -> int:
        own = (_own_nbytes(self.text_encoder, self.base_text_encoder) if self.base_text_encoder is not None
               else _module_nbytes(self.text_encoder))
        return own + (self.second.cache_nbytes() if self.second else 0)


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
    # Textual-inversion vectors in place of token embeddings: (chunk, position) → (embedding, row).
    embeddings: dict[tuple[int, int], tuple[Any, int]] = field(default_factory=dict)

    @property
    def has_weights(self) -> bool:
        return any(w != 1.0 for chunk in self.weights for w in chunk)


@dataclass
class ConditioningEntry:
    """One entry of CONDITIONING: hidden states [batch, tokens, dim] plus optional extras."""

    cond: torch.Tensor
    pooled: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


# CONDITIONING is a list of entries, as in ComfyUI (several prompts can be combined later). Extras
# use ComfyUI's keys: "area" ((h, w, y, x) in latent cells, or ("percentage", h, w, y, x)),
# "strength", "mask" ([B, H, W]), "mask_strength", "set_area_to_bounds", "start_percent",
# "end_percent" (nodes/sampling/conds.py reads them).
Conditioning = list[ConditioningEntry]


def conditioning_set_values(conditioning: Conditioning, values: dict[str, Any]) -> Conditioning:
    """Each entry with `values` set in its extras; the input conditioning is left as it was."""
    return [replace(e, extras={**e.extras, **values}) for e in conditioning]


@dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: a sampler of nodes/sampling/registry.py by its ComfyUI name, with keyword options
    (eta, s_noise, order…) for its function."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NoiseSource:
    """NOISE: where the starting noise comes from. `seed` None is DisableNoise (zeros; the
    samplers' own step noise is then seeded with 0, as in ComfyUI)."""

    seed: int | None = None


@dataclass
class Guider:
    """GUIDER: a MODEL with its conditionings and how their predictions combine.

    kind "cfg": conds positive (and negative), `cfg` (CFGGuider; BasicGuider has no negative and
    cfg 1). kind "dual": conds positive (cond1), middle (cond2) and negative, `cfg` = cfg_conds,
    `cfg2` = cfg_cond2_negative, `nested` for the nested style (DualCFGGuider).
    """

    model: DiffusionModel
    conds: dict[str, Conditioning]
    kind: str = "cfg"
    cfg: float = 1.0
    cfg2: float = 1.0
    nested: bool = False

    def cache_nbytes(self) -> int:
        return 0  # the MODEL's cache entry counts the weights


@dataclass
class Latent:
    """LATENT: samples [B, C, H/8, W/8] in raw (unscaled) VAE space."""

    samples: torch.Tensor
    noise_mask: torch.Tensor | None = None
    batch_index: list[int] | None = None

    def cache_nbytes(self) -> int:
        return int(self.samples.numel() * self.samples.element_size())


def _own_nbytes(module: Any, base: Any) -> int:
    """Bytes of `module`'s parameters that `base` does not share (a LoRA copy's patched weights)."""
    shared = {id(p) for p in base.parameters()}
    return int(sum(p.numel() * p.element_size() for p in module.parameters() if id(p) not in shared))


def _module_nbytes(module: Any) -> int:
    try:
        return int(sum(p.numel() * p.element_size() for p in module.parameters()))
    except AttributeError:
        return 0
