"""Tiled VAE decode/encode (ComfyUI's three tilings with linear seams) and the automatic fallback to
tiles when a whole-image pass runs out of memory."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from nodegraph import REGISTRY
from nodes.core.values import LatentFormat, VaeModel
from nodes.imaging import vae as vae_ops

REGISTRY.discover("nodes")


class PointwiseVae(torch.nn.Module):
    """Each pixel depends on one latent cell (and back), so tiling must not change the result.
    `limit`: inputs with more elements per image than this raise torch.OutOfMemoryError."""

    def __init__(self, limit: int | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.limit = limit
        self.calls: list[tuple[int, ...]] = []

    def _check(self, x):
        self.calls.append(tuple(x.shape))
        if self.limit is not None and x[0].numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def decode(self, z):
        self._check(z)
        return SimpleNamespace(sample=torch.tanh(F.interpolate(z[:, :3], scale_factor=8, mode="nearest")))

    def encode(self, x):
        self._check(x)
        mean = F.avg_pool2d(x, 8)
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: torch.cat([mean, mean[:, :1] * 2], 1)))


def make_vae(limit=None) -> VaeModel:
    return VaeModel(vae=PointwiseVae(limit), latent_format=LatentFormat())


def test_tiled_decode_equals_a_whole_decode_for_a_pointwise_decoder():
    vae = make_vae()
    z = torch.randn(2, 4, 40, 24)
    whole = vae_ops.decode(vae, z)
    tiled = vae_ops.decode_tiled(vae, z, tile_x=16, tile_y=16, overlap=4)
    assert tiled.shape == whole.shape == (2, 320, 192, 3)
    assert torch.allclose(tiled, whole, atol=1e-6)


def test_tiled_encode_equals_a_whole_encode_for_a_pointwise_encoder():
    vae = make_vae()
    pixels = torch.rand(1, 200, 136, 3)
    whole = vae_ops.encode(vae, pixels)
    assert torch.allclose(vae_ops.encode_tiled(vae, pixels, tile_x=64, tile_y=64, overlap=16), whole, atol=1e-6)


def test_tiles_start_every_tile_minus_overlap_and_the_last_is_shorter():
    seen = []

    def fn(x):
        seen.append(tuple(x.shape[2:]))
        return F.interpolate(x[:, :3], scale_factor=8)

    # VAEDecodeTiled(tile 256 px, overlap 64 px) on a 256×256 image: tiles of 16×64, 64×16, 32×32 cells.
    z = torch.randn(1, 4, 32, 32)
    for tile in [(64, 16), (16, 64), (32, 32)]:
        vae_ops.tiled_map(z, fn, tile, 8, 8, 3)
    # starts 0, 8, 16 along the tiled side (range(0, 32 − 8, 16 − 8)); a tile that fits is one call.
    assert seen == [(32, 16)] * 3 + [(16, 32)] * 3 + [(32, 32)]
    seen.clear()
    vae_ops.tiled_map(torch.randn(1, 4, 10, 30), fn, (10, 16), 4, 8, 3)
    assert seen == [(10, 16), (10, 16), (10, 6)]  # starts 0, 12, 24 (range(0, 30 − 4, 12)): the last is shorter


def test_the_blend_weights_ramp_linearly_over_the_overlap():
    # Tile outputs are constant: 1 for the first tile, 0 for the second; the seam shows the weights.
    count = iter(range(10))

    def fn(x):
        return torch.full((1, 1, x.shape[2], x.shape[3]), 1.0 if next(count) == 0 else 0.0)

    out = vae_ops.tiled_map(torch.zeros(1, 1, 1, 12), fn, (1, 8), 4, 1, 1)[0, 0, 0]
    # Tile 1 covers 0..7, tile 2 covers 4..11; both weigh their last/first 4 columns 1/4, 2/4, 3/4, 4/4.
    ramp_down = torch.tensor([1.0, 0.75, 0.5, 0.25])
    expected = ramp_down / (ramp_down + ramp_down.flip(0))
    assert torch.allclose(out[4:8], expected) and torch.all(out[:4] == 1) and torch.all(out[8:] == 0)


def test_decode_falls_back_to_tiles_when_memory_runs_out(caplog):
    vae = make_vae(limit=64 * 64 * 4)
    z = torch.randn(1, 4, 96, 80)
    with caplog.at_level("WARNING", logger="sdgraph.vae"):
        out = vae_ops.decode(vae, z)
    assert "retrying in tiles" in caplog.text
    assert out.shape == (1, 768, 640, 3)
    assert torch.equal(out, vae_ops.decode_tiled(make_vae(), z, 64, 64, 16))  # ComfyUI's fallback tiles
    assert max(c[2] * c[3] for c in vae.vae.calls[1:]) <= 64 * 64


def test_encode_falls_back_to_tiles_and_other_errors_still_raise():
    vae = make_vae(limit=3 * 512 * 512)
    pixels = torch.rand(1, 520, 600, 3)
    out = vae_ops.encode(vae, pixels)
    assert torch.equal(out, vae_ops.encode_tiled(make_vae(), pixels, 512, 512, 64))
    broken = make_vae()
    broken.vae.decode = lambda z: (_ for _ in ()).throw(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes"):
        vae_ops.decode(broken, torch.randn(1, 4, 8, 8))


def test_vae_decode_tiled_node_caps_the_overlap_at_a_quarter_tile():
    vae = make_vae()
    z = torch.randn(1, 4, 24, 24)
    (out,) = REGISTRY.get("VAEDecodeTiled")().run(
        SimpleNamespace(check_cancelled=lambda: None), samples=SimpleNamespace(samples=z), vae=vae,
        tile_size=64, overlap=64, temporal_size=64, temporal_overlap=8)
    assert torch.equal(out, vae_ops.decode_tiled(vae, z, 8, 8, 2))  # overlap 64 px → 16 px = 2 cells
    with pytest.raises(Exception, match="cannot overlap"):
        vae_ops.encode_tiled(vae, torch.rand(1, 256, 256, 3), 128, 128, 64)  # the 64-px-high tiling
