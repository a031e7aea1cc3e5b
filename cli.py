"""Headless commands (`run`, `batch`, `validate`, `nodes`) and the one place the environment is built.

`main.py` dispatches here. `make_env` and `node_packages` serve the CLI and the editor alike: the
environment (model folders, input/output folders, device, precision) is built once, here, and
handed to whoever runs nodes.

Exit codes: 0 ok, 1 error while running, 2 invalid workflow or arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line arguments; the message is shown as it is."""


def common_options() -> argparse.ArgumentParser:
    """The options that build the environment, shared by every command and the editor."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=Path, help="model folder (default: models/ in the repo)")
    common.add_argument("--extra-model-paths", type=Path, metavar="FILE",
                        help="ComfyUI extra_model_paths.yaml naming more model folders")
    common.add_argument("--input-dir", type=Path, help="folder LoadImage reads from (default: input/)")
    common.add_argument("--output-dir", type=Path, help="folder SaveImage writes to (default: output/)")
    common.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    common.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="precision (auto: fp16 on CUDA; bf16 on CPUs with native bf16, AVX512-BF16 or AMX; "
                        "fp32 elsewhere. fp32 reproduces ComfyUI's CPU images)")
    common.add_argument("--compile", action="store_true",
                        help="run the UNet and the VAE decoder torch.compile'd (inductor): the first image of each "
                        "size compiles (minutes on a CPU), later ones run faster (docs/performance.md)")
    common.add_argument("--node-package", action="append", default=[], metavar="MODULE",
                        help="import extra node types from this Python module (repeatable)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(prog="main.py", description="sdgraph: Stable Diffusion as a node graph.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="run a workflow headless")
    run.add_argument("workflow", type=Path, help="workflow JSON (sdgraph or ComfyUI API format) or a PNG")
    run.add_argument("--set", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                     help="override an input value, e.g. --set 3.seed=7 (repeatable)")
    run.add_argument("--json-events", action="store_true", help="print one JSON object per event on stdout")
    from batch.command import add_arguments as batch_arguments

    batch_arguments(sub.add_parser("batch", parents=[common], help="run a workflow once per row of a CSV or "
                                   "JSONL table (see docs/batch.md)"))
    val = sub.add_parser("validate", parents=[common], help="check a workflow and list every problem")
    val.add_argument("workflow", type=Path)
    from convert import add_arguments as convert_arguments

    convert_arguments(sub.add_parser("convert", parents=[common], help="convert a workflow between sdgraph's "
                                     "and ComfyUI's formats (from any of them, or an image that carries one)"))
    nodes = sub.add_parser("nodes", parents=[common], help="list the node types")
    nodes.add_argument("--json", action="store_true", help="print the node declarations as JSON")
    nodes.add_argument("--verbose", "-v", action="store_true", help="also print each input's and output's tooltip")
    return parser


def make_env(args: argparse.Namespace):
    """The environment every node runs in, from the common options."""
    from nodes.core.env import SDEnvironment

    env = SDEnvironment(device=args.device, dtype=args.dtype, compile="inductor" if args.compile else None)
    if args.models_dir:
        env.models_dir = args.models_dir
    env.set_paths(input_dir=args.input_dir, output_dir=args.output_dir)
    if args.extra_model_paths:
        try:
            env.add_extra_model_paths(args.extra_model_paths)
        except (OSError, ValueError) as e:
            raise UsageError(f"--extra-model-paths: cannot read {args.extra_model_paths}: {e}") from None
        except Exception as e:  # yaml errors
            raise UsageError(f"--extra-model-paths: {args.extra_model_paths} is not valid YAML: {e}") from None
    return env


def node_packages(extra: list[str]) -> list[str]:
    """The node packages to load: ours, --node-package ones, then SDGRAPH_NODE_PACKAGES."""
    return ["nodes", *extra, *filter(None, os.environ.get("SDGRAPH_NODE_PACKAGES", "").split(os.pathsep))]


def load_registry(extra: list[str]):
    from nodegraph import REGISTRY

    failed = REGISTRY.discover_all(node_packages(extra))
    if failed:
        raise UsageError("; ".join(failed))
    return REGISTRY


def parse_override(text: str, graph, registry) -> tuple[str, str, Any]:
    """`3.seed=7` → ("3", "seed", 7), typed by the input's declaration."""
    target, sep, raw = text.partition("=")
    node_id, dot, name = target.rpartition(".")
    if not sep or not dot or not node_id or not name:
        raise UsageError(f"--set {text!r}: expected NODE_ID.INPUT=VALUE, e.g. --set 3.seed=7")
    try:
        spec = value_input(graph, registry, node_id, name)
    except UsageError as e:
        raise UsageError(f"--set {text!r}: {e}") from None
    try:
        value = parse_value(spec, raw)
    except ValueError:
        raise UsageError(f"--set {text!r}: {raw!r} is not a valid {spec.type.name} for node {node_id} "
                         f"({graph.nodes[node_id].type}) input {name!r}") from None
    return node_id, name, value


def value_input(graph, registry, node_id: str, name: str):
    """The declaration of node `node_id`'s value input `name` (for --set and batch table columns)."""
    if node_id not in graph.nodes:
        raise UsageError(f"there is no node {node_id} (nodes: {', '.join(graph.nodes)})")
    node = graph.nodes[node_id]
    cls = registry.get(node.type)
    spec = cls.input(name) if cls else None
    if spec is None or not spec.type.widget:
        valid = ", ".join(i.name for i in cls.inputs if i.type.widget) if cls else ""
        raise UsageError(f"node {node_id} ({node.type}) has no value input {name!r} "
                         f"(value inputs: {valid or 'none'})")
    return spec


def parse_value(spec, raw: str) -> Any:
    """Text typed as the input `spec` declares (--set values and batch table cells); ValueError if
    it is not one."""
    kind = spec.type.name
    if kind == "INT":
        value: Any = _parse_int(raw)
    elif kind == "FLOAT":
        value = float(raw)
    elif kind == "BOOLEAN":
        lowered = raw.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(raw)
        value = lowered in ("true", "1", "yes", "on")
    else:
        value = raw
    ok, value = spec.coerce(value)
    if not ok:  # inf and nan parse as floats but are no value
        raise ValueError(raw)
    return value


def _parse_int(raw: str) -> int:
    try:
        return int(raw, 0)
    except ValueError:
        number = float(raw)  # "20.0" and "1e3" are fine; "2.5" is not an integer
        if not number.is_integer():
            raise
        return int(number)


class ProgressPrinter:
    """Turns executor events into a readable log on stderr: one line per node, step bars; what a
    node shows (its text, preview images, a trace) goes to stdout, under that node's line."""

    def __init__(self, stream=sys.stderr, out=None):
        self.stream = stream
        self.out = out  # where what display nodes show goes (None: stdout, as it is when the event comes)
        self.tty = stream.isatty()
        self.total = 0
        self.index = 0
        self._last_bar = ""

    def __call__(self, event) -> None:
        from nodegraph import events as ev

        match event:
            case ev.GraphStarted(to_run=to_run, cached=cached):
                self.total = len(to_run)
                self._line(f"running {self.total} node(s)" + (f", {len(cached)} cached" if cached else ""))
            case ev.NodeStarted():
                self.index += 1
                self._line(f"[{self.index}/{self.total}] {event.node_type} (node {event.node_id}) — {event.reason}")
            case ev.Progress():
                self._bar(event.step, event.total)
            case ev.NodeFinished():
                self._end_bar()
                for path in event.ui.get("files", []):
                    self._line(f"    wrote {path}")
                self._show(event.ui)
                self._line(f"    done in {event.seconds:.2f}s")
            case ev.NodeCached():
                self._show(event.ui)
            case ev.NodeError():
                self._end_bar()
                self._line(f"error: {event.message}")
            case ev.RunInterrupted():
                self._end_bar()
                self._line("interrupted")
            case ev.GraphFinished():
                self._line(f"{event.status}: ran {event.ran}, cached {event.cached}, {event.seconds:.2f}s")

    def _show(self, ui: dict) -> None:
        """On stdout, what a node shows in the editor: every line of its text (a token list, the
        noise levels), where its preview images went, and what a trace recorded."""
        lines = [f"    | {part}" for text in ui.get("text", []) for part in str(text).split("\n")]
        saved = {str(p) for p in ui.get("files", [])}
        for image in ui.get("images", []):
            path = (image.get("path") or image.get("filename")) if isinstance(image, dict) else image
            if path and str(path) not in saved:
                lines.append(f"    preview image: {path}")
        for view in ui.get("trace", []) if isinstance(ui.get("trace"), list) else []:
            if isinstance(view, dict):
                first = next(iter((view.get("tiles") or {}).values()), None)
                where = f"; step pictures in {Path(first[0]).parent}" if first else ""
                lines.append(f"    trace: {len(view.get('steps') or [])} steps{where}"
                             + (f"; attention maps {view['attention']}" if view.get("attention") else ""))
        if lines:
            self._end_bar()
            self.stream.flush()
            out = self.out or sys.stdout
            out.write("\n".join(lines) + "\n")
            out.flush()

    def _bar(self, step: int, total: int) -> None:
        width = 30
        filled = int(width * step / max(total, 1))
        bar = f"    [{'#' * filled}{'.' * (width - filled)}] {step}/{total}"
        if self.tty:
            self.stream.write("\r" + bar)
            self.stream.flush()
            self._last_bar = bar
        elif step == total or total <= 10 or step % max(1, total // 10) == 0:
            self._line(bar)

    def _end_bar(self) -> None:
        if self._last_bar:
            self.stream.write("\n")
            self._last_bar = ""

    def _line(self, text: str) -> None:
        self._end_bar()
        self.stream.write(text + "\n")
        self.stream.flush()


class _Invalid(Exception):
    """The workflow could not be read; its problems were printed."""


def _open(args):
    """(env, registry, graph) for a command that takes a workflow file."""
    from nodegraph import WorkflowError
    from nodegraph.workflow import load_workflow

    env = make_env(args)
    registry = load_registry(args.node_package)
    try:
        graph = load_workflow(args.workflow, registry, strict=False,
                              checkpoints=lambda: env.files.names("checkpoints"))  # to match an A1111 model name
    except WorkflowError as e:
        where = f"{e.source}: " if e.source else ""
        # with --json-events, stdout carries only events: problems go to stderr
        stream = sys.stderr if getattr(args, "json_events", False) else sys.stdout
        for problem in e.problems:
            print(f"{where}{problem}", file=stream)
        raise _Invalid from None
    for warning in graph.warnings:  # what reading it changed or left out (ComfyUI files)
        print(f"warning: {warning}", file=sys.stderr)
    return env, registry, graph


def cmd_validate(args) -> int:
    from nodegraph import validate

    env, registry, graph = _open(args)
    problems = validate(graph, registry, env)
    for p in problems:
        print(f"warning: {p}" if p.warning else p)
    errors = [p for p in problems if not p.warning]
    if errors:
        print(f"{args.workflow}: {len(errors)} problem(s)", file=sys.stderr)
        return EXIT_INVALID
    warned = f", {len(problems)} warning(s) in nodes no output needs" if problems else ""
    print(f"{args.workflow}: ok ({len(graph)} nodes{warned})")
    return EXIT_OK


def cmd_run(args) -> int:
    from nodegraph import CancelToken, Executor, validate

    env, registry, graph = _open(args)
    for text in args.set:
        node_id, name, value = parse_override(text, graph, registry)
        graph.nodes[node_id].values[name] = value
    problems = validate(graph, registry, env)
    for p in problems:  # a problem in a node no output needs is a warning: that node does not run
        print(f"warning: {p}" if p.warning else p, file=sys.stderr if args.json_events or p.warning else sys.stdout)
    if any(not p.warning for p in problems):
        return EXIT_INVALID

    executor = Executor(registry, env=env)
    if args.json_events:
        executor.add_listener(lambda e: print(json.dumps(e.to_json()), flush=True))
    else:
        executor.add_listener(ProgressPrinter())
    token = CancelToken()

    def on_sigint(signum, frame):
        if token.cancelled:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        token.cancel()
        print("\ncancelling at the next step… (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = executor.run(graph, cancel=token, check=False)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.status == "interrupted":
        return EXIT_INTERRUPTED
    if result.status != "ok":
        if result.error is not None and os.environ.get("SDGRAPH_TRACEBACK"):
            print(result.error.traceback, file=sys.stderr)
        elif result.error is not None:
            print("(for the Python traceback, run again with SDGRAPH_TRACEBACK=1)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_batch(args) -> int:
    from batch.command import run_command

    env, registry, graph = _open(args)
    for text in args.set:
        node_id, name, value = parse_override(text, graph, registry)
        graph.set_value(node_id, name, value)
    return run_command(args, env, registry, graph)


def cmd_convert(args) -> int:
    from convert import run_command

    return run_command(args, make_env(args), load_registry(args.node_package))


def cmd_nodes(args) -> int:
    registry = load_registry(args.node_package)
    classes = registry.classes()
    if args.json:
        print(json.dumps([cls.describe() for cls in classes], indent=2, default=str))
        return EXIT_OK
    by_category: dict[str, list] = {}
    for cls in classes:
        by_category.setdefault(cls.category, []).append(cls)
    for category in sorted(by_category):
        print(f"{category}/")
        for cls in by_category[category]:
            ins = ", ".join(_describe_input(i) for i in cls.inputs)
            outs = ", ".join(f"{o.name}:{o.type.name}" for o in cls.outputs) or "-"
            print(f"  {cls.type_name}({ins}) -> {outs}")
            if cls.description:
                print(f"      {cls.description.splitlines()[0]}")
            if args.verbose:
                for item in [*cls.inputs, *cls.outputs]:
                    if item.tooltip:
                        print(f"        {item.name}: {item.tooltip}")
    print(f"{len(classes)} node types" + ("" if args.verbose else " (--verbose shows what each input does)"))
    return EXIT_OK


def _describe_input(spec) -> str:
    text = f"{spec.name}:{spec.type.name}"
    if spec.is_widget and spec.has_default and spec.files is None:
        text += f"={spec.default!r}"
    if spec.files is not None:
        text += f" (a file in {spec.files})"
    if spec.multiple_of:
        text += f" (multiple of {spec.multiple_of})"
    if spec.control_after_generate:
        text += " (changes after each run)"
    return text


def open_editor(argv: list[str]) -> int:
    """`python main.py [WORKFLOW] [options]`: build the environment, then hand it to the editor."""
    parser = argparse.ArgumentParser(prog="main.py", parents=[common_options()],
                                     description="sdgraph editor (run, validate and nodes are commands: main.py -h)")
    parser.add_argument("workflow", nargs="?", help="workflow JSON, ComfyUI API JSON, or a PNG made by sdgraph")
    try:
        args = parser.parse_args(argv)
        env = make_env(args)
    except SystemExit as e:
        return int(e.code or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    from ui.app import main as editor_main

    return editor_main(args.workflow, env, node_packages(args.node_package),
                       models_dir_given=args.models_dir is not None)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush meets no closed pipe either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad arguments, 0 on --help
        return int(e.code or 0)
    try:
        handler = {"run": cmd_run, "batch": cmd_batch, "validate": cmd_validate,
                   "nodes": cmd_nodes, "convert": cmd_convert}[args.command]
        code = handler(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except _Invalid:
        return EXIT_INVALID
    except KeyboardInterrupt:  # Ctrl-C before the run started (loading nodes, validating)
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `main.py nodes | head`: the reader has gone; that is not an error
        _silence_stdout()
        return EXIT_OK
    if os.environ.get("SDGRAPH_TIMING"):
        print(f"[{time.perf_counter() - started:.2f}s]", file=sys.stderr)
    return code
