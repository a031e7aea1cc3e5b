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


def main() -> None:
    REGISTRY.discover("nodes")
    out = REPO / "workflows"
    save_workflow(txt2img(), out / "default.json")
    save_workflow(txt2img(), out / "txt2img.json")
    save_workflow(img2img(), out / "img2img.json")
    save_workflow(txt2img(), out / "txt2img.api.json", format="api")
    print("wrote", ", ".join(p.name for p in sorted(out.glob("*.json"))))


if __name__ == "__main__":
    main()
