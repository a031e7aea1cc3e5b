"""A plain headless `main.py run` shows a learner what the editor would: every line a display node
shows (the token list, every noise level, not the first few) and where the preview images went.

Runs the default workflow with the bundled model (models/checkpoints/sdgraph-shapes.safetensors);
it fails, rather than skips, without it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "models" / "checkpoints" / "sdgraph-shapes.safetensors"
STEPS = 9  # more than the six lines a node card shows before it elides


def learner_workflow(tmp_path: Path) -> Path:
    """workflows/default.json with a ShowNoiseLevels (STEPS steps) and a PreviewImage."""
    data = json.loads((REPO / "workflows" / "default.json").read_text())
    nodes = data["nodes"]
    nodes["7"]["values"]["steps"] = 2  # sampling is not the point: keep it quick
    nodes["20"] = {"type": "ShowNoiseLevels", "links": {"model": ["1", 0]},
                   "values": {"steps": STEPS, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}}
    nodes["21"] = {"type": "PreviewImage", "links": {"images": ["8", 0]}, "values": {}}
    path = tmp_path / "learner.json"
    path.write_text(json.dumps(data))
    return path


def test_run_prints_every_noise_level_the_token_list_and_where_images_went(tmp_path):
    assert BUNDLED.is_file(), f"the bundled model {BUNDLED} is missing (tools/train_bundled_model.py makes it)"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "run", str(learner_workflow(tmp_path)),
                           "--models-dir", str(REPO / "models"), "--output-dir", str(tmp_path / "out"),
                           "--device", "cpu", "--dtype", "fp32"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout

    # every noise level, numbered 1..STEPS, each from a level down to the next, the last down to 0
    levels = re.findall(r"\| step +(\d+): sigma +([\d.]+) → +([\d.]+)", out)
    assert [int(n) for n, _a, _b in levels] == list(range(1, STEPS + 1)), out
    assert all(float(a) > float(b) for _n, a, b in levels)
    assert float(levels[-1][2]) == 0.0

    # the positive prompt's token list, word by word with ids, as CLIPTokenize shows it
    token_lines = [line for line in out.splitlines() if "<start>(" in line]
    assert any(re.search(r"\bred\(\d+\) circle\(\d+\)", line) for line in token_lines), out
    assert all("[chunk 1:" in line for line in token_lines)

    # where the preview went (a real PNG), and where SaveImage wrote its picture
    previews = re.findall(r"preview image: (\S+\.png)", out)
    assert len(previews) == 1 and Path(previews[0]).is_file() and Path(previews[0]).stat().st_size > 0
    saved = re.findall(r"wrote (\S+\.png)", proc.stderr)
    assert len(saved) == 1 and Path(saved[0]).parent == tmp_path / "out"
