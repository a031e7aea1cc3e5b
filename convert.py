"""`main.py convert IN [--to sdgraph|comfy-api|comfy-ui] [-o OUT]`: a workflow in any format sdgraph
reads (its own JSON, ComfyUI's UI or API JSON, or a PNG/WebP/JPEG from ComfyUI, sdgraph, A1111 or
Fooocus) written in sdgraph's format or one of ComfyUI's; to stdout without `-o`.

A user's file never silently changes format: writing over an existing file that is not sdgraph's
JSON needs an explicit `--to`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TARGETS = {"sdgraph": "native", "comfy-api": "comfy_api", "comfy-ui": "comfy_ui"}
NAMES = {"native": "sdgraph's JSON", "comfy_api": "a ComfyUI API-format workflow",
         "comfy_ui": "a ComfyUI workflow (UI format)", "image": "an image"}
EXIT_OK, EXIT_INVALID = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="sdgraph JSON, ComfyUI UI or API JSON, or an image with a workflow")
    parser.add_argument("--to", choices=list(TARGETS), help="the format to write (default: sdgraph)")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT", help="the file to write (default: stdout)")


def run_command(args: argparse.Namespace, env, registry) -> int:
    from nodegraph import WorkflowError
    from nodegraph.fileio import atomic_write
    from nodegraph.validate import check_unknown_types, run_checks
    from nodegraph.workflow import dumps, read_workflow

    try:
        graph, source = read_workflow(args.workflow, registry, strict=False,
                                      checkpoints=lambda: env.files.names("checkpoints"))
    except WorkflowError as e:
        where = f"{e.source}: " if e.source else ""
        for problem in e.problems:
            print(f"{where}{problem}", file=sys.stderr)
        return EXIT_INVALID
    target = TARGETS[args.to or "sdgraph"]
    if args.output is not None and args.to is None and args.output.exists():
        existing = file_format(args.output)
        if existing != "native":
            print(f"error: {args.output} is {NAMES.get(existing, 'not an sdgraph workflow')}; writing sdgraph's "
                  "format over it would change its format — pass --to comfy-ui (or comfy-api) to keep ComfyUI's "
                  "format, or --to sdgraph to replace it", file=sys.stderr)
            return EXIT_INVALID
    for warning in graph.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in run_checks(graph, registry, [check_unknown_types]):
        print(f"warning: {problem} (kept as placeholders)", file=sys.stderr)
    text = dumps(graph, target)
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write(args.output, text)
        print(f"{args.workflow} ({source.replace('_', ' ')}) → {args.output} ({args.to or 'sdgraph'})",
              file=sys.stderr)
    return EXIT_OK


def file_format(path: Path) -> str:
    """"native", "comfy_ui", "comfy_api", "image" or "unknown" for an existing file."""
    from nodegraph.images import image_kind
    from nodegraph.workflow import detect_format

    try:
        head = path.read_bytes()
    except OSError:
        return "unknown"
    if image_kind(head):
        return "image"
    try:
        return detect_format(json.loads(head.decode("utf-8-sig")))
    except (ValueError, RecursionError):
        return "unknown"
