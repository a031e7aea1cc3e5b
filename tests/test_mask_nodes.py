"""Mask nodes and the inpainting/outpainting arithmetic, on small tensors, against ComfyUI's rules
(MASK is [B, H, W]; positions in pixels; ComfyUI's edge quirks kept on purpose)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph import REGISTRY, NodeInputError
from nodes.imaging.files import load_image_mask
from nodes.imaging.masks import inpaint_prepare, outpaint_mask

REGISTRY.discover("nodes")


def run(node_type, **inputs):
    return REGISTRY.get(node_type)().run(None, **inputs)


def test_solid_mask_is_one_batch_entry_of_the_value():
    (mask,) = run("SolidMask", value=0.25, width=5, height=3)
    assert mask.shape == (1, 3, 5) and torch.all(mask == 0.25)


def test_mask_to_image_and_back_round_trips_per_channel():
    mask = torch.rand(2, 4, 5)
    (image,) = run("MaskToImage", mask=mask)
    assert image.shape == (2, 4, 5, 3) and torch.equal(image[..., 1], mask)
    image = torch.rand(2, 4, 5, 3)
    (green,) = run("ImageToMask", image=image, channel="green")
    assert torch.equal(green, image[..., 1])
    with pytest.raises(NodeInputError, match="no alpha channel"):
        run("ImageToMask", image=image, channel="alpha")


def test_invert_and_threshold_are_elementwise():
    mask = torch.tensor([[[0.0, 0.5, 0.75]]])
    assert torch.equal(run("InvertMask", mask=mask)[0], torch.tensor([[[1.0, 0.5, 0.25]]]))
    assert torch.equal(run("ThresholdMask", mask=mask, value=0.5)[0], torch.tensor([[[0.0, 0.0, 1.0]]]))  # strictly above


def test_crop_mask_cuts_every_batch_entry():
    mask = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6)
    (out,) = run("CropMask", mask=mask, x=1, y=2, width=3, height=10)
    assert torch.equal(out, mask[:, 2:6, 1:4])


@pytest.mark.parametrize(("operation", "expected"), [
    ("multiply", 0.3 * 0.6), ("add", 0.9), ("subtract", 0.0), ("and", 0.0), ("or", 1.0), ("xor", 1.0)])
def test_mask_composite_operations_at_an_offset(operation, expected):
    destination = torch.full((1, 4, 4), 0.3)
    source = torch.full((1, 3, 3), 0.6)
    (out,) = run("MaskComposite", destination=destination, source=source, x=2, y=1, operation=operation)
    assert out.shape == (1, 4, 4)
    assert torch.allclose(out[0, 1:4, 2:4], torch.full((3, 2), expected))  # the part inside the destination
    untouched = torch.ones(4, 4, dtype=torch.bool)
    untouched[1:4, 2:4] = False
    assert torch.all(out[0][untouched] == 0.3)


def test_mask_composite_rounds_before_logic_and_clamps_sums():
    destination = torch.tensor([[[0.49, 0.51, 0.9]]])
    source = torch.tensor([[[0.9, 0.9, 0.9]]])
    assert run("MaskComposite", destination=destination, source=source, x=0, y=0, operation="and")[0].tolist() == [
        [[0.0, 1.0, 1.0]]]
    assert run("MaskComposite", destination=destination, source=source, x=0, y=0, operation="add")[0].max() == 1.0


def test_feather_mask_fades_left_and_top_and_keeps_comfyuis_minus_zero_quirk():
    (out,) = run("FeatherMask", mask=torch.ones(1, 4, 6), left=2, top=0, right=2, bottom=0)
    row = out[0, 0].tolist()
    # left: columns 0 and 1 × 1/2 and 2/2; right: column -0 (= 0) × 1/2 and column -1 × 2/2.
    assert row == [0.25, 1.0, 1.0, 1.0, 1.0, 1.0]
    (out,) = run("FeatherMask", mask=torch.ones(1, 4, 4), left=0, top=4, right=0, bottom=0)
    assert out[0, :, 0].tolist() == [0.25, 0.5, 0.75, 1.0]


def test_grow_mask_grows_a_diamond_or_a_square_and_shrinks():
    mask = torch.zeros(1, 7, 7)
    mask[0, 3, 3] = 1
    (diamond,) = run("GrowMask", mask=mask, expand=2, tapered_corners=True)
    (square,) = run("GrowMask", mask=mask, expand=2, tapered_corners=False)
    yy, xx = np.mgrid[0:7, 0:7]
    assert np.array_equal(diamond[0].numpy(), (np.abs(yy - 3) + np.abs(xx - 3) <= 2).astype(np.float32))
    assert np.array_equal(square[0].numpy(), ((np.abs(yy - 3) <= 2) & (np.abs(xx - 3) <= 2)).astype(np.float32))
    (shrunk,) = run("GrowMask", mask=square, expand=-2, tapered_corners=False)
    assert torch.equal(shrunk, mask)
    assert run("GrowMask", mask=torch.zeros(3, 4, 4), expand=1, tapered_corners=True)[0].shape == (3, 4, 4)


def test_load_image_mask_reads_one_channel_alpha_inverted(tmp_path):
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 51  # red 0.2
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # one transparent pixel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    alpha = load_image_mask(tmp_path / "m.png", "alpha")
    assert alpha.shape == (1, 3, 4) and alpha[0, 0, 0] == 1 and alpha.sum() == 1
    assert torch.allclose(load_image_mask(tmp_path / "m.png", "red"), torch.full((1, 3, 4), 0.2))
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    assert torch.equal(load_image_mask(tmp_path / "rgb.png", "alpha"), torch.zeros(1, 3, 4))  # opaque: nothing masked


def test_pad_for_outpaint_adds_a_grey_border_and_a_squared_feather():
    image = torch.rand(2, 100, 90, 3)
    padded, mask = run("ImagePadForOutpaint", image=image, left=0, top=16, right=8, bottom=0, feathering=40)
    assert padded.shape == (2, 116, 98, 3) and mask.shape == (1, 116, 98)
    assert torch.equal(padded[:, 16:, :90], image)
    assert torch.all(padded[:, :16] == 0.5) and torch.all(padded[:, :, 90:] == 0.5)
    assert torch.all(mask[0, :16] == 1) and torch.all(mask[0, :, 90:] == 1)
    inner = mask[0, 16:, :90]
    # d = distance to the nearest padded side (top: row i; right: 90 − column j); unpadded sides don't count.
    assert inner[0, 10] == 1.0 and inner[5, 10] == pytest.approx(((40 - 5) / 40) ** 2)
    assert inner[5, 89] == pytest.approx(((40 - 1) / 40) ** 2)
    assert inner[60, 10] == 0 and inner[99, 0] == 0
    # No feathering when twice the feather does not fit in the image.
    _, mask = run("ImagePadForOutpaint", image=torch.rand(1, 60, 60, 3), left=8, top=0, right=0, bottom=0,
                  feathering=30)
    assert torch.all(mask[0, :, 8:] == 0)


def test_outpaint_mask_matches_comfyuis_pixel_loop():
    h, w, top, bottom, left, right, f = 20, 24, 8, 0, 0, 16, 6
    expected = np.ones((h + top + bottom, w + left + right), dtype=np.float32)
    inner = np.zeros((h, w), dtype=np.float32)
    for i in range(h):
        for j in range(w):
            d = min(i if top else h, h - i if bottom else h, j if left else w, w - j if right else w)
            if d < f:
                inner[i, j] = ((f - d) / f) ** 2
    expected[top:top + h, left:left + w] = inner
    assert np.array_equal(outpaint_mask(h, w, top, bottom, left, right, f)[0].numpy(), expected)


def test_inpaint_encode_greys_the_rounded_mask_and_grows_it_asymmetrically():
    pixels = torch.rand(1, 32, 32, 3)
    mask = torch.zeros(1, 32, 32)
    mask[0, 10:20, 12:18] = 1.0
    mask[0, 25, 25] = 0.4  # rounds to 0: kept, not greyed, not in the noise mask
    prepared, noise = inpaint_prepare(pixels, mask, 6)
    assert noise.shape == (1, 1, 32, 32)
    rows = torch.nonzero(noise[0, 0].sum(1)).flatten()
    cols = torch.nonzero(noise[0, 0].sum(0)).flatten()
    # A 6×6 box with padding 3 reaches 3 px back and 2 px forward, so the mask grows 2 px up/left and
    # 3 px down/right (ComfyUI's reference noise mask grows 96×100 → 101×105 the same way).
    assert (rows.min().item(), rows.max().item()) == (8, 22)
    assert (cols.min().item(), cols.max().item()) == (10, 20)
    assert torch.all(prepared[0, 10:20, 12:18] == 0.5)
    assert torch.equal(prepared[0, 25, 25], pixels[0, 25, 25]) and torch.equal(prepared[0, :10], pixels[0, :10])
    _, same = inpaint_prepare(pixels, mask, 0)
    assert torch.equal(same[0, 0], mask[0].round())  # no growth: the mask, rounded


def test_inpaint_encode_resizes_the_mask_and_crops_both_to_whole_cells():
    pixels = torch.rand(1, 35, 42, 3)
    mask = torch.ones(1, 7, 7)
    prepared, noise = inpaint_prepare(pixels, mask, 6)
    assert prepared.shape == (1, 32, 40, 3) and noise.shape == (1, 1, 32, 40)
    assert torch.all(prepared == 0.5) and torch.all(noise == 1)


def test_set_latent_noise_mask_stores_b_1_h_w():
    from nodes.core.values import Latent

    latent = Latent(torch.zeros(2, 4, 8, 8), batch_index=[3, 4])
    (out,) = run("SetLatentNoiseMask", samples=latent, mask=torch.ones(16, 16))
    assert out.noise_mask.shape == (1, 1, 16, 16) and out.batch_index == [3, 4] and out.samples is latent.samples


def test_image_composite_masked_pastes_at_pixel_offsets_with_a_resized_mask():
    destination = torch.zeros(1, 8, 8, 3)
    source = torch.ones(1, 4, 4, 3)
    (out,) = run("ImageCompositeMasked", destination=destination, source=source, x=6, y=2, resize_source=False)
    assert out[0, 2:6, 6:8].eq(1).all() and out.sum() == 4 * 2 * 3  # clipped at the right edge
    mask = torch.zeros(1, 2, 2)
    mask[0, :, 0] = 1  # left half of the source, once resized to 4×4
    (out,) = run("ImageCompositeMasked", destination=destination, source=source, x=0, y=0, resize_source=False,
                 mask=mask)
    assert torch.allclose(out[0, 0, :4, 0], torch.tensor([1.0, 0.75, 0.25, 0.0]))  # bilinear 2 → 4
    (out,) = run("ImageCompositeMasked", destination=destination, source=source, x=0, y=0, resize_source=True)
    assert torch.all(out == 1) and math.isclose(destination.sum().item(), 0.0)  # the input is not changed


def test_the_samplers_noise_mask_is_resized_bilinear_repeated_and_blended_as_comfyui_does():
    from nodes.sampling.ksampler import _MaskedDenoiser, _prepare_mask
    from nodes.sampling.model_sampling import ModelSampling

    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, 8:] = 1.0
    prepared = _prepare_mask(mask, (3, 4, 4, 4), "cpu")
    assert prepared.shape == (3, 4, 4, 4)  # channels repeated, batch cycled
    assert prepared[2, 3].tolist() == [[0.0, 0.0, 1.0, 1.0]] * 4  # bilinear, align_corners False, not rounded
    half = _prepare_mask(torch.tensor([[0.0, 1.0]]), (1, 1, 1, 4), "cpu")
    assert half.flatten().tolist() == [0.0, 0.25, 0.75, 1.0]

    ms = ModelSampling(torch.linspace(0.99, 0.01, 1000, dtype=torch.float64))
    class Inner:
        model_sampling = ms
        uncond_denoised = None

        def __call__(self, x, sigma):
            self.x = x
            return torch.full_like(x, 9.0)

    latent, noise = torch.full((2, 4, 4, 4), 2.0), torch.ones(2, 4, 4, 4)
    den = _MaskedDenoiser(Inner(), prepared[:2], latent, noise)
    x = torch.full((2, 4, 4, 4), 5.0)
    out = den(x, torch.tensor([3.0, 1.0]))  # a σ per batch entry
    # Kept area (mask 0): the model sees latent + σ·noise and its prediction is replaced by the latent.
    assert den.inner.x[0, 0, 0, 0] == 2.0 + 3.0 and den.inner.x[1, 0, 0, 0] == 2.0 + 1.0
    assert den.inner.x[0, 0, 0, 3] == 5.0 and out[0, 0, 0, 3] == 9.0 and out[1, 0, 0, 0] == 2.0
    assert torch.equal(den(x, torch.tensor(3.0))[0], out[0])
