"""Toy arithmetic and text nodes for engine tests. Importing registers them with nodegraph.REGISTRY
(so the CLI can load them with SDGRAPH_NODE_PACKAGES=tests.toy_nodes); `make_registry()` gives a
private registry with the same nodes. `CALLS` records every run, to assert what re-ran."""

from __future__ import annotations

import random
import time

from nodegraph import (
    ALWAYS_CHANGED,
    Choice,
    Float,
    Int,
    Link,
    Node,
    NodeInputError,
    NodeOutput,
    Output,
    Registry,
    String,
)
from nodegraph import register as register_global
from nodegraph import types as T
from nodegraph.fileio import atomic_write

CALLS: list[str] = []


def _record(ctx) -> None:
    CALLS.append(ctx.node_id)


class Number(Node):
    """A constant number."""
    category = "values"
    inputs = [Float("value", 1.0, min=-1e6, max=1e6)]
    outputs = [Output("value", T.FLOAT)]

    def run(self, ctx, value):
        _record(ctx)
        return (value,)


class Add(Node):
    """a + b"""
    category = "math"
    inputs = [Float("a", 0.0), Float("b", 0.0)]
    outputs = [Output("sum", T.FLOAT)]

    def run(self, ctx, a, b):
        _record(ctx)
        return (a + b,)


class Mul(Node):
    """a × b"""
    category = "math"
    inputs = [Float("a", 1.0), Float("b", 1.0)]
    outputs = [Output("product", T.FLOAT)]

    def run(self, ctx, a, b):
        _record(ctx)
        return (a * b,)


class Steps(Node):
    """Counts to `steps`, reporting progress and sleeping `delay` seconds per step."""
    category = "sampling"
    inputs = [Float("x", 0.0), Int("steps", 3, min=1, max=1000), Float("delay", 0.0, min=0.0, max=10.0)]
    outputs = [Output("x", T.FLOAT)]

    def run(self, ctx, x, steps, delay):
        _record(ctx)
        for i in range(steps):
            time.sleep(delay)
            ctx.progress(i + 1, steps)
        return (x + steps,)


class Fail(Node):
    """Fails: with a user error when `how` is 'input', else with a plain exception."""
    category = "utils"
    inputs = [Float("x", 0.0), Choice("how", ["crash", "input"], "crash")]
    outputs = [Output("x", T.FLOAT)]

    def run(self, ctx, x, how):
        _record(ctx)
        if how == "input":
            raise NodeInputError("x", "must not be used here; pick another number")
        return (1 / 0,)


class Noise(Node):
    """A random number, different on every run."""
    category = "values"
    inputs = []
    outputs = [Output("value", T.FLOAT)]

    @classmethod
    def fingerprint(cls, values):
        return ALWAYS_CHANGED

    def run(self, ctx):
        _record(ctx)
        return (random.random(),)


class Text(Node):
    """A piece of text."""
    category = "text"
    inputs = [String("text", "hello", multiline=True)]
    outputs = [Output("text", T.STRING)]

    def run(self, ctx, text):
        _record(ctx)
        return (text,)


class MakeLatent(Node):
    """Gives a LATENT (a list), to test type checks."""
    category = "latent"
    inputs = [Int("size", 2, min=1, max=64)]
    outputs = [Output("latent", T.LATENT)]

    def run(self, ctx, size):
        _record(ctx)
        return ([0.0] * size,)


class Show(Node):
    """Output node: shows a value; with `path` set, also writes it to that file in the output dir."""
    category = "output"
    output_node = True
    inputs = [Link("value", T.ANY), String("path", "")]
    outputs = []

    def run(self, ctx, value, path):
        _record(ctx)
        text = value if isinstance(value, str) else repr(value)  # strings show as text, not repr
        ui = {"text": [text]}
        if path:
            target = ctx.paths.output / path
            atomic_write(target, text)
            ui["files"] = [str(target)]
        return NodeOutput((), ui)


NODES = [Number, Add, Mul, Steps, Fail, Noise, Text, MakeLatent, Show]

for _cls in NODES:
    register_global(_cls)


def make_registry() -> Registry:
    registry = Registry()
    for cls in NODES:
        registry.register(cls)
    return registry
