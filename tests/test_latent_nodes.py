"""Latent nodes on small tensors: pixel offsets become cells of 8, batches keep their noise indices,
resizes follow ComfyUI (its bislerp, its centre crop), `.latent` files round-trip safely."""

import math

import pytest
import torch
from safetensors.torch import save_file

from nodegraph import REGISTRY, Executor, Graph
from nodes.core.env import SDEnvironment
from nodes.core.values import Latent
from nodes.imaging.ops import bislerp, center_crop_to_aspect

REGISTRY.discover("nodes")


def run(node_type, **inputs):
    return REGISTRY.get(node_type)().run(None, **inputs)[0]


def latent(*shape, **kw):
    return Latent(torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape), **kw)


def test_upscale_by_rounds_each_side_and_keeps_the_noise_mask():
    mask = torch.ones(1, 1, 8, 8)
    out = run("LatentUpscaleBy", samples=latent(1, 4, 32, 21, noise_mask=mask), upscale_method="nearest-exact",
              scale_by=1.5)
    assert out.samples.shape == (1, 4, 48, 32)  # round(21 × 1.5) = round(31.5) = 32
    assert out.noise_mask is mask


def test_upscale_to_a_size_clamps_to_64_pixels_and_keeps_the_aspect_ratio_from_one_side():
    out = run("LatentUpscale", samples=latent(1, 4, 6, 8), upscale_method="bilinear", width=0, height=40,
              crop="disabled")
    assert out.samples.shape == (1, 4, 8, 10)  # height 40 → 64 px; width round(8 × 64 / 6) = 85 px → 10 cells


def test_bislerp_blends_directions_on_the_sphere_and_lengths_linearly():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # two cells: (1, 0) and (0, 2)
    out = bislerp(x, 4, 1)[0, :, 0].T
    # Source positions of 4 outputs over 2 inputs: 0 (clamped), 0.25, 0.75, 1 (clamped).
    for k, (t, length) in enumerate([(0.0, 1.0), (0.25, 1.25), (0.75, 1.75), (1.0, 2.0)]):
        angle = t * math.pi / 2
        assert torch.allclose(out[k], torch.tensor([math.cos(angle), math.sin(angle)]) * length, atol=1e-6)


def test_center_crop_takes_the_same_from_both_sides_rounding_half_to_even():
    x = torch.zeros(1, 1, 64, 101)
    assert center_crop_to_aspect(x, 10, 10).shape[-2:] == (64, 65)  # round(18.5) = 18 from each side
    assert center_crop_to_aspect(torch.zeros(1, 1, 100, 50), 1, 1).shape[-2:] == (50, 50)


def test_latent_composite_pastes_at_cells_and_feathers_only_inner_edges():
    to = Latent(torch.zeros(1, 1, 8, 8), batch_index=[5])
    source = Latent(torch.ones(1, 1, 4, 8))
    out = run("LatentComposite", samples_to=to, samples_from=source, x=16, y=32, feather=0)
    assert out.samples[0, 0, 4:, 2:].eq(1).all() and out.samples.sum() == 4 * 6 and out.batch_index == [5]
    out = run("LatentComposite", samples_to=to, samples_from=source, x=16, y=8, feather=16).samples[0, 0]
    # Pasted at cell (2, 1), 4 × 6 visible; top, left and bottom edges are inside `to`: ramps 1/2, 2/2.
    assert out[1, 2] == 0.25 and out[2, 3] == 1.0 and out[4, 2] == 0.25 and out[4, 4] == 0.5 and out[1, 7] == 0.5
    assert out[0].sum() == 0 and out[5:].sum() == 0


def test_latent_composite_masked_uses_pixel_offsets_and_a_bilinear_mask():
    destination = Latent(torch.zeros(1, 4, 8, 8), noise_mask=torch.ones(1, 1, 8, 8))
    source = Latent(torch.ones(1, 4, 2, 2))
    out = run("LatentCompositeMasked", destination=destination, source=source, x=40, y=8, resize_source=False)
    assert out.samples[0, :, 1:3, 5:7].eq(1).all() and out.samples.sum() == 16
    assert out.noise_mask is destination.noise_mask and destination.samples.sum() == 0
    out = run("LatentCompositeMasked", destination=destination, source=source, x=0, y=0, resize_source=False,
              mask=torch.tensor([[[1.0, 0.0]]]))
    assert out.samples[0, 0, :2, :2].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    out = run("LatentCompositeMasked", destination=destination, source=source, x=0, y=0, resize_source=True)
    assert out.samples.eq(1).all()


def test_from_batch_records_indices_and_splits_the_noise_mask():
    masks = torch.arange(4.0).reshape(4, 1, 1, 1)
    out = run("LatentFromBatch", samples=latent(4, 1, 2, 2, noise_mask=masks), batch_index=1, length=2)
    assert out.batch_index == [1, 2] and torch.equal(out.samples, latent(4, 1, 2, 2).samples[1:3])
    assert out.noise_mask.flatten().tolist() == [1.0, 2.0]
    out = run("LatentFromBatch", samples=latent(4, 1, 2, 2), batch_index=-1, length=5)
    assert out.batch_index == [3] and out.samples.shape[0] == 1
    one = torch.ones(1, 1, 2, 2)
    assert torch.equal(run("LatentFromBatch", samples=latent(4, 1, 2, 2, noise_mask=one), batch_index=2,
                           length=1).noise_mask, one)


def test_repeat_after_from_batch_continues_the_noise_indices():
    picked = run("LatentFromBatch", samples=latent(3, 4, 2, 2), batch_index=1, length=1)
    out = run("RepeatLatentBatch", samples=picked, amount=2)
    assert out.batch_index == [1, 2] and out.samples.shape[0] == 2  # ComfyUI's reference case
    out = run("RepeatLatentBatch", samples=latent(2, 1, 2, 2, batch_index=[4, 6]), amount=3)
    assert out.batch_index == [4, 6, 7, 9, 10, 12]
    assert run("RepeatLatentBatch", samples=latent(2, 1, 2, 2), amount=2).batch_index is None


def test_latent_batch_resizes_the_second_and_joins_the_indices():
    out = run("LatentBatch", samples1=latent(2, 4, 8, 8), samples2=Latent(torch.ones(1, 4, 4, 4), batch_index=[7]))
    assert out.samples.shape == (3, 4, 8, 8) and out.batch_index == [0, 1, 7]
    assert out.samples[2].eq(1).all()


def test_latent_crop_turns_pixels_into_cells_and_keeps_eight_cells():
    x = latent(1, 1, 16, 16)
    out = run("LatentCrop", samples=x, width=64, height=64, x=16, y=24)
    assert torch.equal(out.samples, x.samples[:, :, 3:11, 2:10])
    out = run("LatentCrop", samples=x, width=512, height=64, x=120, y=0)  # x clamped to 16 − 8 cells
    assert torch.equal(out.samples, x.samples[:, :, 0:8, 8:16])


def test_flip_and_rotate_move_cells_as_named():
    x = latent(1, 1, 2, 3)
    grid = x.samples[0, 0]
    assert torch.equal(run("LatentFlip", samples=x, flip_method="x-axis: vertically").samples[0, 0], grid.flip(0))
    assert torch.equal(run("LatentFlip", samples=x, flip_method="y-axis: horizontally").samples[0, 0], grid.flip(1))
    turned = run("LatentRotate", samples=x, rotation="90 degrees").samples[0, 0]
    assert turned.shape == (3, 2) and turned[0].tolist() == [3.0, 0.0]  # clockwise: the bottom-left comes to the top-left
    assert torch.equal(run("LatentRotate", samples=x, rotation="none").samples, x.samples)


def test_arithmetic_fits_the_second_latent_to_the_first():
    a = Latent(torch.full((2, 4, 8, 8), 3.0), noise_mask=torch.ones(1, 1, 8, 8))
    b = Latent(torch.full((1, 4, 4, 4), 1.0))
    added = run("LatentAdd", samples1=a, samples2=b)
    assert added.samples.shape == (2, 4, 8, 8) and added.samples.eq(4).all() and added.noise_mask is a.noise_mask
    assert run("LatentSubtract", samples1=a, samples2=b).samples.eq(2).all()
    assert run("LatentMultiply", samples=a, multiplier=-0.5).samples.eq(-1.5).all()
    assert torch.allclose(run("LatentBlend", samples1=a, samples2=b, blend_factor=0.25).samples, torch.tensor(1.5))


def test_interpolate_keeps_lengths_and_turns_directions():
    a = Latent(torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1))
    b = Latent(torch.tensor([0.0, 3.0]).reshape(1, 2, 1, 1))
    out = run("LatentInterpolate", samples1=a, samples2=b, ratio=0.5).samples.flatten()
    assert torch.allclose(out, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]) * 2.0)  # length (1 + 3) / 2
    assert torch.allclose(run("LatentInterpolate", samples1=a, samples2=b, ratio=1.0).samples, a.samples)


def _run_graph(tmp_path, nodes):
    env = SDEnvironment(tmp_path / "models", input_dir=tmp_path / "input", output_dir=tmp_path / "output")
    g = Graph(REGISTRY)
    for node_id, (node_type, values, links) in nodes.items():
        g.add_node(node_type, node_id, values)
        for name, (src, slot) in links.items():
            g.connect(src, slot, node_id, name)
    return Executor(REGISTRY, env=env).run(g)


def test_save_latent_writes_comfyuis_format_and_load_latent_reads_it_back(tmp_path):
    from safetensors import safe_open

    (tmp_path / "input").mkdir()
    result = _run_graph(tmp_path, {"1": ("EmptyLatentImage", {"width": 64, "height": 32, "batch_size": 2}, {}),
                                   "2": ("SaveLatent", {"filename_prefix": "latents/test"}, {"samples": ("1", 0)})})
    assert result.ok, (result.error, result.problems)
    path = tmp_path / "output" / "latents" / "test_00001_.latent"
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == {"latent_tensor", "latent_format_version_0"}
        assert f.get_tensor("latent_tensor").shape == (2, 4, 4, 8) and "prompt" in f.metadata()
    samples = torch.randn(1, 4, 3, 5)
    save_file({"latent_tensor": samples, "latent_format_version_0": torch.tensor([])}, tmp_path / "input" / "v1.latent")
    save_file({"latent_tensor": samples}, tmp_path / "input" / "v0.latent")  # ComfyUI's first, sampler-space format
    env = SDEnvironment(tmp_path / "models", input_dir=tmp_path / "input")
    assert env.files.names("input_latents") == ["v0.latent", "v1.latent"]
    result = _run_graph(tmp_path, {"1": ("LoadLatent", {"latent": "v1.latent"}, {}),
                                   "2": ("LoadLatent", {"latent": "v0.latent"}, {}),
                                   "3": ("LatentAdd", {}, {"samples1": ("1", 0), "samples2": ("2", 0)}),
                                   "4": ("SaveLatent", {"filename_prefix": "x"}, {"samples": ("3", 0)})})
    assert result.ok, (result.error, result.problems)
    assert torch.equal(result.outputs["1"][0].samples, samples)
    assert torch.allclose(result.outputs["2"][0].samples, samples / 0.18215)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("pickled.latent", b"\x80\x04\x95 not safetensors", "not a safetensors .latent file"),
    ("other.latent", None, "has no 'latent_tensor' tensor")])
def test_load_latent_refuses_files_it_cannot_read_safely(tmp_path, name, content, message):
    (tmp_path / "input").mkdir()
    if content is None:
        save_file({"samples": torch.zeros(1)}, tmp_path / "input" / name)
    else:
        (tmp_path / "input" / name).write_bytes(content)
    result = _run_graph(tmp_path, {"1": ("LoadLatent", {"latent": name}, {}),
                                   "2": ("SaveLatent", {"filename_prefix": "x"}, {"samples": ("1", 0)})})
    assert not result.ok and message in result.error.message and result.error.input == "latent"
