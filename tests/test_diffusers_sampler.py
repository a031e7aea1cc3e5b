"""DiffusersSampler runs the loop of diffusers' own pipeline: same components + seed → same image."""

import diffusers
import numpy as np
import pytest
import torch

from nodegraph import REGISTRY, Executor, Graph
from nodes.diffusers_names import SCHEDULER_CLASSES
from nodes.env import Env

REGISTRY.discover("nodes")
PROMPT = "a red circle at the top left"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from nodes.models.testing import write_tiny_diffusers_folder

    root = tmp_path_factory.mktemp("diffusers-sampler")
    write_tiny_diffusers_folder(root / "models" / "checkpoints" / "tiny")
    return root


def graph(scheduler_class: str, sigmas: str = "default", steps: int = 5, cfg: float = 7.5) -> Graph:
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": "tiny"})
    g.add_node("CLIPTextEncode", "2", {"text": PROMPT})
    g.add_node("CLIPTextEncode", "3", {"text": ""})
    g.add_node("EmptyLatentImage", "4", {"width": 64, "height": 64})
    g.add_node("DiffusersSampler", "5", {"seed": 1234, "steps": steps, "cfg": cfg, "scheduler_class": scheduler_class,
                                         "sigmas": sigmas})
    g.add_node("VAEDecode", "6")
    g.add_node("PreviewImage", "7")
    for src, slot, dst, name in [("1", 1, "2", "clip"), ("1", 1, "3", "clip"), ("1", 0, "5", "model"),
                                 ("2", 0, "5", "positive"), ("3", 0, "5", "negative"), ("4", 0, "5", "latent_image"),
                                 ("5", 0, "6", "samples"), ("1", 2, "6", "vae"), ("6", 0, "7", "images")]:
        g.connect(src, slot, dst, name)
    return g


def run(tiny, g):
    result = Executor(REGISTRY, env=Env(models_dir=tiny / "models", output_dir=tiny / "out")).run(g)
    assert result.ok, result.error
    return result.outputs["6"][0]


@pytest.mark.parametrize("scheduler_class", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                             "EulerAncestralDiscreteScheduler", "DDIMScheduler"])
def test_matches_stable_diffusion_pipeline(tiny, scheduler_class):
    ours = run(tiny, graph(scheduler_class))
    folder = tiny / "models" / "checkpoints" / "tiny"
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                             feature_extractor=None, requires_safety_checker=False)
    scheduler_cls = getattr(diffusers, scheduler_class)
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPT, negative_prompt="", num_inference_steps=5, guidance_scale=7.5, height=64, width=64,
                  generator=torch.Generator().manual_seed(1234), output_type="np").images
    assert ours.shape == theirs.shape == (1, 64, 64, 3)
    assert np.abs(ours.numpy() - theirs).max() <= 1e-4


def test_every_listed_scheduler_class_exists_and_samples(tiny):
    for name in SCHEDULER_CLASSES:
        assert hasattr(diffusers, name), name
    image = run(tiny, graph("UniPCMultistepScheduler", sigmas="karras", steps=3))
    assert torch.isfinite(image).all()


def test_unsupported_sigma_option_is_a_clear_error(tiny):
    result = Executor(REGISTRY, env=Env(models_dir=tiny / "models")).run(graph("DDIMScheduler", sigmas="karras"))
    assert result.status == "error"
    assert result.error.message.startswith('node 5 (DiffusersSampler): input "sigmas": DDIMScheduler has no '
                                           '"karras" sigma option')
