"""Write the shipped workflows in workflows/ (run after changing a node's inputs)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nodegraph import REGISTRY, Graph  # noqa: E402
from nodegraph.workflow import save_workflow  # noqa: E402

BUNDLED = "sdgraph-shapes.safetensors"
PROMPT = "a large red circle at the top left on a white background"
NEGATIVE = ""


def txt2img(prompt: str = PROMPT, negative: str = NEGATIVE) -> Graph:
    """Every stage visible: loader → tokenizer → text encoder (×2) → empty latent → KSampler → decode → save."""
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": BUNDLED}, {"pos": [40, 560]})
    g.add_node("CLIPTokenize", "2", {"text": prompt}, {"pos": [420, 40], "title": "Tokenize (positive)"})
    g.add_node("CLIPTokenize", "3", {"text": negative}, {"pos": [420, 330], "title": "Tokenize (negative)"})
    g.add_node("CLIPTextEncodeTokens", "4", {}, {"pos": [780, 40], "title": "Encode (positive)"})
    g.add_node("CLIPTextEncodeTokens", "5", {}, {"pos": [780, 330], "title": "Encode (negative)"})
    g.add_node("EmptyLatentImage", "6", {"width": 64, "height": 64, "batch_size": 1}, {"pos": [780, 600]})
    g.add_node("KSampler", "7", {"seed": 42, "steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                                 "denoise": 1.0}, {"pos": [1120, 200]})
    g.add_node("VAEDecode", "8", {}, {"pos": [1480, 420]})
    g.add_node("SaveImage", "9", {"filename_prefix": "sdgraph"}, {"pos": [1760, 200]})
    for src, slot, dst, name in [("1", 1, "2", "clip"), ("1", 1, "3", "clip"), ("1", 1, "4", "clip"),
                                 ("2", 0, "4", "tokens"), ("1", 1, "5", "clip"), ("3", 0, "5", "tokens"),
                                 ("1", 0, "7", "model"), ("4", 0, "7", "positive"), ("5", 0, "7", "negative"),
                                 ("6", 0, "7", "latent_image"), ("7", 0, "8", "samples"), ("1", 2, "8", "vae"),
                                 ("8", 0, "9", "images")]:
        g.connect(src, slot, dst, name)
    return g


def img2img() -> Graph:
    """LoadImage → VAEEncode → KSampler at denoise 0.6 → decode → save."""
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": BUNDLED}, {"pos": [40, 200]})
    g.add_node("CLIPTextEncode", "2", {"text": "a large blue square in the centre on a white background"},
               {"pos": [420, 60], "title": "Prompt"})
    g.add_node("CLIPTextEncode", "3", {"text": ""}, {"pos": [420, 300], "title": "Negative"})
    g.add_node("LoadImage", "4", {"image": "example.png"}, {"pos": [40, 480]})
    g.add_node("VAEEncode", "5", {}, {"pos": [420, 520]})
    g.add_node("KSampler", "6", {"seed": 7, "steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                                 "denoise": 0.6}, {"pos": [800, 200]})
    g.add_node("VAEDecode", "7", {}, {"pos": [1160, 200]})
    g.add_node("SaveImage", "8", {"filename_prefix": "img2img"}, {"pos": [1400, 200]})
    for src, slot, dst, name in [("1", 1, "2", "clip"), ("1", 1, "3", "clip"), ("4", 0, "5", "pixels"),
                                 ("1", 2, "5", "vae"), ("1", 0, "6", "model"), ("2", 0, "6", "positive"),
                                 ("3", 0, "6", "negative"), ("5", 0, "6", "latent_image"), ("6", 0, "7", "samples"),
                                 ("1", 2, "7", "vae"), ("7", 0, "8", "images")]:
        g.connect(src, slot, dst, name)
    return g


def _prompted(g: Graph, prompt: str = PROMPT) -> None:
    """Loader "1" and encoded prompts "2" (positive) / "3" (negative) for the explain workflows."""
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": BUNDLED}, {"pos": [40, 300]})
    g.add_node("CLIPTextEncode", "2", {"text": prompt}, {"pos": [420, 40], "title": "Prompt"})
    g.add_node("CLIPTextEncode", "3", {"text": NEGATIVE}, {"pos": [420, 300], "title": "Negative"})
    g.add_node("EmptyLatentImage", "4", {"width": 64, "height": 64, "batch_size": 1}, {"pos": [420, 560]})
    for src, slot, dst, name in [("1", 1, "2", "clip"), ("1", 1, "3", "clip")]:
        g.connect(src, slot, dst, name)


def explain_forward_noise() -> Graph:
    """A finished picture noised to six training timesteps with one ε: the forward process."""
    g = Graph(REGISTRY)
    _prompted(g)
    g.add_node("KSampler", "5", {"seed": 42, "steps": 12, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                                 "denoise": 1.0}, {"pos": [800, 200]})
    g.add_node("ForwardNoiseStrip", "6", {"seed": 3, "timesteps": "0,100,250,500,750,999"}, {"pos": [1160, 200]})
    g.add_node("SaveImage", "7", {"filename_prefix": "explain/forward_noise"}, {"pos": [1520, 200]})
    for src, slot, dst, name in [("1", 0, "5", "model"), ("2", 0, "5", "positive"), ("3", 0, "5", "negative"),
                                 ("4", 0, "5", "latent_image"), ("1", 0, "6", "model"), ("1", 2, "6", "vae"),
                                 ("5", 0, "6", "samples"), ("6", 0, "7", "images")]:
        g.connect(src, slot, dst, name)
    return g


def explain_schedules() -> Graph:
    """Every scheduler's noise levels for the bundled model over 12 steps, karras highlighted."""
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": BUNDLED}, {"pos": [40, 200]})
    g.add_node("ScheduleExplorer", "2", {"steps": 12, "denoise": 1.0, "scheduler": "karras"}, {"pos": [420, 200]})
    g.add_node("SaveImage", "3", {"filename_prefix": "explain/schedules"}, {"pos": [780, 200]})
    g.connect("1", 0, "2", "model")
    g.connect("2", 0, "3", "images")
    return g


def explain_why_step() -> Graph:
    """Naive x_t − ε̂ vs the one-shot x̂₀ vs the sampler, at the first step and at a middle one. The
    prompt leaves colour, shape and place open, so the one-shot x̂₀ is visibly an average."""
    g = Graph(REGISTRY)
    _prompted(g, "a large shape on a white background")
    for node_id, save_id, at_step, y in (("5", "6", 0, 60), ("7", "8", 4, 420)):
        g.add_node("WhySchedulerStep", node_id, {"seed": 42, "steps": 12, "cfg": 3.0, "sampler_name": "euler",
                                                 "scheduler": "normal", "at_step": at_step},
                   {"pos": [800, y], "title": f"Why step (at step {at_step})"})
        g.add_node("SaveImage", save_id, {"filename_prefix": f"explain/why_step_{at_step}"}, {"pos": [1160, y]})
        for src, slot, name in [("1", 0, "model"), ("2", 0, "positive"), ("3", 0, "negative"),
                                ("4", 0, "latent_image"), ("1", 2, "vae")]:
            g.connect(src, slot, node_id, name)
        g.connect(node_id, 0, save_id, "images")
    return g


def explain_trace() -> Graph:
    """A recorded run (KSamplerTrace) shown three ways: a filmstrip of every step, where each prompt
    word attended, and what classifier-free guidance adds."""
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": BUNDLED}, {"pos": [40, 300]})
    g.add_node("CLIPTokenize", "2", {"text": PROMPT}, {"pos": [420, 40], "title": "Tokenize (positive)"})
    g.add_node("CLIPTextEncodeTokens", "3", {}, {"pos": [780, 40], "title": "Encode (positive)"})
    g.add_node("CLIPTextEncode", "4", {"text": NEGATIVE}, {"pos": [420, 330], "title": "Negative"})
    g.add_node("EmptyLatentImage", "5", {"width": 64, "height": 64, "batch_size": 1}, {"pos": [420, 560]})
    g.add_node("KSamplerTrace", "6", {"seed": 42, "steps": 12, "cfg": 5.0, "sampler_name": "euler",
                                      "scheduler": "normal", "denoise": 1.0, "record_attention": True},
               {"pos": [1120, 200]})
    g.add_node("VAEDecode", "7", {}, {"pos": [1480, 40]})
    g.add_node("TraceFilmstrip", "8", {"rows": "x_t, x0, eps, update", "decode": "vae", "every": 1},
               {"pos": [1480, 240]})
    g.add_node("CrossAttentionMaps", "9", {"step": 0, "max_tokens": 12}, {"pos": [1480, 480]})
    g.add_node("CFGInspector", "10", {"steps": "", "show": "x0"}, {"pos": [1480, 720]})
    for node_id, save_id, prefix, y in (("8", "11", "trace_filmstrip", 240), ("9", "12", "cross_attention", 480),
                                        ("10", "13", "cfg", 720)):
        g.add_node("SaveImage", save_id, {"filename_prefix": f"explain/{prefix}"}, {"pos": [1840, y]})
        g.connect(node_id, 0, save_id, "images")
    for src, slot, dst, name in [("1", 1, "2", "clip"), ("1", 1, "3", "clip"), ("2", 0, "3", "tokens"),
                                 ("1", 1, "4", "clip"), ("1", 0, "6", "model"), ("3", 0, "6", "positive"),
                                 ("4", 0, "6", "negative"), ("5", 0, "6", "latent_image"), ("2", 0, "6", "tokens"),
                                 ("6", 0, "7", "samples"), ("1", 2, "7", "vae"), ("6", 1, "8", "trace"),
                                 ("1", 2, "8", "vae"), ("6", 1, "9", "trace"), ("7", 0, "9", "image"),
                                 ("6", 1, "10", "trace"), ("1", 2, "10", "vae")]:
        g.connect(src, slot, dst, name)
    return g


EXPLAIN = {"explain_forward_noise.json": explain_forward_noise, "explain_schedules.json": explain_schedules,
           "explain_why_step.json": explain_why_step, "explain_trace.json": explain_trace}


LORA = "sdgraph-shapes-heart.safetensors"
LORA_PROMPT = "a red heart in the centre on a white background"


def lora(prompt: str = LORA_PROMPT) -> Graph:
    """Loader → LoraLoader (the bundled model's "heart" LoRA, tools/train_lora.py) → prompts → KSampler → save.
    The bundled model alone has never seen a heart; strength 0 on both sliders shows what it draws instead."""
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": BUNDLED}, {"pos": [40, 260]})
    g.add_node("LoraLoader", "2", {"lora_name": LORA, "strength_model": 1.0, "strength_clip": 1.0},
               {"pos": [400, 260]})
    g.add_node("CLIPTextEncode", "3", {"text": prompt}, {"pos": [760, 40], "title": "Prompt"})
    g.add_node("CLIPTextEncode", "4", {"text": ""}, {"pos": [760, 300], "title": "Negative"})
    g.add_node("EmptyLatentImage", "5", {"width": 64, "height": 64, "batch_size": 4}, {"pos": [760, 540]})
    g.add_node("KSampler", "6", {"seed": 42, "steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                                 "denoise": 1.0}, {"pos": [1120, 200]})
    g.add_node("VAEDecode", "7", {}, {"pos": [1480, 200]})
    g.add_node("SaveImage", "8", {"filename_prefix": "lora"}, {"pos": [1720, 200]})
    for src, slot, dst, name in [("1", 0, "2", "model"), ("1", 1, "2", "clip"), ("2", 1, "3", "clip"),
                                 ("2", 1, "4", "clip"), ("2", 0, "6", "model"), ("3", 0, "6", "positive"),
                                 ("4", 0, "6", "negative"), ("5", 0, "6", "latent_image"), ("6", 0, "7", "samples"),
                                 ("1", 2, "7", "vae"), ("7", 0, "8", "images")]:
        g.connect(src, slot, dst, name)
    return g


def main() -> None:
    REGISTRY.discover("nodes")
    out = REPO / "workflows"
    save_workflow(txt2img(), out / "default.json")
    save_workflow(txt2img(), out / "txt2img.json")
    save_workflow(img2img(), out / "img2img.json")
    save_workflow(txt2img(), out / "txt2img.api.json", format="api")
    save_workflow(lora(), out / "lora.json")
    for name, build in EXPLAIN.items():
        save_workflow(build(), out / name)
    print("wrote", ", ".join(p.name for p in sorted(out.glob("*.json"))))


if __name__ == "__main__":
    main()
