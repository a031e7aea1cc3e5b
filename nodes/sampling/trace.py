"""Recording a sampling run step by step, for the "explain" nodes (KSamplerTrace and its viewers).

    recorder = TraceRecorder(record_attention=True)
    with recorder.attention_on(model.unet):
        samples = ksampler.sample(model, positive, negative, latent, ..., observer=recorder)
    trace = recorder.trace          # a Trace: one TraceStep per sampler step

The recorder only watches. The driver (ksampler.run_sampling) hands it the denoiser, the step noise
and each step's (x, x̂₀); the guided denoiser (guidance.GuidedDenoiser, `observer`) tells it about
every UNet call and every CFG combination; for attention maps, wrapper processors on the UNet's
cross-attention (attn2) modules compute softmax(QKᵀ) on the side and then call the processor that
was there. Nothing it does feeds back into the run: the latent is bit-identical with and without
recording (tests/test_trace.py checks it with torch.equal).

What a step holds (first image of the batch only, on the CPU in `dtype`, float16 by default):

    x         x_t, the latent the step starts from (sampler space: x₀ + σ·ε)
    denoised  x̂₀, the guided prediction of the clean latent the sampler used
    calls     every denoiser call of the step, in order, each with its σ, input x, guided x̂₀,
              the cond / uncond x̂₀ and the model's own outputs (ε̂ or v̂) for cond and uncond;
              calls[0] is the call at σ_from; Heun-, DPM2- and DPM++(2S)-style methods add a second
    update    x_{i+1} − x_i, what the step changed (the last step's x_{i+1} is the returned latent)
    noise     the fresh noise an ancestral / SDE sampler added (None where the sampler adds none or
              where it is not separable from the deterministic part, see NOISE_SCALES)
    attention {(h, w): [tokens, h, w]} per UNet resolution: the cond pass's cross-attention
              probabilities averaged over heads and over the layers of that resolution, for
              every context position (start token and padding included: each pixel sums to 1)

A 30-step 512² SD 1.5 trace is about 8 MB without attention and about 33 MB with it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .guidance import COND, UNCOND

# -- what is recorded -----------------------------------------------------------------------------


@dataclass
class ModelCall:
    """One evaluation of the guided denoiser D(x, σ)."""

    sigma: float
    x: torch.Tensor  # [C, h, w] the input it saw (sampler space)
    denoised: torch.Tensor  # [C, h, w] the guided x̂₀ it returned
    cond_x0: torch.Tensor | None = None  # [C, h, w] the positive prompt's x̂₀
    uncond_x0: torch.Tensor | None = None  # None where the uncond pass was skipped (cfg 1)
    pred_cond: torch.Tensor | None = None  # the UNet's raw output for the positive prompt (ε̂, or v̂)
    pred_uncond: torch.Tensor | None = None  # … for the negative one (None: skipped, or areas/masks)
    attention: dict[tuple[int, int], torch.Tensor] | None = None  # (h, w) -> [tokens, h, w]


@dataclass
class TraceStep:
    index: int
    sigma_from: float
    sigma_to: float
    t: float  # the training timestep the model was told for sigma_from
    x: torch.Tensor  # [C, h, w]
    denoised: torch.Tensor  # [C, h, w]
    calls: list[ModelCall] = field(default_factory=list)
    update: torch.Tensor | None = None  # [C, h, w]
    noise: torch.Tensor | None = None  # [C, h, w]

    @property
    def main(self) -> ModelCall | None:
        """The denoiser call at σ_from, whose x̂₀ the step reports."""
        return self.calls[0] if self.calls else None

    @property
    def eps(self) -> torch.Tensor:
        """The guided noise prediction ε̂ = (x_t − x̂₀)/σ (float32), for every prediction type."""
        return (self.x.float() - self.denoised.float()) / self.sigma_from

    @property
    def attention(self) -> dict[tuple[int, int], torch.Tensor] | None:
        return self.main.attention if self.main is not None else None


@dataclass
class Trace:
    """A recorded sampling run (the TRACE socket's value)."""

    steps: list[TraceStep]
    sigmas: list[float]  # the schedule the run stepped through
    final: torch.Tensor | None  # [C, h, w] the latent the sampler returned (sampler space)
    prediction_type: str = "epsilon"
    cfg: float | None = None
    sampler: str = ""
    scheduler: str = ""
    latent_hw: tuple[int, int] = (0, 0)
    latent_format: Any = None  # nodes.core.values.LatentFormat, for previews and the final latent
    words: list[str] | None = None  # the positive prompt's words per context position, when known
    attention_sum_error: float | None = None  # max |Σ_tokens p − 1| over every captured pixel (float32)
    schedules: dict[str, list[float]] = field(default_factory=dict)  # every scheduler's sigmas (the node fills it)

    def cache_nbytes(self) -> int:
        seen: dict[int, int] = {}  # a step shares its x and x̂₀ with its own call

        def add(t: torch.Tensor | None) -> None:
            if t is not None:
                seen[id(t)] = t.numel() * t.element_size()

        add(self.final)
        for step in self.steps:
            for t in (step.x, step.denoised, step.update, step.noise):
                add(t)
            for call in step.calls:
                for t in (call.x, call.denoised, call.cond_x0, call.uncond_x0, call.pred_cond, call.pred_uncond,
                          *(call.attention or {}).values()):
                    add(t)
        return sum(seen.values())

    @property
    def has_attention(self) -> bool:
        return any(step.attention for step in self.steps)


# -- the fresh noise of stochastic samplers ---------------------------------------------------------


def _ancestral_scale(s: float, s_next: float, options: dict[str, Any]) -> float:
    eta, s_noise = float(options.get("eta", 1.0)), float(options.get("s_noise", 1.0))
    if not eta or s_next == 0:
        return 0.0
    up = min(s_next, eta * (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5)
    return s_noise * up if (s_next**2 - up**2) > 0 else 0.0  # σ_down 0: the step jumps to x̂₀, no noise


def _sde_scale(s: float, s_next: float, options: dict[str, Any]) -> float:
    eta, s_noise = float(options.get("eta", 1.0)), float(options.get("s_noise", 1.0))
    if s_next == 0 or eta <= 0 or s_noise <= 0:
        return 0.0
    h = math.log(s) - math.log(s_next)
    return s_next * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise


# Samplers that end a step with x += c·n, n the step's last unit-noise draw (σ_i → σ_{i+1}): the
# added noise is c·n. Others either add none or mix their draws into a second model call.
NOISE_SCALES = {
    **dict.fromkeys(("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp"),
                    _ancestral_scale),
    **dict.fromkeys(("dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
                     "dpmpp_3m_sde", "dpmpp_3m_sde_gpu"), _sde_scale),
    "lcm": lambda s, s_next, options: s_next,
}


class _RecordingNoise:
    """The sampler's step-noise source, passed through; each draw is kept until its step is filed."""

    def __init__(self, inner, recorder: TraceRecorder):
        self.inner, self.recorder = inner, recorder

    def __call__(self, sigma=None, sigma_next=None):
        n = self.inner(sigma, sigma_next)
        self.recorder._noise_draws.append((sigma, sigma_next, n))
        return n

    def __getattr__(self, name):
        return getattr(self.inner, name)


# -- the recorder ---------------------------------------------------------------------------------


class TraceRecorder:
    """Watches one sampling run (ksampler.run_sampling's `observer`) and builds a Trace."""

    def __init__(self, *, record_attention: bool = False, dtype: torch.dtype = torch.float16):
        self.record_attention = record_attention
        self.dtype = dtype
        self.trace: Trace | None = None
        self._steps: list[TraceStep] = []
        self._pending: list[ModelCall] = []  # denoiser calls not yet filed under a step
        self._noise_draws: list[tuple[Any, Any, torch.Tensor]] = []
        self._prev_x: torch.Tensor | None = None  # [B, C, h, w] float x of the last step, full precision
        self._raw: dict[int, list[torch.Tensor | None]] = {}  # side -> raw UNet outputs this denoiser call
        self._attn_row: int | None = None  # which batch row of the current UNet call is the positive prompt
        self._attn_tokens = 0
        self._attn_acc: dict[int, list] = {}  # query length -> [sum of [q, K] maps, layers]
        self._call_attention: dict[int, list] | None = None
        self._latent_hw: tuple[int, int] = (0, 0)
        self._sum_error = 0.0
        self._sampler = ""
        self._options: dict[str, Any] = {}
        self._ms: Any = None
        self._sigmas: list[float] = []

    # -- copies ------------------------------------------------------------------------------------
    def _keep(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """The first image of a batch as a compact CPU copy."""
        if t is None:
            return None
        return t[0].detach().to("cpu", self.dtype, copy=True)

    # -- driver hooks (ksampler.run_sampling) ------------------------------------------------------
    def begin(self, denoiser, noise_source, sigmas: torch.Tensor, model_sampling, sampler) -> Any:
        """Attach to the guided denoiser inside `denoiser`; return the step-noise source to use."""
        guided = getattr(denoiser, "inner", denoiser)  # a noise mask wraps the guided denoiser
        guided.observer = self
        self._ms = model_sampling
        self._sampler, self._options = sampler.name, dict(sampler.options)
        self._sigmas = [float(s) for s in sigmas]
        return None if noise_source is None else _RecordingNoise(noise_source, self)

    def step(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        """Sampler step i starts from x with prediction x̂₀ (the driver's step callback)."""
        # 1. The calls before this step's own one finish the previous step (Heun's second call…).
        calls, self._pending = self._pending, []
        own = calls.pop() if calls else None
        if self._steps:
            self._steps[-1].calls.extend(calls)
        self._close_step(x)
        # 2. This step, with the call that predicted its x̂₀.
        s_from = self._sigmas[i] if i < len(self._sigmas) else float("nan")
        s_to = self._sigmas[i + 1] if i + 1 < len(self._sigmas) else 0.0
        t = float(self._ms.timestep(torch.tensor(s_from))) if self._ms is not None else float("nan")
        x_keep = own.x if own is not None and torch.equal(own.x, self._keep(x)) else self._keep(x)
        d_keep = own.denoised if own is not None and torch.equal(own.denoised, self._keep(denoised)) \
            else self._keep(denoised)
        self._steps.append(TraceStep(i, s_from, s_to, t, x_keep, d_keep, calls=[own] if own is not None else []))
        self._prev_x = x.detach().clone()

    def end(self, x: torch.Tensor) -> None:
        """The sampler returned x: the last step's update, and the Trace."""
        if self._steps:
            self._steps[-1].calls.extend(self._pending)
        self._pending = []
        self._close_step(x)
        for step in self._steps:  # only the step's own call keeps its maps (memory)
            for call in step.calls[1:]:
                call.attention = None
        self.trace = Trace(
            steps=self._steps, sigmas=self._sigmas, final=self._keep(x),
            prediction_type=getattr(self._ms, "prediction_type", "epsilon"), sampler=self._sampler,
            latent_hw=tuple(x.shape[-2:]),
            attention_sum_error=self._sum_error if self.record_attention else None)

    def _close_step(self, x_next: torch.Tensor) -> None:
        """File the update and fresh noise of the step that led to x_next."""
        draws, self._noise_draws = self._noise_draws, []
        if not self._steps or self._prev_x is None:
            return
        step = self._steps[-1]
        step.update = self._keep(x_next.float() - self._prev_x.float())
        scale = NOISE_SCALES.get(self._sampler)
        if scale is not None and draws:
            # 3. The step's last draw between its own sigmas, times what the sampler scales it by.
            s, s_next = step.sigma_from, step.sigma_to
            match = [n for a, b, n in draws if a is not None and math.isclose(float(a), s, rel_tol=1e-6)
                     and math.isclose(float(b), s_next, rel_tol=1e-6, abs_tol=1e-12)]
            if match:
                step.noise = self._keep(match[-1] * scale(s, s_next, self._options))

    # -- denoiser hooks (guidance.GuidedDenoiser) --------------------------------------------------
    def unet_call_starting(self, chunks: Sequence[Any], b: int) -> None:
        """Which rows of this UNet call are the positive prompt's (its attention is the one to keep)."""
        self._attn_row, self._attn_acc = None, {}
        if not self.record_attention:
            return
        for j, chunk in enumerate(chunks):
            if chunk.side == COND and chunk.cond.area is None:
                self._attn_row = j * b
                self._attn_tokens = int(chunk.cond.entry.cond.shape[1])
                self._latent_hw = tuple(chunk.x.shape[-2:])
                return

    def unet_call_done(self, chunks: Sequence[Any], out: torch.Tensor) -> None:
        b = out.shape[0] // len(chunks)
        for j, chunk in enumerate(chunks):
            whole = chunk.cond.area is None and chunk.cond.mask is None
            self._raw.setdefault(chunk.side, []).append(out[j * b:(j + 1) * b] if whole else None)
        if self._attn_row is not None and self._attn_acc:
            self._call_attention = self._attn_acc
        self._attn_row, self._attn_acc = None, {}

    def guided(self, x: torch.Tensor, sigma: torch.Tensor, cond_x0: torch.Tensor, uncond_x0: torch.Tensor | None,
               result: torch.Tensor) -> None:
        """One denoiser call finished: D(x, σ) = result from cond_x0 and uncond_x0."""
        raw, self._raw = self._raw, {}

        def single(side: int) -> torch.Tensor | None:
            outs = raw.get(side) or []
            return outs[0] if len(outs) == 1 else None  # one whole-image chunk: its output is the side's

        attention, self._call_attention = self._call_attention, None
        self._pending.append(ModelCall(
            sigma=float(sigma.reshape(-1)[0]), x=self._keep(x), denoised=self._keep(result),
            cond_x0=self._keep(cond_x0), uncond_x0=self._keep(uncond_x0),
            pred_cond=self._keep(single(COND)),
            pred_uncond=self._keep(single(UNCOND)) if uncond_x0 is not None else None,
            attention=self._finish_attention(attention) if attention else None))

    # -- cross-attention capture -------------------------------------------------------------------
    @contextlib.contextmanager
    def attention_on(self, unet: Any) -> Iterator[None]:
        """While inside, every cross-attention (attn2) module of the diffusers UNet runs through a
        recording wrapper around the processor it had; the processors are restored afterwards."""
        if not self.record_attention or unet is None:
            yield
            return
        modules = [(name, m) for name, m in unet.named_modules()
                   if name.endswith("attn2") and hasattr(m, "set_processor") and getattr(m, "is_cross_attention", True)]
        originals = [(m, m.processor) for _, m in modules]
        try:
            for _, m in modules:
                m.set_processor(_AttentionRecorder(m.processor, self))
            yield
        finally:
            for m, processor in originals:
                m.set_processor(processor)

    def _capture(self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor) -> None:
        """softmax(QKᵀ/√d) of the positive prompt's first image, averaged over heads: [q, K]."""
        row = self._attn_row
        hs = hidden_states[row:row + 1]
        if hs.ndim == 4:  # [1, C, h, w] -> [1, h·w, C]
            hs = hs.flatten(2).transpose(1, 2)
        ctx = context[row:row + 1]
        if getattr(attn, "norm_cross", None) is not None:
            ctx = attn.norm_encoder_hidden_states(ctx)
        q, k = attn.to_q(hs).float(), attn.to_k(ctx).float()  # [1, q, D], [1, K, D]
        heads = attn.heads
        d = q.shape[-1] // heads
        q = q.view(1, -1, heads, d).transpose(1, 2)  # [1, heads, q, d]
        k = k.view(1, -1, heads, d).transpose(1, 2)  # [1, heads, K, d]
        probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(dim=-1).mean(dim=1)[0]  # [q, K]
        n = self._attn_tokens
        if 0 < n < probs.shape[-1] and probs.shape[-1] % n == 0:
            # The context was repeated to a common length with the uncond prompt (guidance._context):
            # each copy of a token got a share of its attention.
            probs = probs.view(probs.shape[0], -1, n).sum(dim=1)
        self._sum_error = max(self._sum_error, float((probs.sum(dim=-1) - 1).abs().max()))
        acc = self._attn_acc.setdefault(probs.shape[0], [0, 0])
        acc[0] = acc[0] + probs
        acc[1] += 1

    def _finish_attention(self, acc: dict[int, list]) -> dict[tuple[int, int], torch.Tensor]:
        """Per resolution: the layers' mean [K, h, w], stored compactly."""
        h_lat, w_lat = self._latent_hw
        out = {}
        for q_len, (total, layers) in acc.items():
            hw = _grid_for(q_len, h_lat, w_lat)
            if hw is None:
                continue
            maps = (total / layers).T.reshape(-1, *hw)  # [K, h, w]
            out[hw] = maps.to("cpu", self.dtype)
        return out


def _grid_for(q_len: int, h: int, w: int) -> tuple[int, int] | None:
    """The (h, w) of a UNet level with q_len positions for an h×w latent (each level halves, rounding up)."""
    for _ in range(8):
        if h * w == q_len:
            return h, w
        h, w = (h + 1) // 2, (w + 1) // 2
    return None


class _AttentionRecorder:
    """An attention processor that records the cross-attention probabilities of the positive
    prompt, then runs the processor it wraps (whose output is the layer's: nothing changes)."""

    def __init__(self, inner: Any, recorder: TraceRecorder):
        self.inner, self.recorder = inner, recorder

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        rec = self.recorder
        if rec._attn_row is not None and encoder_hidden_states is not None:
            rec._capture(attn, hidden_states, encoder_hidden_states)
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                          attention_mask=attention_mask, **kwargs)


# -- reading a trace --------------------------------------------------------------------------------


# Maps coarser than this (on their shorter side) are left out of the combination by default. A map's
# cell is as fine as it can place a word: on the bundled 64-px model a 4×4 map's cell is 16 px, a
# quarter of the picture, coarser than the 3×3 grid its prompts place shapes on, and averaging it in
# spreads a small shape's word over its neighbours (the star's word: 0.45 of its mass in the star at
# 8×8 alone, 0.35 with 4×4 averaged in; tools/measure_attention.py). On SD 1.5 at 512² every level
# (64…8) still counts.
MIN_MAP_SIDE = 8

# The summed map ("total", step 0 of CrossAttentionMaps) adds up the steps from σ ≤ DECIDED_SIGMA on.
# The latent has unit variance (the VAE's scale factor), so from σ = 1 on the signal outweighs the
# noise (SNR = 1/σ² ≥ 1): x_t shows the picture and the layout is settled. Earlier maps are spread over
# the whole latent, the words' places not yet decided: summing them in halves how much of a shape
# word's mass lies in its shape (docs/bundled-model.md, "Cross-attention localisation").
DECIDED_SIGMA = 1.0


def attention_resolutions(trace: Trace) -> list[tuple[int, int]]:
    """The resolutions combined_attention averages by default: every one at least MIN_MAP_SIDE on
    its shorter side, or the finest one where none is."""
    levels = sorted({hw for s in trace.steps for hw in (s.attention or {})}, reverse=True)
    kept = [hw for hw in levels if min(hw) >= MIN_MAP_SIDE]
    return kept or levels[:1]


def combined_attention(trace: Trace, size: tuple[int, int] | None = None,
                       resolutions: Sequence[tuple[int, int]] | None = None, mode: str = "nearest"
                       ) -> torch.Tensor | None:
    """[steps, K, H, W] float32: each step's per-resolution maps upsampled to `size` (default: the
    latent's) and averaged over the resolutions (those named, else attention_resolutions). Nearest
    upsampling by default: a map cell's value covers the cell's pixels and no more (bilinear would
    spread it into the neighbouring cells). Each pixel stays a distribution over the K context
    positions. None when the trace has no attention."""
    if not trace.has_attention:
        return None
    size = tuple(size or trace.latent_hw)
    resolutions = attention_resolutions(trace) if resolutions is None else list(resolutions)
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = []
    k_max = max(m.shape[0] for s in trace.steps for m in (s.attention or {}).values())
    for step in trace.steps:
        maps = [m for hw, m in (step.attention or {}).items() if hw in resolutions]
        if not maps:
            out.append(torch.zeros(k_max, *size))
            continue
        ups = [torch.nn.functional.interpolate(m.float()[None], size=size, mode=mode, **kw)[0]
               for m in maps]  # each [K, H, W]
        out.append(torch.stack(ups).mean(dim=0))
    return torch.stack(out)  # [steps, K, H, W]


def decided_steps(trace: Trace) -> list[int]:
    """The steps the summed map adds up: those starting at σ ≤ DECIDED_SIGMA, or the last step
    where none does (a short img2img run that stops early)."""
    kept = [i for i, s in enumerate(trace.steps) if s.sigma_from <= DECIDED_SIGMA]
    return kept or ([len(trace.steps) - 1] if trace.steps else [])


def summed_attention(trace: Trace, maps: torch.Tensor | None = None) -> torch.Tensor | None:
    """[K, H, W]: the combined maps (`maps`, else combined_attention's) summed over decided_steps."""
    maps = combined_attention(trace) if maps is None else maps
    return None if maps is None else maps[decided_steps(trace)].sum(dim=0)


def token_span(trace: Trace) -> tuple[list[str], slice]:
    """The prompt's tokens the viewers show, and which context positions they are: the start token
    dropped, up to and including the end token when the words are known (else every position of the
    first 77, labelled by number)."""
    words = trace.words
    if words:
        end = next((i for i, w in enumerate(words) if w == "<end>"), len(words) - 1)
        return list(words[1:end + 1]), slice(1, end + 1)
    k = max((m.shape[0] for s in trace.steps for m in (s.attention or {}).values()), default=77)
    k = min(k, 77)
    return [f"#{i}" for i in range(1, k)], slice(1, k)


def schedules_for(model: Any, sampler_name: str, steps: int, denoise: float) -> dict[str, list[float]]:
    """The sigmas every scheduler would give this model, sampler and step count (the trace panel's
    schedule plot); a scheduler that cannot be built for it is left out."""
    from .ksampler import sigmas_for
    from .names import SCHEDULERS

    out = {}
    for name in SCHEDULERS:
        try:
            out[name] = [float(s) for s in sigmas_for(model, name, sampler_name, steps, denoise)]
        except Exception:  # noqa: BLE001 - a schedule that does not apply to this model is simply not drawn
            continue
    return out


# -- one call for the node ----------------------------------------------------------------------------


def record_sampling(model: Any, positive: Sequence[Any], negative: Sequence[Any], latent: Any, *, seed: int,
                    steps: int, cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0,
                    record_attention: bool = False, words: Sequence[str] | None = None, callback=None,
                    dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor, Trace]:
    """KSampler's run (ksampler.sample, same numbers) with a TraceRecorder watching: (raw LATENT
    samples, Trace). `words`: the positive prompt's words per context position, if known."""
    from .ksampler import sample

    # Eager, never compiled: the attention recorder works by swapping the UNet's processors.
    model = replace(model, patches=replace(model.patches, compile=None))
    recorder = TraceRecorder(record_attention=record_attention, dtype=dtype)
    with recorder.attention_on(model.unet):
        samples = sample(model, positive, negative, latent, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
                         scheduler=scheduler, denoise=denoise, callback=callback, observer=recorder)
    trace = recorder.trace
    if trace is None:  # no step ran (denoise 0): an empty trace of the unchanged latent
        hw = tuple(latent.samples.shape[-2:])
        trace = Trace(steps=[], sigmas=[], final=None, prediction_type=model.prediction_type, latent_hw=hw)
    trace.cfg, trace.scheduler, trace.sampler = float(cfg), scheduler, sampler_name
    trace.latent_format = model.latent_format
    n_context = int(positive[0].cond.shape[1]) if positive else 0
    trace.words = list(words) if words is not None and len(words) == n_context else None
    trace.schedules = schedules_for(model, sampler_name, steps, denoise)
    return samples, trace
