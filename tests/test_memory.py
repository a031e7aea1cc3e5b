"""Memory stays flat over a session: the default workflow run again and again in one process, as the
editor runs it, switching checkpoints, must not grow resident memory (bench/memory.py is the long
version: 50 runs, 10 switches, growth in %)."""

import sys
from pathlib import Path

import pytest

from nodegraph.cache import LRUCache

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import memory  # noqa: E402  (bench/memory.py)

MB = 2**20
# After the warm-up (both checkpoints loaded and run once) the 4 measured runs may add at most this
# much RSS. Free heap pages are handed back before each reading (trim=True), so RSS follows live
# memory: without a leak the series moves by well under 1 MB. Leaking each loaded model (58 MB in
# fp32), or 1 MB per run (one of a 64x64 run's UNet activations is about that), exceeds it.
GROWTH_BOUND = 3 * MB


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = memory.models_folder(tmp_path_factory.mktemp("memory"))
    # A first session in this process pays the one-time costs (lazy imports, first calls of each
    # kernel) that a long-running editor pays once at start-up.
    memory.measure(folder, tmp_path_factory.mktemp("warm"), runs=2, switches=1, steps=3)
    return folder


@pytest.mark.parametrize("cache", ["editor", "keeps_nothing"])
def test_rss_stays_flat_over_runs_and_checkpoint_switches(models, tmp_path, cache):
    # "editor": the editor's default cache keeps both models, so this watches the per-run path
    # (sampling, decoding, saving). "keeps_nothing": every run loads its checkpoint again and
    # drops the previous one, so this watches loading and freeing models.
    session = memory.measure(models, tmp_path, runs=7, switches=3, steps=3, trim=True,
                             cache=LRUCache(max_entries=1) if cache == "keeps_nothing" else None)
    assert session.warmup_runs == 3  # a, a, b: both checkpoints ran before the measured runs
    assert session.checkpoints == ["shapes-a.safetensors"] * 2 + ["shapes-b.safetensors"] * 2 + \
        ["shapes-a.safetensors"] * 2 + ["shapes-b.safetensors"]
    growth = session.growth_bytes
    assert growth < GROWTH_BOUND, (f"RSS grew by {growth / MB:.1f} MB over {len(session.rss) - session.warmup_runs} "
                                   f"runs after the warm-up: {[r // MB for r in session.rss]} MB")


def test_checkpoint_schedule_spreads_the_switches():
    names = ["a", "b"]
    schedule = memory.checkpoint_schedule(50, 10, names)
    assert sum(x != y for x, y in zip(schedule, schedule[1:], strict=False)) == 10
    assert schedule[0] == "a" and len(schedule) == 50
    with pytest.raises(ValueError):
        memory.checkpoint_schedule(3, 3, names)
