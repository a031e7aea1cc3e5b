"""load_checkpoint / load_vae: SD 1.x, SD 2.x and sdgraph single files, and diffusers folders."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import device as device_policy
from ..core.values import ClipModel, DiffusionModel, LatentFormat, VaeModel
from . import configs
from .build import empty_text_encoder, empty_unet, empty_vae, fill
from .clip_vision import UNCLIP_PREFIX
from .convert import (
    CLIP_PREFIX,
    OPENCLIP_PREFIX,
    REFINER_CLIP_G_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    clip_to_ldm,
    hf_clip_to_module_names,
    ldm_unet_to_diffusers,
    ldm_vae_to_diffusers,
    openclip_to_hf,
    strip_prefix,
)
from .detect import (
    CheckpointInfo,
    detect_checkpoint,
    ignored_on_purpose,
    sniff_other_kind,
    unet_input_problem,
)
from .errors import CheckpointError
from .files import TensorFile, _one_line
from .sdgraph_format import DIFFUSERS_UNET_PREFIX, DIFFUSERS_VAE_PREFIX

log = logging.getLogger(__name__)


@dataclass
class ModelConfigs:
    """Everything needed to build the three modules and describe how the model samples."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    prediction_type: str
    latent_scale_factor: float
    clip_pad_id: int
    clip_layer: int = -1
    schedule: dict[str, Any] = field(default_factory=dict)
    final_layer_norm: bool = True  # SD 1.x/2.x apply the encoder's final LayerNorm; SDXL does not
    text_encoder_2: dict[str, Any] | None = None  # SDXL base: OpenCLIP bigG, beside CLIP-L
    vae_upcast: bool = False  # SDXL's VAE overflows in fp16: it runs in fp32 then


def configs_for(info: CheckpointInfo, shapes: Mapping[str, Any] | None = None) -> ModelConfigs:
    """The configs for a detected checkpoint: shipped ones for SD 1.x/2.x, the file's own for sdgraph."""
    if info.family == "sdgraph":
        c = info.sdgraph_config or {}
        vae = dict(c["vae"])
        return ModelConfigs(
            unet=dict(c["unet"]),
            vae=vae,
            text_encoder=dict(c["text_encoder"]),
            prediction_type=info.prediction_type,
            latent_scale_factor=float(c.get("latent_scale_factor", vae.get("scaling_factor") or 0.18215)),
            clip_pad_id=int(c.get("clip_pad_id", configs.CLIP_EOS_ID)),
            clip_layer=int(c.get("clip_layer", -1)),
            schedule={
                k: c[k] for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps") if k in c
            },
        )
    if info.family in ("sdxl", "sdxl_refiner"):
        return _sdxl_configs(info)
    family_dir = configs.SD15_DIR if info.family == "sd1" else configs.SD21V_DIR
    unet = {**configs.component_config(family_dir, "unet"), "in_channels": info.in_channels}  # 9: inpainting
    vae = configs.component_config(family_dir, "vae")
    te = configs.component_config(family_dir, "text_encoder")
    sched = configs.component_config(family_dir, "scheduler")
    sched.pop("prediction_type", None)
    clip_layer, pad = -1, configs.CLIP_EOS_ID
    if info.family == "sd2":
        # Keep every OpenCLIP layer the file has (24 for SD 2.x) and stop at the penultimate one, as
        # ComfyUI does, so CLIPSetLastLayer means the same thing here as there.
        if shapes is not None:
            te["num_hidden_layers"] = _count_openclip_layers(shapes) or te["num_hidden_layers"]
        clip_layer, pad = -2, configs.OPENCLIP_PAD_ID
        unet["sample_size"] = 96 if info.prediction_type == "v_prediction" else 64
    return ModelConfigs(
        unet=unet,
        vae=vae,
        text_encoder=te,
        prediction_type=info.prediction_type,
        latent_scale_factor=float(vae.get("scaling_factor") or 0.18215),
        clip_pad_id=pad,
        clip_layer=clip_layer,
        schedule=sched,
    )


def _sdxl_configs(info: CheckpointInfo) -> ModelConfigs:
    """SDXL base and refiner: both text towers stop at the penultimate layer without the final
    LayerNorm (ComfyUI's SDXL CLIP, diffusers' `hidden_states[-2]`); bigG pads with 0."""
    unet_dir = configs.SDXL_DIR if info.family == "sdxl" else configs.SDXL_REFINER_DIR
    vae = configs.component_config(configs.SDXL_DIR, "vae")
    sched = configs.component_config(configs.SDXL_DIR, "scheduler")
    sched.pop("prediction_type", None)
    big_g = configs.component_config(configs.SDXL_DIR, "text_encoder_2")
    base = info.family == "sdxl"
    return ModelConfigs(
        unet={**configs.component_config(unet_dir, "unet"), "in_channels": info.in_channels},  # 9: inpainting
        vae=vae,
        text_encoder=configs.component_config(configs.SDXL_DIR, "text_encoder") if base else big_g,
        text_encoder_2=big_g if base else None,
        prediction_type=info.prediction_type,
        latent_scale_factor=float(vae["scaling_factor"]),
        clip_pad_id=configs.CLIP_EOS_ID if base else configs.OPENCLIP_PAD_ID,
        clip_layer=-2,
        schedule=sched,
        final_layer_norm=False,
        vae_upcast=bool(vae.get("force_upcast", False)),
    )


def _count_openclip_layers(shapes: Mapping[str, Any]) -> int:
    prefix = OPENCLIP_PREFIX + "transformer.resblocks."
    layers = {int(k[len(prefix) :].split(".")[0]) for k in shapes if k.startswith(prefix)}
    return max(layers) + 1 if layers else 0


# safetensors dtype names → torch dtypes, for read_cast
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def read_cast(path: Path, names: list[str], dtype: Any, device: Any) -> dict[str, Any] | None:
    """A .safetensors file's tensors read with plain reads and cast to `dtype` one by one, when the
    file stores floats in another dtype; None otherwise (then the memory-mapped read is better: a
    tensor already in `dtype` maps the file without a copy).

    Why: casting from the memory map reads every page of the file, and those pages count in the
    process's RSS until the file is closed, so the peak was the cast model plus the whole file (SD 1.5
    fp16 → bf16: 4.4 GB for a 2.4 GB result). Here the peak is the result plus one tensor as stored.
    """
    if dtype is None or Path(path).suffix.lower() not in (".safetensors", ".sft"):
        return None
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
            stored = {n: _SAFETENSORS_DTYPES.get(header[n]["dtype"]) for n in names}
            if None in stored.values() or all(d == dtype or not d.is_floating_point for d in stored.values()):
                return None
            spans = {n: header[n]["data_offsets"] for n in names}
            # One scratch buffer for every stored tensor: allocating and freeing one per tensor
            # fragments the heap (+0.1-0.25 GB of RSS for SD 1.5).
            scratch = torch.empty(max((e - b for b, e in spans.values()), default=0), dtype=torch.uint8)
            out = {}
            for name in names:
                begin, end = spans[name]
                buf = scratch[: end - begin]
                fh.seek(8 + size + begin)
                if fh.readinto(buf.numpy()) != end - begin:
                    return None  # truncated: the memory-mapped read reports it properly
                raw = buf.view(stored[name]).reshape(header[name]["shape"])  # as stored in the file
                wanted = dtype if raw.is_floating_point() else raw.dtype
                out[name] = raw.to(device=device, dtype=wanted, copy=True)  # copy: scratch is reused
            return out
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None  # anything odd: the memory-mapped read and its one-line errors


@dataclass
class Converted:
    """A checkpoint's tensors split per module with the modules' own names, and what was left."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]  # HF names with the `text_model.` level (see hf_clip_to_module_names)
    ignored: list[str] = field(default_factory=list)  # skipped on purpose
    unused: list[str] = field(default_factory=list)  # neither consumed nor known: logged
    text_encoder_2: dict[str, Any] | None = None  # SDXL base's bigG tower


def convert_state_dict(sd: Mapping[str, Any], info: CheckpointInfo, cfg: ModelConfigs) -> Converted:
    """Split and rename a full checkpoint's tensors (works with meta tensors)."""
    ignored = [k for k in sd if ignored_on_purpose(k)]
    consumed: set[str] = set(ignored)

    if any(k.startswith(UNET_PREFIX) for k in sd):
        src = strip_prefix(sd, UNET_PREFIX)
        unet = ldm_unet_to_diffusers(src, cfg.unet)
        if len(unet) != len(src):
            log.warning("UNet conversion used %d of %d tensors", len(unet), len(src))
        consumed |= {UNET_PREFIX + k for k in src}
    else:
        unet = strip_prefix(sd, DIFFUSERS_UNET_PREFIX)
        consumed |= {DIFFUSERS_UNET_PREFIX + k for k in unet}

    if any(k.startswith(VAE_PREFIX) for k in sd):
        src = strip_prefix(sd, VAE_PREFIX)
        vae = ldm_vae_to_diffusers(src, cfg.vae)
        consumed |= {VAE_PREFIX + k for k in src}
    else:
        vae = strip_prefix(sd, DIFFUSERS_VAE_PREFIX)
        consumed |= {DIFFUSERS_VAE_PREFIX + k for k in vae}

    text_2 = None
    if info.family == "sdxl":
        text, used = _hf_clip(sd, SDXL_CLIP_L_PREFIX)
        text_2, used_2, skipped = _openclip(sd, SDXL_CLIP_G_PREFIX, cfg.text_encoder_2, projection=True)
        consumed |= used | used_2
        ignored += skipped
    elif info.family == "sdxl_refiner":
        text, used, skipped = _openclip(sd, REFINER_CLIP_G_PREFIX, cfg.text_encoder, projection=True)
        consumed |= used
        ignored += skipped
    elif any(k.startswith(OPENCLIP_PREFIX) for k in sd):
        text, used, skipped = _openclip(sd, OPENCLIP_PREFIX, cfg.text_encoder)
        consumed |= used
        ignored += skipped
    else:
        text, used = _hf_clip(sd, CLIP_PREFIX)
        consumed |= used

    unused = [k for k in sd if k not in consumed]
    return Converted(unet, vae, text, ignored, unused, text_2)


def _hf_clip(sd: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], set[str]]:
    """A CLIP-L tower stored with Hugging Face names under `prefix` → `text_model.…` names."""
    src = {k: v for k, v in strip_prefix(sd, prefix).items() if not ignored_on_purpose(prefix + k)}
    text = clip_to_ldm(src)
    return text, {prefix + k for k in src}


def _openclip(sd: Mapping[str, Any], prefix: str, config: Mapping[str, Any], *, projection: bool = False):
    """An OpenCLIP tower under `prefix` → (HF names, consumed source names, ignored source names)."""
    src = {k: v for k, v in strip_prefix(sd, prefix).items() if not ignored_on_purpose(prefix + k)}
    text, skipped = openclip_to_hf(src, int(config["num_hidden_layers"]), projection=projection)
    return text, {prefix + k for k in src}, [prefix + k for k in skipped]


def build_modules(conv: Converted, cfg: ModelConfigs, filename: str, device: Any):
    """Meta-build the modules and assign the converted tensors: (unet, vae, text encoders)."""
    unet = fill(empty_unet(cfg.unet), conv.unet, what="UNet", filename=filename, device=device)
    vae = fill(empty_vae(cfg.vae), conv.vae, what="VAE", filename=filename, device=device)
    towers = [(cfg.text_encoder, conv.text_encoder, "text encoder")]
    if cfg.text_encoder_2 is not None:
        towers.append((cfg.text_encoder_2, conv.text_encoder_2 or {}, "second text encoder (OpenCLIP bigG)"))
    encoders = []
    for config, tensors, what in towers:
        te = empty_text_encoder(config)
        encoders.append(fill(te, hf_clip_to_module_names(tensors, set(te.state_dict())), what=what,
                             filename=filename, device=device))
    return unet, vae, encoders


def _latent_format(vae_config: Mapping[str, Any], scale: float) -> LatentFormat:
    return LatentFormat(
        channels=int(vae_config.get("latent_channels", 4)),
        scale_factor=float(scale),
        shift=float(vae_config.get("shift_factor") or 0.0),
        downscale=2 ** (len(vae_config.get("block_out_channels", (0, 0, 0, 0))) - 1),
    )


def _package(unet, vae, encoders, cfg: ModelConfigs, name: str, device: Any, dtype: Any):
    fmt = _latent_format(cfg.vae, cfg.latent_scale_factor)
    dev = torch.device(device)
    # SDXL's VAE overflows to NaN in fp16 (as diffusers' force_upcast says): bf16 or fp32 then.
    vae_dtype = device_policy.vae_dtype(dev, dtype, cfg.vae_upcast)
    if vae_dtype != dtype:
        vae.to(dtype=vae_dtype)
    model = DiffusionModel(
        unet=unet,
        alphas_cumprod=configs.alphas_cumprod_from_scheduler_config(cfg.schedule),
        prediction_type=cfg.prediction_type,
        latent_format=fmt,
        dtype=dtype,
        device=dev,
        name=name,
    )
    second = None
    if len(encoders) > 1:  # SDXL base: bigG beside CLIP-L, padded with 0, same layer rule
        second = ClipModel(tokenizer=configs.clip_tokenizer(), text_encoder=encoders[1], layer=cfg.clip_layer,
                           pad_id=configs.OPENCLIP_PAD_ID, final_layer_norm=cfg.final_layer_norm, dtype=dtype,
                           device=dev, name=name)
    clip = ClipModel(
        tokenizer=configs.clip_tokenizer(),
        text_encoder=encoders[0],
        layer=cfg.clip_layer,
        pad_id=cfg.clip_pad_id,
        final_layer_norm=cfg.final_layer_norm,
        dtype=dtype,
        device=dev,
        name=name,
        second=second,
    )
    return model, clip, VaeModel(vae=vae, latent_format=fmt, dtype=vae_dtype, device=dev, name=name)


def load_checkpoint(
    path: str | Path, *, device: Any = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[DiffusionModel, ClipModel, VaeModel]:
    """Load a full SD checkpoint: a .safetensors / weights-only .ckpt single file (SD 1.x, SD 2.x or
    sdgraph format), or a diffusers folder (a directory with model_index.json).

    Returns (MODEL, CLIP, VAE) with every module in `dtype` on `device`, in eval mode, without grads.
    Raises CheckpointError (one line, naming the file) for anything it cannot load.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return _load_diffusers_folder(path, device, dtype)
        raise CheckpointError(f'"{path}" is a folder without model_index.json (not a diffusers model folder)')
    with TensorFile(path) as f:
        unclip = any(k.startswith(UNCLIP_PREFIX) for k in f.shapes)
    if unclip:  # as ComfyUI: an unCLIP file loads here too, without its image encoder
        from .unclip import load_unclip_checkpoint

        return load_unclip_checkpoint(path, device=device, dtype=dtype)[:3]
    with TensorFile(path) as f:
        info = detect_checkpoint(f.shapes, f.metadata, f.get, f.name)
        cfg = configs_for(info, f.shapes)
        wanted = [k for k in f.shapes if not ignored_on_purpose(k)]
        sd = read_cast(path, wanted, dtype, device) or f.read(wanted, dtype=dtype, device=device)
    try:
        conv = convert_state_dict(sd, info, cfg)
    except (KeyError, IndexError, RuntimeError) as e:
        raise CheckpointError(
            f'"{path.name}" ({info.description}): tensor names do not convert: {_one_line(e)}'
        ) from None
    del sd
    if conv.unused:
        log.warning("%s: %d tensors not used (e.g. %s)", path.name, len(conv.unused), conv.unused[0])
    unet, vae, encoders = build_modules(conv, cfg, path.name, device)
    return _package(unet, vae, encoders, cfg, path.stem, device, dtype)


# --------------------------------------------------------------------------------------------------
# diffusers folders


def _from_pretrained(what: str, folder: Path, fn, **kwargs):
    try:
        return fn(str(folder), local_files_only=True, **kwargs)
    except CheckpointError:
        raise
    except Exception as e:  # diffusers/transformers raise OSError, ValueError, EnvironmentError…
        raise CheckpointError(f'"{folder}": cannot load the {what}: {_one_line(e)}') from None


def _load_diffusers_folder(path: Path, device: Any, dtype: torch.dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    index = configs.read_json(path / "model_index.json")
    sdxl = "text_encoder_2" in index or "StableDiffusionXL" in str(index.get("_class_name", ""))
    towers = [("text_encoder", _text_class(index, "text_encoder", CLIPTextModel, CLIPTextModelWithProjection))]
    if sdxl and (path / "text_encoder_2").is_dir():
        towers.append(("text_encoder_2", CLIPTextModelWithProjection))
    missing = [c for c in ("unet", "vae", towers[-1][0]) if not (path / c).is_dir()]
    if sdxl and not (path / "text_encoder").is_dir() and (path / "text_encoder_2").is_dir():
        towers, missing = [("text_encoder_2", CLIPTextModelWithProjection)], []  # the refiner: bigG only
    if missing:
        raise CheckpointError(f'"{path.name}": diffusers folder lacks {", ".join(missing)}/')
    unet = _from_pretrained("UNet", path / "unet", UNet2DConditionModel.from_pretrained, torch_dtype=dtype)
    vae = _from_pretrained("VAE", path / "vae", AutoencoderKL.from_pretrained, torch_dtype=dtype)
    encoders = [_from_pretrained(sub.replace("_", " "), path / sub, cls.from_pretrained, dtype=dtype)
                for sub, cls in towers]
    problem = unet_input_problem(int(unet.config.in_channels))
    if problem:
        raise CheckpointError(f'"{path.name}" is {problem}')
    sched_file = path / "scheduler" / "scheduler_config.json"
    sched = configs.read_json(sched_file) if sched_file.is_file() else {}
    pad_id = configs.CLIP_EOS_ID
    tok_folder = "tokenizer" if towers[0][0] == "text_encoder" else "tokenizer_2"
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        tok_file = path / tok_folder / name
        if tok_file.is_file():
            pad = configs.read_json(tok_file).get("pad_token")
            pad = pad.get("content") if isinstance(pad, dict) else pad
            if pad == "!":
                pad_id = configs.OPENCLIP_PAD_ID
            break
    if sdxl and towers[0][0] == "text_encoder_2":
        pad_id = configs.OPENCLIP_PAD_ID
    for m in (unet, vae, *encoders):
        m.to(device=device)
        m.eval()
        m.requires_grad_(False)
    cfg = ModelConfigs(
        unet=dict(unet.config),
        vae=dict(vae.config),
        text_encoder=encoders[0].config.to_dict(),
        text_encoder_2=encoders[1].config.to_dict() if len(encoders) > 1 else None,
        prediction_type=str(sched.get("prediction_type", "epsilon")),
        latent_scale_factor=float(vae.config.get("scaling_factor") or 0.18215),
        clip_pad_id=pad_id,
        clip_layer=-2 if sdxl else -1,
        schedule=sched,
        final_layer_norm=not sdxl,
        vae_upcast=bool(vae.config.get("force_upcast", False)) and sdxl,
    )
    return _package(unet, vae, encoders, cfg, path.name, device, dtype)


def _text_class(index: Mapping[str, Any], component: str, plain, with_projection):
    entry = index.get(component)
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else ""
    return with_projection if name == "CLIPTextModelWithProjection" else plain


# --------------------------------------------------------------------------------------------------
# VAE


def load_vae(path: str | Path, *, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> VaeModel:
    """Load a standalone VAE for VAELoader.

    Accepts: a .safetensors/.ckpt with LDM names (plain `encoder.down.0…` or under
    `first_stage_model.`, so a full checkpoint's VAE works too), with diffusers names
    (`encoder.down_blocks…`), an sdgraph file (its own VAE config), or a diffusers folder (a VAE
    folder with config.json, or a pipeline folder with vae/). Non-sdgraph files use SD's VAE config.
    """
    from diffusers import AutoencoderKL

    path = Path(path)
    if path.is_dir():
        folder = path / "vae" if (path / "model_index.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise CheckpointError(
                f'"{path}" is a folder without a VAE config.json (not a diffusers VAE folder)'
            )
        vae = _from_pretrained("VAE", folder, AutoencoderKL.from_pretrained, torch_dtype=dtype)
        vae.to(device=device).eval().requires_grad_(False)
        fmt = _latent_format(dict(vae.config), float(vae.config.get("scaling_factor") or 0.18215))
        return VaeModel(vae=vae, latent_format=fmt, dtype=dtype, device=torch.device(device), name=path.name)

    with TensorFile(path) as f:
        names = list(f.shapes)
        scale = None
        if "sdgraph.config" in f.metadata:
            info = detect_checkpoint(f.shapes, f.metadata, f.get, f.name)
            config = dict(info.sdgraph_config["vae"])
            scale = info.sdgraph_config.get("latent_scale_factor")
        else:
            config = configs.component_config(configs.SD15_DIR, "vae")
        if any(n.startswith(VAE_PREFIX) for n in names):
            prefix, layout = VAE_PREFIX, "ldm"
        elif any(n.startswith("encoder.down.") for n in names):
            prefix, layout = "", "ldm"
        elif any(n.startswith(DIFFUSERS_VAE_PREFIX + "encoder.") for n in names):
            prefix, layout = DIFFUSERS_VAE_PREFIX, "diffusers"
        elif any(n.startswith("encoder.down_blocks.") for n in names):
            prefix, layout = "", "diffusers"
        else:
            other = sniff_other_kind(names)
            why = f"it looks like {other}" if other and "VAE" not in other else f"found {_describe(names)}"
            raise CheckpointError(f'"{f.name}" is not a VAE: {why}')
        wanted = [
            n
            for n in names
            if n.startswith(prefix) and not n[len(prefix) :].startswith(("loss.", "model_ema."))
        ]
        sd = strip_prefix(f.read(wanted, dtype=dtype, device=device), prefix)
    if layout == "ldm":
        sd = ldm_vae_to_diffusers(sd, config)
    vae = fill(empty_vae(config), sd, what="VAE", filename=path.name, device=device)
    fmt = _latent_format(
        config, float(scale if scale is not None else (config.get("scaling_factor") or 0.18215))
    )
    return VaeModel(vae=vae, latent_format=fmt, dtype=dtype, device=torch.device(device), name=path.stem)


def _describe(names):
    from .detect import describe_keys

    return describe_keys(names)
