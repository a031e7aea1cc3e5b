"""Socket types and the rule for which outputs may feed which inputs.

Types are plain named values so node packages can add their own (`define_type`). The engine only
compares names; what a type means is documented where it is defined.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SocketType:
    name: str
    color: str = "#9e9e9e"  # the editor draws sockets and edges of this type in this colour
    description: str = ""
    widget: bool = False  # True for plain values (numbers, text…) an input can hold without a link

    def __str__(self) -> str:
        return self.name


_TYPES: dict[str, SocketType] = {}


def define_type(name: str, color: str = "#9e9e9e", description: str = "", widget: bool = False) -> SocketType:
    """Declare a socket type. The first declaration of a name wins: a node package that declares a
    type another package (or the core) already has gets the existing one, so both connect."""
    existing = _TYPES.get(name)
    new = SocketType(name, color, description, widget)
    if existing is not None:
        return existing
    _TYPES[name] = new
    return new


ANY = define_type("*", "#bdbdbd", "accepts or gives anything")
MODEL = define_type("MODEL", "#b39ddb", "denoising UNet with its sampling settings")
CLIP = define_type("CLIP", "#ffd54f", "tokenizer + text encoder")
VAE = define_type("VAE", "#ef5350", "autoencoder between pixels and latents")
CONDITIONING = define_type("CONDITIONING", "#ffa726", "encoded prompt(s) that steer the sampler")
LATENT = define_type("LATENT", "#f48fb1", "latent image(s), unscaled VAE space")
IMAGE = define_type("IMAGE", "#64b5f6", "float images [B, H, W, 3] in 0..1")
MASK = define_type("MASK", "#81c784", "float masks [B, H, W] in 0..1")
TOKENS = define_type("TOKENS", "#4dd0e1", "token ids, words and weights of a prompt")
# ComfyUI's custom-sampling types: a KSampler taken apart into its four ingredients.
SIGMAS = define_type("SIGMAS", "#cddc39", "the noise levels to step through, descending, usually ending in 0")
SAMPLER = define_type("SAMPLER", "#ff7043", "a sampling method with its options (euler, dpmpp_2m, …)")
GUIDER = define_type("GUIDER", "#26a69a", "a model with its conditionings and how their predictions combine (CFG…)")
NOISE = define_type("NOISE", "#8d6e63", "where the starting noise comes from (a seed, or none)")
CONTROL_NET = define_type("CONTROL_NET", "#00d78d", "a ControlNet: steers the UNet with a hint image")
UPSCALE_MODEL = define_type("UPSCALE_MODEL", "#7e57c2",
                            "a super-resolution model (spandrel ImageModelDescriptor: .model, .scale, .architecture)")
GLIGEN = define_type("GLIGEN", "#9fa8da", "a GLIGEN model: places objects described in words inside boxes of the image")
CLIP_VISION = define_type("CLIP_VISION", "#a1887f", "a CLIP image encoder (ViT-L/14, ViT-H/14, ViT-bigG/14)")
CLIP_VISION_OUTPUT = define_type("CLIP_VISION_OUTPUT", "#ad7452",
                                 "what a CLIP image encoder made of images: hidden states and image embeddings")
STYLE_MODEL = define_type("STYLE_MODEL", "#c2ffae", "a style model: turns a CLIP image encoding into prompt tokens")
TRACE = define_type("TRACE", "#ffb74d", "a sampling run recorded step by step (KSamplerTrace): latents, "
                                        "predictions, updates, attention maps")
INT = define_type("INT", "#90a4ae", "integer", widget=True)
FLOAT = define_type("FLOAT", "#90a4ae", "number", widget=True)
STRING = define_type("STRING", "#a5d6a7", "text", widget=True)
BOOLEAN = define_type("BOOLEAN", "#90a4ae", "on/off", widget=True)
COMBO = define_type("COMBO", "#90a4ae", "one of a list of choices", widget=True)

# Links between different type names that are still safe: the value is converted on read.
_WIDENING = {("INT", "FLOAT"), ("STRING", "COMBO"), ("COMBO", "STRING")}


def compatible(source: str, target: str) -> bool:
    """Can an output of type `source` feed an input of type `target`?"""
    if source == target or source == ANY.name or target == ANY.name:
        return True
    return (source, target) in _WIDENING
