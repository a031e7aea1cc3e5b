"""A1111/Forge "parameters" text (and Fooocus's JSON parameters) as a txt2img workflow.

    a cat on a chair
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, …

becomes ComfyUI's standard txt2img graph — CheckpointLoaderSimple → (CLIPSetLastLayer) →
CLIPTextEncode ×2 → EmptyLatentImage → KSampler → VAEDecode → SaveImage, with a second, partial
KSampler after a LatentUpscale for A1111's hires fix — and a note that lists every field no node
takes (model hash, LoRA tags, version…). Node and input names are ComfyUI's, kept here as data;
validation reports any the registry lacks. Sampler names are mapped to ComfyUI's sampler and
scheduler; the model name is matched against the checkpoint folder when one is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .errors import WorkflowError
from .graph import Graph
from .layout import auto_layout
from .registry import Registry

# A1111 sampler labels → ComfyUI sampler names (a " Karras"/" Exponential" suffix picks the schedule)
SAMPLERS = {
    "euler a": "euler_ancestral", "euler": "euler", "lms": "lms", "heun": "heun", "dpm2": "dpm_2",
    "dpm2 a": "dpm_2_ancestral", "dpm++ 2s a": "dpmpp_2s_ancestral", "dpm++ 2m": "dpmpp_2m",
    "dpm++ sde": "dpmpp_sde", "dpm++ 2m sde": "dpmpp_2m_sde", "dpm++ 2m sde gpu": "dpmpp_2m_sde_gpu",
    "dpm++ 2m sde heun": "dpmpp_2m_sde", "dpm++ 3m sde": "dpmpp_3m_sde", "dpm fast": "dpm_fast",
    "dpm adaptive": "dpm_adaptive", "ddim": "ddim", "ddpm": "ddpm", "unipc": "uni_pc", "lcm": "lcm",
    "euler cfg++": "euler_cfg_pp", "euler a cfg++": "euler_ancestral_cfg_pp", "heunpp2": "heunpp2",
    "ipndm": "ipndm", "ipndm_v": "ipndm_v", "deis": "deis", "res multistep": "res_multistep",
}
SCHEDULES = {
    "automatic": "normal", "uniform": "normal", "normal": "normal", "karras": "karras",
    "exponential": "exponential", "sgm uniform": "sgm_uniform", "simple": "simple", "ddim": "ddim_uniform",
    "beta": "beta", "kl optimal": "kl_optimal", "linear quadratic": "linear_quadratic",
}
LATENT_UPSCALERS = {"latent": "bilinear", "latent (antialiased)": "bilinear", "latent (bicubic)": "bicubic",
                    "latent (bicubic antialiased)": "bicubic", "latent (nearest)": "nearest-exact",
                    "latent (nearest-exact)": "nearest-exact"}
USED = {"prompt", "negative", "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model",
        "Clip skip", "Hires upscale", "Hires steps", "Hires upscaler", "Hires resize-1", "Hires resize-2",
        "Denoising strength"}
LORA_TAG = re.compile(r"<(lora|lyco|hypernet):([^:>]+)(?::([^>]*))?>", re.IGNORECASE)


# -- parsing -----------------------------------------------------------------------------------
def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def parse_parameters(text: str) -> dict[str, Any]:
    """A1111's infotext as fields: "prompt", "negative" (None when absent) and each "Key: value" of
    the settings line, values as written (quoted ones unquoted, JSON ones parsed)."""
    lines = text.strip().replace("\r\n", "\n").split("\n")
    settings: dict[str, Any] = {}
    if lines:
        parsed = _settings(lines[-1])
        if len(parsed) >= 3:
            settings = parsed
            lines = lines[:-1]
    prompt, negative, in_negative = [], None, False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, negative = True, [line[len("Negative prompt:"):].strip()]
        elif in_negative:
            negative.append(line)
        else:
            prompt.append(line)
    out: dict[str, Any] = {"prompt": "\n".join(prompt).strip(),
                           "negative": "\n".join(negative).strip() if negative is not None else None}
    out.update(settings)
    return out


def _settings(line: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pos, n = 0, len(line)
    while pos < n:
        colon = line.find(":", pos)
        if colon < 0:
            break
        key = line[pos:colon].strip()
        pos = colon + 1
        while pos < n and line[pos] == " ":
            pos += 1
        if pos < n and line[pos] in "\"{[":
            end = _closing(line, pos)
            raw = line[pos:end]
            try:
                value: Any = json.loads(raw)
            except ValueError:
                value = raw
            pos = end
            comma = line.find(",", pos)
            pos = n if comma < 0 else comma + 1
        else:
            comma = line.find(",", pos)
            end = n if comma < 0 else comma
            value = line[pos:end].strip()
            pos = end + 1
        if key and re.fullmatch(r"\w[\w \-/+()]*", key):
            out[key] = value
    return out


def _closing(line: str, start: int) -> int:
    """The index after the quoted string or bracketed JSON that starts at `start`."""
    depth, quoted, i = 0, False, start
    while i < len(line):
        ch = line[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
                if depth == 0:
                    return i + 1
        elif ch == '"':
            quoted = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(line)


def fooocus_fields(data: dict) -> dict[str, Any]:
    """Fooocus's JSON parameters in A1111's field names (its sampler names are ComfyUI's already)."""
    out: dict[str, Any] = {"prompt": str(data.get("prompt", "")), "negative": str(data.get("negative_prompt", ""))}
    size = re.findall(r"\d+", str(data.get("resolution", "")))
    names = {"steps": "Steps", "guidance_scale": "CFG scale", "seed": "Seed", "base_model": "Model",
             "clip_skip": "Clip skip", "sampler": "comfy sampler", "scheduler": "comfy scheduler"}
    for key, value in data.items():
        if key in ("prompt", "negative_prompt", "resolution"):
            continue
        out[names.get(key, key)] = value
    if len(size) == 2:
        out["Size"] = f"{size[0]}x{size[1]}"
    return out


# -- the workflow ------------------------------------------------------------------------------
def graph_from_parameters(text: str, registry: Registry | None = None,
                          checkpoints: Callable[[], list[str]] | None = None, *, source: str = "A1111") -> Graph:
    """The txt2img workflow the parameters describe. `checkpoints` lists the model folder's files,
    to match the model name against."""
    if is_json_object(text):
        data = json.loads(text)
        if not any(k in data for k in ("prompt", "negative_prompt", "steps", "seed")):
            raise WorkflowError(["the image's parameters are JSON but not Fooocus's (no prompt, steps or seed)"])
        fields, source = fooocus_fields(data), "Fooocus"
    else:
        fields = parse_parameters(text)
        if not fields["prompt"] and "Steps" not in fields:
            raise WorkflowError(["the image's parameters text has no prompt and no settings"])
    return _Builder(fields, registry, checkpoints, source).build()


class _Builder:
    def __init__(self, fields: dict, registry, checkpoints, source: str):
        self.f, self.registry, self.source = fields, registry, source
        self.checkpoints = checkpoints
        self.graph = Graph(registry)
        self.notes: list[str] = []
        self.used = set(USED) | {"comfy sampler", "comfy scheduler"}

    def build(self) -> Graph:
        f, g = self.f, self.graph
        prompt, loras = _strip_loras(f.get("prompt") or "")
        negative, neg_loras = _strip_loras(f.get("negative") or "")
        for kind, name, weight in loras + neg_loras:
            self.notes.append(f"<{kind}:{name}:{weight}> — sdgraph has no {kind.upper()} node yet; "
                              "the tag was taken out of the prompt" if not self._has("LoraLoader") or kind != "lora"
                              else f"<{kind}:{name}:{weight}> — add a LoraLoader for it")
        width, height = _size(f.get("Size"), (512, 512))
        steps = _int(f.get("Steps"), 20)
        cfg = _float(f.get("CFG scale"), 7.0)
        seed = _int(f.get("Seed"), 0)
        sampler, scheduler = self._sampler()
        self._add("CheckpointLoaderSimple", "1", {"ckpt_name": self._model()})
        clip = ("1", 1)
        skip = _int(f.get("Clip skip"), 1)
        if skip > 1:
            self._add("CLIPSetLastLayer", "2", {"stop_at_clip_layer": -skip})
            g.connect("1", 1, "2", "clip", check=False)
            clip = ("2", 0)
        self._add("CLIPTextEncode", "3", {"text": prompt}, {"title": "Positive prompt"})
        self._add("CLIPTextEncode", "4", {"text": negative}, {"title": "Negative prompt"})
        self._add("EmptyLatentImage", "5", {"width": width, "height": height, "batch_size": 1})
        self._add("KSampler", "6", {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
                                     "scheduler": scheduler, "denoise": 1.0})
        for nid in ("3", "4"):
            g.connect(*clip, nid, "clip", check=False)
        self._wire_sampler("6", ("5", 0))
        latent = ("6", 0)
        if any(k in f for k in ("Hires upscale", "Hires resize-1")):
            latent = self._hires(width, height, steps, seed, cfg, sampler, scheduler)
        self._add("VAEDecode", "9", {})
        g.connect(*latent, "9", "samples", check=False)
        g.connect("1", 2, "9", "vae", check=False)
        self._add("SaveImage", "10", {"filename_prefix": self.source.lower()})
        g.connect("9", 0, "10", "images", check=False)
        self._note()
        auto_layout(g)
        return g

    def _add(self, type_name: str, node_id: str, values: dict, ui: dict | None = None) -> None:
        self.graph.add_node(type_name, node_id, values, ui, fill_defaults=self._has(type_name))

    def _has(self, type_name: str) -> bool:
        return self.registry is not None and type_name in self.registry

    def _wire_sampler(self, nid: str, latent: tuple[str, int]) -> None:
        self.graph.connect("1", 0, nid, "model", check=False)
        self.graph.connect("3", 0, nid, "positive", check=False)
        self.graph.connect("4", 0, nid, "negative", check=False)
        self.graph.connect(*latent, nid, "latent_image", check=False)

    def _hires(self, width, height, steps, seed, cfg, sampler, scheduler) -> tuple[str, int]:
        f = self.f
        scale = _float(f.get("Hires upscale"), 2.0)
        w, h = _int(f.get("Hires resize-1"), 0), _int(f.get("Hires resize-2"), 0)
        if not (w and h):
            w, h = width * scale, height * scale
        upscaler = str(f.get("Hires upscaler", "Latent"))
        method = LATENT_UPSCALERS.get(upscaler.lower())
        if method is None:
            method = "bilinear"
            self.notes.append(f"Hires upscaler: {upscaler} — sdgraph has no upscale-model node yet; "
                              "the latent is upscaled instead")
        self._add("LatentUpscale", "7", {"upscale_method": method, "width": _eight(w),
                                                   "height": _eight(h), "crop": "disabled"},
                            {"title": "Hires fix upscale"})
        self.graph.connect("6", 0, "7", "samples", check=False)
        hires_steps = _int(f.get("Hires steps"), 0) or steps
        self._add("KSampler", "8", {"seed": seed, "steps": hires_steps, "cfg": cfg, "sampler_name": sampler,
                                              "scheduler": scheduler,
                                              "denoise": _float(f.get("Denoising strength"), 0.7)},
                            {"title": "Hires fix"})
        self._wire_sampler("8", ("7", 0))
        return ("8", 0)

    def _sampler(self) -> tuple[str, str]:
        f = self.f
        if "comfy sampler" in f:  # Fooocus writes ComfyUI's names
            return str(f["comfy sampler"]), str(f.get("comfy scheduler", "normal"))
        label = str(f.get("Sampler", "Euler")).strip()
        scheduler = "normal"
        lowered = label.lower()
        for suffix, name in ((" karras", "karras"), (" exponential", "exponential")):
            if lowered.endswith(suffix):
                lowered, scheduler = lowered[: -len(suffix)], name
        if "Schedule type" in f:
            kind = str(f["Schedule type"])
            scheduler = SCHEDULES.get(kind.lower(), "normal")
            if kind.lower() not in SCHEDULES:
                self.notes.append(f"Schedule type: {kind} — ComfyUI has no such schedule; used normal")
        sampler = SAMPLERS.get(lowered)
        if sampler is None:
            self.notes.append(f"Sampler: {label} — ComfyUI has no such sampler; used euler")
            sampler = "euler"
        return sampler, scheduler

    def _model(self) -> str:
        name = str(self.f.get("Model") or "").strip()
        files = []
        if self.checkpoints is not None:
            try:
                files = list(self.checkpoints())
            except OSError:
                files = []
        stem = name.lower()
        for candidate in files:
            bare = candidate.rsplit("/", 1)[-1].lower()
            if bare == stem or bare.rsplit(".", 1)[0] == stem:
                return candidate
        if not name:
            return files[0] if files else ""
        return name if "." in name[-13:] else name + ".safetensors"

    def _note(self) -> None:
        rest = [f"{k}: {_show(v)}" for k, v in self.f.items() if k not in self.used and v not in (None, "")]
        lines = self.notes + rest
        if not lines:
            return
        text = f"From {self.source} parameters. These have no node here:\n" + "\n".join(f"- {line}" for line in lines)
        self.graph.ui["notes"] = [{"id": "100", "type": "Note", "text": text, "size": [420, 60 + 18 * len(lines)]}]


def _strip_loras(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    found = [(m.group(1), m.group(2), m.group(3) or "1") for m in LORA_TAG.finditer(text)]
    cleaned = LORA_TAG.sub("", text)
    cleaned = re.sub(r"\s*,\s*(,\s*)+", ", ", cleaned)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(" ,"), found


def _size(value: Any, default: tuple[int, int]) -> tuple[int, int]:
    found = re.findall(r"\d+", str(value or ""))
    return (_eight(int(found[0])), _eight(int(found[1]))) if len(found) == 2 else default


def _eight(value: float) -> int:
    return max(8, int(round(float(value) / 8)) * 8)


def _int(value: Any, default: int) -> int:
    text = str(value).strip()
    try:
        return int(text)  # seeds need every digit: no detour through a float
    except ValueError:
        pass
    try:
        return int(float(text))
    except (TypeError, ValueError, OverflowError):
        return default


def _float(value: Any, default: float) -> float:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return default
    return number if number == number and abs(number) != float("inf") else default


def _show(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= limit else text[:limit] + "…"
