"""`python main.py batch WORKFLOW TABLE [options]`: its options and the command itself.

cli.py builds the environment, loads the node packages and the workflow, applies --set, and hands
them here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="workflow JSON (sdgraph or ComfyUI API format) or a PNG")
    parser.add_argument("table", type=Path, help="CSV with a header row, or JSONL; one row per run. Columns: "
                        "NODE_ID.INPUT (or a bare input name when only one input has it), and id")
    parser.add_argument("--set", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                        help="override an input value for every row (repeatable)")
    parser.add_argument("--seeds", metavar="RANGE", help="run every row once per seed, e.g. 0-9 or 1,5,9")
    parser.add_argument("--name", metavar="TEMPLATE", help="output file names, from {row} {seed} {id} {key} "
                        "(default {row:05d}_{seed}, or {id} when the table has an id column)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run on Ray workers: local (start a one-machine "
                        "cluster), auto (the cluster this machine belongs to), HOST:PORT or ray://HOST:PORT")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="Ray workers (default: one per GPU, or one per --cpus-per-worker CPUs)")
    parser.add_argument("--gpus-per-worker", type=float, metavar="N", help="GPUs per Ray worker "
                        "(default 1 on a cluster with GPUs, else 0)")
    parser.add_argument("--cpus-per-worker", type=int, metavar="N",
                        help="CPUs per worker, also torch's thread count (default 1 on Ray; torch's own locally)")


def run_command(args, env, registry, graph) -> int:
    # imported here: cli builds this command's parser for every command, and the engine loads only for a batch
    from cli import node_packages
    from nodegraph.workflow import to_native

    from .driver import run_batch
    from .manifest import LockedError
    from .plan import make_jobs, parse_seeds
    from .ray_backend import RayUnavailable
    from .table import TableError, read_table

    where = args.table.name
    try:
        backend = _backend(args)
        seeds = parse_seeds(args.seeds) if args.seeds else None
    except ValueError as e:
        return _fail(str(e))
    try:
        table = read_table(args.table, graph, registry)
        jobs = make_jobs(graph, registry, env, table, seeds=seeds, name=args.name, where=where,
                         workflow=args.workflow.name)
    except TableError as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        print(f"{len(e.lines)} problem(s) found; nothing was run", file=sys.stderr)
        return EXIT_INVALID
    try:
        summary = run_batch(jobs, env=env, registry=registry, workflow=to_native(graph),
                            folder=env.paths.output, backend=backend, packages=node_packages(args.node_package), where=where)
    except TableError as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    except (LockedError, RayUnavailable) as e:
        return _fail(str(e))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_ERROR if summary.failed else EXIT_OK


def _backend(args):
    from .driver import Backend

    for flag, value, least in (("--workers", args.workers, 1), ("--cpus-per-worker", args.cpus_per_worker, 1),
                               ("--gpus-per-worker", args.gpus_per_worker, 0)):
        if value is not None and value < least:
            raise ValueError(f"{flag} {value:g}: must be {least} or more")
    if args.ray is None and (args.workers is not None or args.gpus_per_worker is not None):
        raise ValueError("--workers and --gpus-per-worker are for Ray workers: add --ray local (or a cluster address)")
    return Backend(args.ray, args.workers, args.gpus_per_worker, args.cpus_per_worker)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_INVALID
