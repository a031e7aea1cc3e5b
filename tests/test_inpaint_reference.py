"""VAEEncodeForInpaint against ComfyUI's own output (../shared/fixtures/comfy_ref_nodes, case
inpaint_encode): LoadImage's mask and the grown noise mask exactly, the encoded latent to ≥ 45 dB.

The case ran ComfyUI 0.3.64 on the random-weight SD 1.5 checkpoint that make_random_ckpt.py rebuilds
from sd15_manifest.tsv. Its tensors are drawn in manifest order (CLIP, then the VAE, then the UNet),
so building the manifest only up to the VAE's last tensor gives the checkpoint's VAE weights exactly,
in a few seconds and without writing the 2 GB file; they are saved as a VAE file once per session.
"""


import numpy as np
import pytest
import torch

from tests.shared import FIXTURES, fixture_script

REF = FIXTURES / "comfy_ref_nodes"
pytestmark = pytest.mark.slow


def psnr(ours: np.ndarray, reference: np.ndarray) -> float:
    peak = float(reference.max() - reference.min())
    mse = float(((ours - reference) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.fixture(scope="session")
def random_sd15_vae(tmp_path_factory):
    from safetensors.torch import save_file

    maker = fixture_script("make_random_ckpt.py")
    entries = maker.read_manifest(str(FIXTURES / "sd15_manifest.tsv"))
    last_vae = max(i for i, (name, _, _) in enumerate(entries) if name.startswith("first_stage_model."))
    assert not any(name.startswith("model.") for name, _, _ in entries[:last_vae])  # the UNet comes after
    state, _ = maker.build(entries[:last_vae + 1])
    path = tmp_path_factory.mktemp("sd15_rand") / "sd15_rand_v2_vae.safetensors"
    save_file({k: v for k, v in state.items() if k.startswith("first_stage_model.")}, str(path))
    return path


def test_inpaint_masks_are_comfyuis_exactly():
    from nodes.imaging.files import load_image
    from nodes.imaging.masks import inpaint_prepare

    image, mask = load_image(REF / "inpaint_rgba_256.png")
    assert np.array_equal(mask.numpy(), np.load(REF / "inpaint_encode.load_mask.npy"))
    _, noise_mask = inpaint_prepare(image, mask, 6)
    assert np.array_equal(noise_mask.numpy(), np.load(REF / "inpaint_encode.noise_mask.npy"))


def test_vae_encode_for_inpaint_reproduces_comfyuis_latent(random_sd15_vae):
    from nodegraph import REGISTRY
    from nodes.imaging.files import load_image
    from nodes.models import load_vae

    REGISTRY.discover("nodes")
    image, mask = load_image(REF / "inpaint_rgba_256.png")
    vae = load_vae(random_sd15_vae, dtype=torch.float32)  # ComfyUI ran the VAE in fp32
    ctx = type("Ctx", (), {"check_cancelled": staticmethod(lambda: None)})()
    (latent,) = REGISTRY.get("VAEEncodeForInpaint")().run(ctx, pixels=image, vae=vae, mask=mask, grow_mask_by=6)
    reference = np.load(REF / "inpaint_encode.encoded.latent.npy")
    assert latent.samples.shape == reference.shape == (1, 4, 32, 32)
    assert psnr(latent.samples.numpy(), reference) >= 45.0
    assert np.array_equal(latent.noise_mask.numpy(), np.load(REF / "inpaint_encode.noise_mask.npy"))
    # 45 dB is a real bar here: the random VAE's latents are small (|x| < 0.17), yet all-zero ones
    # or a plain VAEEncode of the same image (ComfyUI's feature_effect: 14 dB in pixels) are far below it.
    assert psnr(np.zeros_like(reference), reference) < 25.0
