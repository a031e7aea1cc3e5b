"""DESIGN.md §1: the engine and the node declarations import no torch, Qt, diffusers or transformers."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "PySide6", "diffusers", "transformers", "spandrel")


def test_nodegraph_and_nodes_import_nothing_heavy():
    code = ("import sys, nodegraph, nodes; from nodegraph import REGISTRY; REGISTRY.discover('nodes');"
            f"print([m for m in {HEAVY!r} if m in sys.modules]); print(len(REGISTRY.names()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    heavy, count = proc.stdout.splitlines()
    assert heavy == "[]"
    assert int(count) >= 17  # the SD nodes really were registered
