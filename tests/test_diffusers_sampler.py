"""DiffusersSampler runs the loop of diffusers' own pipeline: same components + seed → same image."""

import diffusers
import numpy as np
import pytest
import torch

from nodegraph import REGISTRY, Executor, Graph
from nodes.core.env import SDEnvironment
from nodes.sampling.diffusers_names import SCHEDULER_CLASSES

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


def run(tiny, g, executor=None):
    executor = executor or Executor(REGISTRY, env=SDEnvironment(models_dir=tiny / "models", output_dir=tiny / "out",
                                                                 device="cpu", dtype="fp32"))
    result = executor.run(g)
    assert result.ok, result.error
    return result.outputs["6"][0]


@pytest.fixture(scope="module")
def executor(tiny):
    """One executor for the parity runs: the loader and the prompts run once, the sampler per class."""
    return Executor(REGISTRY, env=SDEnvironment(models_dir=tiny / "models", output_dir=tiny / "out", device="cpu",
                                                dtype="fp32"))


@pytest.fixture(scope="module")
def pipeline_image(tiny):
    """StableDiffusionPipeline on the same components and seed, with the named scheduler class built
    from the folder's own scheduler config (plus any options), fresh for each call."""
    folder = tiny / "models" / "checkpoints" / "tiny"
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                             feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    base = dict(pipe.scheduler.config)

    def image(scheduler_class: str, steps: int = 5, **scheduler_options) -> np.ndarray:
        # from_config warns about, then ignores, the keys a class does not take (skip_prk_steps for LCM/TCD).
        pipe.scheduler = getattr(diffusers, scheduler_class).from_config({**base, **scheduler_options})
        return pipe(PROMPT, negative_prompt="", num_inference_steps=steps, guidance_scale=7.5, height=64, width=64,
                    generator=torch.Generator().manual_seed(1234), output_type="np").images

    return image


@pytest.mark.parametrize("scheduler_class", SCHEDULER_CLASSES)
def test_matches_stable_diffusion_pipeline(tiny, executor, pipeline_image, scheduler_class):
    """Every class the node offers. The pipeline draws the initial noise and every ancestral/SDE step's
    noise from the one generator, as our loop does; DPMSolverSDEScheduler's Brownian tree is seeded by
    `noise_sampler_seed` instead, which the node sets to its seed, so the pipeline gets the same."""
    ours = run(tiny, graph(scheduler_class), executor)
    options = {"noise_sampler_seed": 1234} if scheduler_class == "DPMSolverSDEScheduler" else {}
    theirs = pipeline_image(scheduler_class, **options)
    assert ours.shape == theirs.shape == (1, 64, 64, 3)
    assert np.abs(ours.numpy() - theirs).max() <= 1e-4


def test_sigma_option_matches_stable_diffusion_pipeline(tiny, executor, pipeline_image):
    ours = run(tiny, graph("UniPCMultistepScheduler", sigmas="karras", steps=3), executor)
    theirs = pipeline_image("UniPCMultistepScheduler", steps=3, use_karras_sigmas=True)
    assert np.abs(ours.numpy() - theirs).max() <= 1e-4


def test_sde_scheduler_is_reproducible_from_the_seed(tiny):
    """DPMSolverSDEScheduler's Brownian tree must come from the node's seed, not the global torch RNG:
    two fresh runs with the same seed (and different global RNG states) give the same image."""
    images = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        images.append(run(tiny, graph("DPMSolverSDEScheduler", steps=2)))
    assert torch.equal(images[0], images[1])


def test_unsupported_sigma_option_is_a_clear_error(tiny):
    result = Executor(REGISTRY, env=SDEnvironment(models_dir=tiny / "models")).run(graph("DDIMScheduler", sigmas="karras"))
    assert result.status == "error"
    assert result.error.message.startswith('node 5 (DiffusersSampler): input "sigmas": DDIMScheduler has no '
                                           '"karras" sigma option')
