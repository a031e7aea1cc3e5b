"""ControlNet nodes (ComfyUI's "conditioning/controlnet"): steer sampling with a hint image (edges,
depth, pose…) through a ControlNet attached to the conditioning."""

from __future__ import annotations

from nodegraph import Float, Link, Node, Output, register
from nodegraph import types as T

NET_IN = Link("control_net", T.CONTROL_NET, tooltip="the ControlNet (from ControlNetLoader)")
HINT_IN = Link("image", T.IMAGE, tooltip="the hint image (edges, depth, pose…) the ControlNet follows")
STRENGTH = Float("strength", 1.0, min=0.0, max=10.0, step=0.01, tooltip="how strongly the hint steers the image")


def with_control(conditionings, net, image, strength, start=0.0, end=1.0, to_uncond=False):
    """Each entry of each conditioning gets a ControlHint chained after the one it already has (the
    entries are copied). Entries with the same previous control share one hint, as in ComfyUI, so
    the positive and negative sides still run in one UNet batch."""
    from dataclasses import replace

    from nodes.models.controlnet import ControlHint

    hint = image.movedim(-1, 1)  # [B, 3, H, W]
    made: dict[int, ControlHint] = {}
    out = []
    for conditioning in conditionings:
        entries = []
        for entry in conditioning:
            previous = entry.extras.get("control")
            if id(previous) not in made:
                made[id(previous)] = ControlHint(net, hint, strength, start, end, previous, to_uncond)
            entries.append(replace(entry, extras={**entry.extras, "control": made[id(previous)]}))
        out.append(entries)
    return out


@register
class ControlNetApply(Node):
    """Attach a ControlNet and its hint to a conditioning (the old node: it also steers the
    negative side, as ComfyUI's does)."""

    category = "conditioning/controlnet"
    inputs = [Link("conditioning", T.CONDITIONING, tooltip="the prompt to steer"), NET_IN, HINT_IN, STRENGTH]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the prompt with the ControlNet attached")]

    def run(self, ctx, conditioning, control_net, image, strength):
        if strength == 0:
            return (conditioning,)
        return tuple(with_control([conditioning], control_net, image, strength, to_uncond=True))


@register
class ControlNetApplyAdvanced(Node):
    """Attach a ControlNet to both prompts, acting from start_percent to end_percent of sampling."""

    category = "conditioning/controlnet"
    inputs = [Link("positive", T.CONDITIONING, tooltip="what the image should show"),
              Link("negative", T.CONDITIONING, tooltip="what the image should not show"), NET_IN, HINT_IN, STRENGTH,
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001, tooltip="where in sampling it starts (0: first step)"),
              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001, tooltip="where in sampling it stops (1: last step)"),
              Link("vae", T.VAE, optional=True, tooltip="only for ControlNets that take latents (not SD 1.x/SDXL ones)")]
    outputs = [Output("positive", T.CONDITIONING, "the positive prompt with the ControlNet"),
               Output("negative", T.CONDITIONING, "the negative prompt with the ControlNet")]

    def run(self, ctx, positive, negative, control_net, image, strength, start_percent, end_percent, vae=None):
        if strength == 0:
            return (positive, negative)
        return tuple(with_control([positive, negative], control_net, image, strength, start_percent, end_percent))
