"""The inpaint, outpaint and hires-fix examples in workflows/ run on the bundled model and do what
they say: the kept area stays, the masked area is redrawn from the new prompt, the sizes grow."""

from pathlib import Path

import pytest

from nodegraph import REGISTRY, Executor, validate
from nodegraph.workflow import load_workflow
from nodes.core.env import SDEnvironment

REPO = Path(__file__).resolve().parent.parent
REGISTRY.discover("nodes")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    executor = Executor(REGISTRY, env=SDEnvironment(output_dir=tmp_path_factory.mktemp("out"), device="cpu",
                                                    dtype="fp32"))

    def run(name: str):
        graph = load_workflow(REPO / "workflows" / name, REGISTRY)
        assert [str(p) for p in validate(graph, REGISTRY, executor.env)] == []
        result = executor.run(graph)
        assert result.ok, result.error
        return result.outputs["6"][0], result.outputs["22"][0]  # the first picture, the second pass's

    return run


def test_inpaint_keeps_the_top_left_and_draws_a_blue_square_bottom_right(run):
    first, out = run("inpaint.json")
    assert out.shape == first.shape == (1, 64, 64, 3)
    # Outside the grown mask only the VAE's round trip changes the picture (about 0.07 here)…
    assert (out[0, :24, :24] - first[0, :24, :24]).abs().mean() < 0.1
    corner = out[0, 36:60, 36:60]
    # …inside it the new prompt's blue square replaces the white background (about 0.27).
    assert (corner - first[0, 36:60, 36:60]).abs().mean() > 0.2
    assert corner[..., 2].mean() > corner[..., 0].mean() + 0.15


def test_outpaint_widens_the_picture_and_keeps_its_left_part(run):
    first, out = run("outpaint.json")
    assert out.shape == (1, 64, 96, 3)
    assert (out[0, :, :40] - first[0, :, :40]).abs().mean() < 0.06
    assert out[0, :, 68:].mean() > 0.7  # the grey padding was painted over (white background)


def test_hires_fix_upscales_by_one_and_a_half_and_keeps_the_picture(run):
    import torch.nn.functional as F

    first, out = run("hires_fix.json")
    assert out.shape == (1, 96, 96, 3)
    small = F.interpolate(out.movedim(-1, 1), size=(64, 64), mode="area").movedim(1, -1)
    assert (small - first).abs().mean() < 0.05
