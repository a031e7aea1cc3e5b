"""Make the figures of docs/how-stable-diffusion-works.md: run every workflows/explain_*.json headless
on the bundled model and copy the images their SaveImage nodes write to docs/images/explain/, named
after each filename_prefix ("explain/why_step_0" → docs/images/explain/why_step_0.png).

    python tools/make_docs.py                 # all explain workflows (what `make docs` runs)
    python tools/make_docs.py workflows/explain_schedules.json --out /tmp/figures
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FIGURES = REPO / "docs" / "images" / "explain"


def figure_name(path: Path) -> str:
    """forward_noise_00001_.png → forward_noise.png (SaveImage's counter dropped)."""
    return re.sub(r"_\d{5}_$", "", path.stem) + path.suffix


def run_workflow(path: Path, output_dir: Path, device: str = "cpu") -> list[Path]:
    """Run one workflow headless; return the image files its output nodes wrote."""
    from nodegraph import REGISTRY, Executor, validate
    from nodegraph.workflow import load_workflow
    from nodes.core.env import SDEnvironment

    REGISTRY.discover("nodes")
    env = SDEnvironment(output_dir=output_dir, device=device, dtype="fp32")
    graph = load_workflow(path, REGISTRY)
    problems = [p for p in validate(graph, REGISTRY, env) if not p.warning]
    if problems:
        raise SystemExit(f"{path.name}: " + "; ".join(map(str, problems)))
    result = Executor(REGISTRY, env=env).run(graph)
    if not result.ok:
        raise SystemExit(f"{path.name}: {result.error}")
    return [Path(p) for ui in result.ui.values() for p in (ui or {}).get("images", [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflows", nargs="*", type=Path, help="default: workflows/explain_*.json")
    parser.add_argument("--out", type=Path, default=FIGURES, help=f"where the figures go (default {FIGURES})")
    args = parser.parse_args(argv)
    workflows = args.workflows or sorted((REPO / "workflows").glob("explain_*.json"))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdgraph-docs-") as tmp:
        for path in workflows:
            start = time.perf_counter()
            images = run_workflow(path, Path(tmp) / path.stem)
            for image in images:
                shutil.copyfile(image, args.out / figure_name(image))
            names = ", ".join(figure_name(i) for i in images) or "no images"
            print(f"{path.name}: {names} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
