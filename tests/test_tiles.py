"""Labelled tile grids (nodes/imaging/tiles.py): layout, smooth upscaling, labels drawn, and the
PIL <-> IMAGE conversions."""

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.imaging import tiles


def solid(colour, size=(8, 8)):
    return Image.new("RGB", size, colour)


def test_small_tiles_are_upscaled_smoothly_to_the_minimum_side():
    checker = Image.fromarray((np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB")
    big = tiles.upscale(checker, 96)
    assert big.size == (96, 96)
    # Bicubic blends neighbours: a nearest-neighbour blow-up would hold only 0 and 255.
    values = np.unique(np.asarray(big)[..., 0])
    assert len(values) > 10
    assert tiles.upscale(solid("red", (200, 120)), 96).size == (200, 120)  # already large enough


def test_grid_places_each_tile_in_its_cell_with_room_for_labels():
    colours = [["red", "green", "blue"], ["yellow", "cyan", "magenta"]]
    rows = [[solid(c) for c in row] for row in colours]
    bare = tiles.grid(rows, min_side=96)
    labelled = tiles.grid(rows, ["t=0", "t=500", "t=999"], ["x_t", "x̂₀"], title="Forward noise",
                          captions=[["σ=0", "σ=1", "σ=14"]] * 2, min_side=96)
    # Three 96-px columns and two 96-px rows plus gaps; labels only add room.
    assert bare.width >= 3 * 96 and bare.height >= 2 * 96
    assert labelled.width > bare.width and labelled.height > bare.height
    # The centre of each tile sits in the grid in row-major order, left to right, top to bottom.
    arr = np.asarray(bare).astype(int)
    expected = {"red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
                "cyan": (0, 255, 255), "magenta": (255, 0, 255)}
    for r, row in enumerate(colours):
        for c, name in enumerate(row):
            x = tiles.GAP + c * (96 + tiles.GAP) + 48
            y = tiles.GAP + r * (96 + tiles.GAP) + 48
            assert tuple(arr[y, x]) == expected[name]


def test_labels_are_drawn_as_ink_on_the_background():
    rows = [[solid("white", (96, 96))]]
    plain = np.asarray(tiles.grid(rows, min_side=96))
    titled = np.asarray(tiles.grid(rows, title="√ᾱ and σ", min_side=96))
    assert (plain < 128).sum() == 0  # all white: no text
    assert (titled[: titled.shape[0] - 96] < 128).sum() > 20  # dark pixels above the tile: the title


def test_printable_spells_greek_only_for_fonts_without_it():
    default = Image.core  # any object without getname counts as a font without Greek
    assert tiles.printable("√ᾱ σ ε̂", default) == "sqrtabar sigma eps_hat"
    f = tiles.font(12)
    if "DejaVu" in f.getname()[0]:
        assert tiles.printable("√ᾱ", f) == "√ᾱ"


def test_grid_without_tiles_is_an_error():
    with pytest.raises(ValueError):
        tiles.grid([])


def test_image_tensor_round_trips_through_pil():
    image = torch.rand(2, 5, 7, 3)
    pils = tiles.image_to_pils(image)
    assert [p.size for p in pils] == [(7, 5), (7, 5)]
    back = tiles.pils_to_image(pils)
    assert back.shape == (2, 5, 7, 3) and back.dtype == torch.float32
    assert torch.allclose(back, image, atol=0.5 / 255 + 1e-6)
    with pytest.raises(ValueError):
        tiles.pils_to_image([solid("red", (4, 4)), solid("red", (5, 4))])


def test_latent_tile_maps_channels_to_rgb_and_upscales():
    latent = torch.zeros(1, 4, 8, 8)
    latent[0, 1] = 2.0  # channel 1 leans green in SD's table
    tile = tiles.latent_tile(latent, min_side=128)
    assert tile.size == (128, 128)
    r, g, b = np.asarray(tile)[64, 64].astype(int)
    assert g > r and g > b
    with pytest.raises(ValueError):
        tiles.latent_tile(torch.zeros(3, 8, 8))
