"""Image nodes on small tensors: ComfyUI's resizes (no antialiasing; Lanczos through PIL), crops,
batches, colours, blends, filters and Canny edges (kornia's)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nodegraph import REGISTRY, NodeInputError
from nodes.imaging.ops import gaussian_kernel

REGISTRY.discover("nodes")


def run(node_type, **inputs):
    return REGISTRY.get(node_type)().run(None, **inputs)[0]


def test_scale_by_bilinear_is_plain_interpolate_without_antialiasing():
    image = torch.rand(1, 384, 96, 3)
    out = run("ImageScaleBy", image=image, upscale_method="bilinear", scale_by=0.5)
    expected = F.interpolate(image.movedim(-1, 1), size=(192, 48), mode="bilinear", align_corners=False)
    assert torch.equal(out, expected.movedim(1, -1))


def test_lanczos_is_pils_lanczos_on_8_bit_pixels():
    image = torch.rand(2, 20, 30, 3)
    out = run("ImageScale", image=image, upscale_method="lanczos", width=45, height=0, crop="disabled")
    assert out.shape == (2, 30, 45, 3)
    pil = Image.fromarray(np.clip(255.0 * image[1].numpy(), 0, 255).astype(np.uint8)).resize(
        (45, 30), Image.Resampling.LANCZOS)
    assert torch.equal(out[1], torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0))


def test_image_scale_is_not_clamped_like_comfyuis():
    image = torch.zeros(1, 8, 8, 3)
    image[:, ::2] = 1.0
    out = run("ImageScale", image=image, upscale_method="bicubic", width=13, height=13, crop="disabled")
    assert out.max() > 1.0 or out.min() < 0.0  # bicubic overshoots; ComfyUI leaves it to SaveImage


def test_scale_to_total_pixels_keeps_the_aspect_ratio_and_steps():
    image = torch.rand(1, 100, 200, 3)
    assert run("ImageScaleToTotalPixels", image=image, upscale_method="area", megapixels=0.02,
               resolution_steps=1).shape == (1, 102, 205, 3)  # sqrt(0.02 · 2^20 / 20000) = 1.024
    assert run("ImageScaleToTotalPixels", image=image, upscale_method="area", megapixels=0.02,
               resolution_steps=64).shape == (1, 128, 192, 3)


def test_image_crop_keeps_the_corner_inside():
    image = torch.rand(1, 10, 12, 3)
    assert torch.equal(run("ImageCrop", image=image, width=4, height=3, x=2, y=5), image[:, 5:8, 2:6])
    assert torch.equal(run("ImageCrop", image=image, width=4, height=4, x=50, y=50), image[:, 9:, 11:])


def test_invert_batch_and_empty_image():
    a = torch.rand(1, 4, 4, 3)
    assert torch.equal(run("ImageInvert", image=a), 1.0 - a)
    both = run("ImageBatch", image1=a, image2=torch.ones(2, 8, 2, 3))
    assert both.shape == (3, 4, 4, 3) and both[1:].eq(1).all()
    empty = run("EmptyImage", width=3, height=2, batch_size=2, color=0xFF8000)
    assert empty.shape == (2, 2, 3, 3) and empty[1, 1, 2].tolist() == [1.0, pytest.approx(128 / 255), 0.0]


@pytest.mark.parametrize(("mode", "expected"), [
    ("normal", 0.8), ("multiply", 0.16), ("screen", 0.84), ("overlay", 0.32), ("difference", 0.0),
    ("soft_light", 0.2 + 0.6 * (((16 * 0.2 - 12) * 0.2 + 4) * 0.2 - 0.2))])  # the curve below 0.25
def test_blend_modes(mode, expected):
    a, b = torch.full((1, 2, 2, 3), 0.2), torch.full((1, 2, 2, 3), 0.8)
    out = run("ImageBlend", image1=a, image2=b, blend_factor=1.0, blend_mode=mode)
    assert torch.allclose(out, torch.tensor(float(expected)), atol=1e-6)  # difference 0.2 − 0.8 clamps to 0
    half = run("ImageBlend", image1=a, image2=b, blend_factor=0.5, blend_mode="normal")
    assert torch.allclose(half, torch.tensor(0.5))


def test_blur_keeps_flat_areas_and_spreads_a_dot_by_the_kernel():
    flat = torch.full((1, 9, 9, 3), 0.3)
    assert torch.allclose(run("ImageBlur", image=flat, blur_radius=3, sigma=1.0), flat)
    dot = torch.zeros(1, 9, 9, 3)
    dot[0, 4, 4] = 1.0
    out = run("ImageBlur", image=dot, blur_radius=2, sigma=0.5)
    assert torch.allclose(out[0, 2:7, 2:7, 0], gaussian_kernel(5, 0.5).flip(0, 1))
    assert out[0, :, :, 0].sum() == pytest.approx(1.0)


def test_sharpen_keeps_flat_areas_and_raises_contrast_at_edges():
    flat = torch.full((1, 8, 8, 3), 0.4)
    assert torch.allclose(run("ImageSharpen", image=flat, sharpen_radius=2, sigma=1.0, alpha=1.0), flat)
    step = torch.full((1, 8, 8, 3), 0.4)
    step[:, :, 4:] = 0.6
    out = run("ImageSharpen", image=step, sharpen_radius=1, sigma=1.0, alpha=0.5)
    assert out[0, 0, 3, 0] < 0.4 and out[0, 0, 4, 0] > 0.6 and out.min() >= 0 and out.max() <= 1


def test_canny_draws_white_edges_around_a_square():
    image = torch.zeros(1, 32, 32, 3)
    image[:, 8:24, 8:24] = 1.0
    out = run("Canny", image=image, low_threshold=0.4, high_threshold=0.8)
    assert out.shape == (1, 32, 32, 3) and set(out.unique().tolist()) == {0.0, 1.0}
    edges = out[0, :, :, 0]
    assert edges[:4].sum() == 0 and edges[12:20, 12:20].sum() == 0  # nothing far from the square's border
    assert edges[7:9, 10:22].sum() + edges[23:25, 10:22].sum() >= 20  # its top and bottom sides
    assert torch.equal(out[..., 0], out[..., 2])
    with pytest.raises(NodeInputError, match="above high_threshold"):
        run("Canny", image=image, low_threshold=0.9, high_threshold=0.5)
