"""Live previews: the latent→RGB map fitted to a VAE reproduces colours that VAE encodes."""

from types import SimpleNamespace

import torch

from nodes.core.values import LatentFormat, VaeModel
from nodes.imaging.preview import fit_latent_rgb, latent_to_preview


class LinearVae(torch.nn.Module):
    """A stand-in VAE whose latent is a fixed linear mix of each 8×8 cell's mean colour."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Parameter(torch.tensor([[0.9, -0.2, 0.1], [0.1, 0.8, -0.3], [-0.4, 0.2, 0.7],
                                                    [0.3, 0.3, 0.3]]), requires_grad=False)

    def encode(self, x):
        cells = torch.nn.functional.avg_pool2d(x, 8)
        latent = torch.einsum("lc,bchw->blhw", self.mix, cells) + 0.25
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: latent))


def test_fitted_map_turns_an_encoded_colour_back_into_that_colour():
    fmt = LatentFormat(scale_factor=0.5)
    factors = fit_latent_rgb(VaeModel(LinearVae()), fmt)
    assert len(factors) == 5  # four channels and a bias row
    orange = torch.tensor([1.0, 0.5, 0.0])
    pixels = (orange[None, :, None, None].expand(1, 3, 64, 64)) * 2 - 1
    latent = fmt.to_sampler(LinearVae().encode(pixels).latent_dist.mode())
    image = latent_to_preview(latent, factors)
    assert image.size == (64, 64)  # 8×8 cells, shown 8× larger
    r, g, b = image.getpixel((5, 5))
    assert abs(r - 255) <= 2 and abs(g - 128) <= 2 and b <= 2


def test_without_a_fit_the_sd_table_is_used_and_wrong_channel_counts_are_skipped():
    assert latent_to_preview(torch.zeros(1, 4, 8, 8)).size == (64, 64)
    assert latent_to_preview(torch.zeros(1, 16, 8, 8)) is None
