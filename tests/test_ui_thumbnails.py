"""The editor shows a node's IMAGE or MASK output as a thumbnail once a run has finished."""

from types import SimpleNamespace

import torch

from nodegraph import REGISTRY, Graph
from ui.runner import THUMB, output_thumbnails, tensor_thumbnail

REGISTRY.discover("nodes")


def test_an_image_thumbnail_is_the_first_of_the_batch_in_8_bit_rgb():
    image = torch.zeros(2, 4, 6, 3)
    image[0, :, :, 0] = 1.0  # the first image is red
    image[0, 0, 0] = torch.tensor([0.0, 0.5, 2.0])  # out of range values are clamped
    thumb = tensor_thumbnail(image, "IMAGE")
    assert (thumb.width(), thumb.height()) == (6, 4)
    assert thumb.pixelColor(3, 2).getRgb()[:3] == (255, 0, 0)
    assert thumb.pixelColor(0, 0).getRgb()[:3] == (0, 127, 255)


def test_a_mask_thumbnail_is_grey_and_a_large_one_is_shrunk():
    mask = torch.zeros(1, 3 * THUMB, THUMB)
    mask[0, :, : THUMB // 2] = 1.0
    thumb = tensor_thumbnail(mask, "MASK")
    assert max(thumb.width(), thumb.height()) <= THUMB
    assert thumb.pixelColor(0, 0).getRgb()[:3] == (255, 255, 255)
    assert thumb.pixelColor(thumb.width() - 1, 0).getRgb()[:3] == (0, 0, 0)
    assert tensor_thumbnail("not a tensor", "MASK") is None


def test_thumbnails_are_made_for_image_and_mask_outputs_only():
    g = Graph(REGISTRY)
    g.add_node("SolidMask", "1", {"value": 1.0, "width": 8, "height": 8})
    g.add_node("EmptyLatentImage", "2", {})
    g.add_node("ImagePadForOutpaint", "3", {})
    result = SimpleNamespace(outputs={"1": (torch.ones(1, 8, 8),), "2": (object(),),
                                      "3": (torch.rand(1, 8, 8, 3), torch.ones(1, 8, 8))}, ui={})
    thumbs = output_thumbnails(REGISTRY, g, result)
    assert sorted(thumbs) == ["1", "3"]
    assert thumbs["3"].width() == 8
