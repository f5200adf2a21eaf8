"""The one denoising loop. Drives every family through the protocol in families/base.py.

`sample()` reads as named steps, as a diffusers pipeline does:
  1. check_inputs      reject what the model cannot make (never round), find the latent shape
  2. plan_windows      long video: which latent frames each window covers and how windows are fused
  3. start_run         the scheduler, its timesteps and the seeded noise (one CPU generator for everything)
  4. PromptSchedule    the conditioning, answering "which batch for latent frames a..b at step i"
  5. denoise           the loop: one guided prediction a step (`predict_step`: windows, fusion and drift
                       anchoring inside it, each window through `guided_predict`), one scheduler step, the
                       caller's post-step blend, progress / preview / interrupt through `on_step`
Plain, windowed, SDEdit (denoise < 1, masks through post_step), tiled refine (predict=), audio and portrait
windows all run through these; FlowEdit (models/edit.py) runs `denoise` with its own velocity and Euler step.
New features plug into one of these places: a guidance variant into guided_predict, step caching into
predict_step, a LoRA into the family's denoiser.

Classifier-free guidance runs cond and uncond in one batch; the noise comes from one seeded CPU generator (so a
seed gives the same latents on any device). The loop is shape-agnostic: the family gives the latent shape
(video (1, C, f, h, w), audio (1, C, T)), sets the timesteps and draws the seeded noise.
Long video (FreeNoise, models/windows.py): noise rescheduling, windows fused inside temporal attention
(AnimateDiff) or on the predictions (every family, DiTs included), prompt schedules with motion injection, and
drift control that anchors each window's statistics.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import torch

from . import interrupts
from . import windows as W
from .checks import check_range, fail
from .families.base import Conditioning, VideoFamily

# on_step(step, total, latents): called after every step; may raise to interrupt (hosts raise their own error).
StepCallback = Callable[[int, int, torch.Tensor], None]
# predict(latents_in, t, batch): a replacement for the family's predict (e.g. on spatial tiles), same signature.
Predict = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    """What the Temporal Sampler (or an audio / portrait / edit node) asks for (diffusers names)."""
    num_frames: int = 16
    height: int = 512
    width: int = 512
    num_inference_steps: int = 20
    guidance_scale: float = 6.0
    seed: int = 0
    scheduler: str = "default"
    shift: float = 0.0        # 0 keeps the model's configured shift (flow families)
    denoise: float = 1.0      # < 1 starts from `init_latents` re-noised to this strength (SDEdit)
    audio_length_in_s: float = 0.0       # text-to-audio: seconds of sound to make
    frame_rate: Fraction = Fraction(0)   # the clip's fps (media.check_fps): audio for a video, portraits


# ---- 1. inputs ---------------------------------------------------------------------------------------------------
def check_inputs(model: VideoFamily, positive: Conditioning, settings: SamplerSettings,
                 init_latents: torch.Tensor | None, context: W.ContextOptions | None) -> tuple[tuple[int, ...], int]:
    """Reject settings the model cannot honour. Returns (latent shape with batch axis, prefix frames): the prefix
    (Wan VACE reference frames) comes first in latent time and is dropped by the family's finish."""
    s = settings
    model.check_settings(s)
    check_range("steps", s.num_inference_steps, 1, 10_000)
    check_range("denoise", s.denoise, 0.0, 1.0)
    if positive.family != model.name:
        fail("positive", f"must be encoded by a {model.name} model", positive.family,
             "Connect the Text Encode node to the same model as the sampler.")
    shape = (1, *model.latent_shape(s))                           # (1, C, f, h, w) video, (1, C, T) audio
    if init_latents is not None and tuple(init_latents.shape) != shape:
        fail("latent", f"must have shape {shape} for {s.num_frames} frames at {s.width}x{s.height}",
             tuple(init_latents.shape), "Encode the video at the sampler's size and length.")
    if s.denoise < 1.0 and init_latents is None:
        fail("denoise", "below 1.0 needs a `latent` input to start from", s.denoise,
             "Connect a Video Encode node to `latent`, or set denoise to 1.0.")
    if context is not None and not model.capabilities.windows:
        fail("context", f"is not available for {model.name} (no context windows)", "a Context Options input",
             "Disconnect `context`.")
    prefix = model.prefix_frames(positive)
    if prefix and context is not None:
        fail("context", f"cannot be combined with a reference image on {model.name}", "a Context Options input",
             "Disconnect `context`, or remove the Reference Image node.")
    if prefix and s.denoise < 1.0:
        fail("positive", f"carries {prefix} reference image(s), which {model.name} takes only when sampling from "
             f"noise (denoise 1.0; not Video Edit or an upscale refine)", f"denoise {s.denoise}",
             "Sample with the Temporal Sampler at denoise 1.0, or remove the Reference Image node.")
    return (*shape[:2], shape[2] + prefix, *shape[3:]), prefix   # (1, C, n + f, h, w): the prefix first


# ---- 2. windows --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowPlan:
    """Latent-frame windows [start, end) of a clip and how they are fused; one span = the plain loop."""
    spans: list[tuple[int, int]]
    length: int = 0                   # latent frames per window
    stride: int = 1
    mode: W.FuseMode | None = None    # attention or predictions (when windowed)

    @property
    def on_predictions(self) -> bool:
        return len(self.spans) > 1 and self.mode == W.FuseMode.PREDICTIONS

    @contextlib.contextmanager
    def attention(self, model: VideoFamily, fuse: str):
        """Windows fused inside the model's temporal attention for the duration of the loop (when planned so)."""
        active = len(self.spans) > 1 and self.mode == W.FuseMode.ATTENTION
        if active:
            model.set_attention_windows(self.length, self.stride, fuse)
        try:
            yield
        finally:
            if active:
                model.set_attention_windows(None)


def plan_windows(model: VideoFamily, context: W.ContextOptions | None, frames: int) -> WindowPlan:
    """Windows over `frames` latent frames (context lengths are in pixel frames) and their fusion mode."""
    if context is None:
        return WindowPlan([(0, frames)])
    length = model.latent_frames(context.context_length)
    stride = max(1, length - context.context_overlap // model.temporal_ratio)
    mode = context.mode
    if mode == W.FuseMode.AUTO:
        mode = W.FuseMode.ATTENTION if model.capabilities.attention_windows else W.FuseMode.PREDICTIONS
    if mode == W.FuseMode.ATTENTION and not model.capabilities.attention_windows:
        fail("mode", f"`attention` fusion is not available for {model.name}", mode, "Use predictions (or auto).")
    return WindowPlan(W.windows(frames, length, stride), length, stride, W.FuseMode(mode))


# ---- 3. the run: scheduler, timesteps, noise ---------------------------------------------------------------------
@dataclass
class Run:
    """What one run of the loop shares: the scheduler and its timesteps, the seeded generator and noise."""
    scheduler: Any
    generator: torch.Generator
    timesteps: torch.Tensor
    noise: torch.Tensor
    latents: torch.Tensor             # where the loop starts
    prefix: int = 0                   # latent frames before the clip (hidden from on_step)
    step_kwargs: dict | None = None   # the scheduler's optional step arguments, found on the first step

    def step(self, pred: torch.Tensor, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """One scheduler step (with the run's generator and eta 0 where the scheduler takes them)."""
        if self.step_kwargs is None:
            params = inspect.signature(self.scheduler.step).parameters
            self.step_kwargs = {k: v for k, v in (("generator", self.generator), ("eta", 0.0)) if k in params}
        return self.scheduler.step(pred, t, latents, **self.step_kwargs, return_dict=False)[0]

    def noised(self, clean: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """clean latents re-noised with the run's noise to timestep t, in the scheduler's parameterisation."""
        if hasattr(self.scheduler, "scale_noise"):                    # flow matching: (1 - s) x0 + s noise
            return self.scheduler.scale_noise(clean, t.reshape(1), self.noise)
        return self.scheduler.add_noise(clean, self.noise, t.reshape(1))


def timesteps_for(model: VideoFamily, scheduler, settings: SamplerSettings, device) -> torch.Tensor:
    """The scheduler's timesteps for the settings; denoise < 1 keeps the last steps * denoise of them (as
    diffusers' img2img get_timesteps) and tells the scheduler where it begins."""
    steps, denoise = settings.num_inference_steps, settings.denoise
    model.set_timesteps(scheduler, settings, device)
    start = 0
    if denoise < 1.0:
        keep = min(int(steps * denoise), steps)
        if keep < 1:
            fail("denoise", "leaves no step to run", denoise, f"Raise denoise to at least {1 / steps:.3f} or add steps.")
        start = (steps - keep) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def start_run(model: VideoFamily, settings: SamplerSettings, shape: tuple[int, ...], plan: WindowPlan,
              context: W.ContextOptions | None, init_latents: torch.Tensor | None, prefix: int = 0) -> Run:
    """A fresh scheduler, the seeded noise (rescheduled over windows) and the starting latents."""
    device = model.device
    scheduler = model.make_scheduler(settings.scheduler, settings.shift)
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    noise = model.initial_noise(settings, shape, generator, device)
    if len(plan.spans) > 1:
        noise = W.reschedule_noise(noise, plan.length, plan.stride, generator, context.noise)
    timesteps = timesteps_for(model, scheduler, settings, device)
    run = Run(scheduler, generator, timesteps, noise, noise, prefix)
    if init_latents is not None and settings.denoise < 1.0:
        run.latents = run.noised(init_latents.to(device, torch.float32), timesteps[0])
    else:
        run.latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    return run


# ---- 4. conditioning ---------------------------------------------------------------------------------------------
class PromptSchedule:
    """The denoiser's conditioning for every (step, window): one batch per keyframe prompt, batched
    [negative, positive] for guidance; several prompts blend by frame position (FreeNoise), acting only in the
    motion-injection steps when windows are used."""

    def __init__(self, model: VideoFamily, positive: Conditioning, negative: Conditioning | None,
                 settings: SamplerSettings, generator: torch.Generator, context: W.ContextOptions | None,
                 frames: int, steps: int, windowed: bool):
        entries = positive.keyframes()
        self.model, self.context, self.frames, self.steps, self.windowed = model, context, frames, steps, windowed
        self.keyframes = [f for f, _ in entries]
        self.batches = [model.prepare(c, negative, settings, generator) for _, c in entries]
        self.per_frame = None                   # text rows blended frame by frame (AnimateDiff)
        if len(self.batches) > 1 and model.capabilities.per_frame_text:
            self.per_frame = self._per_frame_text()

    @property
    def base(self) -> dict:
        """The first prompt's batch (what the family's finish receives)."""
        return self.batches[0]

    def batch(self, step: int, start: int, end: int) -> dict:
        """The batch for latent frames [start, end) at step `step`."""
        inject = self.context is not None and self.context.inject_start <= step / self.steps < self.context.inject_end
        if len(self.batches) == 1:
            out = self.batches[0]
        elif self.per_frame is not None:
            out = self.per_frame if (inject or self.context is None) else self.batches[0]
        elif inject:
            out = self._blend(W.schedule_weights(self.keyframes, (start + end - 1) / 2 * self.model.temporal_ratio))
        else:
            out = self.batches[0]
        return self.model.window_batch(out, start, end, self.frames) if self.windowed else out

    def _blend(self, weights: list[float]) -> dict:
        out = dict(self.batches[0])
        for key in self.model.text_keys:
            out[key] = sum(w * b[key] for w, b in zip(weights, self.batches) if w)
        return out

    def _per_frame_text(self) -> dict:
        """Text rows (B*F, L, D) blended frame by frame by each frame's keyframe weights."""
        out = dict(self.batches[0])
        for key in self.model.text_keys:
            rows = [b[key].view(-1, self.frames, *b[key].shape[1:]) for b in self.batches]  # (B, F, L, D) each
            mixed = torch.zeros_like(rows[0])
            for f in range(self.frames):
                for w, r in zip(W.schedule_weights(self.keyframes, f * self.model.temporal_ratio), rows):
                    if w:
                        mixed[:, f] += w * r[:, f]
            out[key] = mixed.flatten(0, 1)
        return out


class DriftAnchor:
    """Drift control across the windows of one step: each window's predicted clean latents are pulled toward the
    statistics (mean, std over channels' space and time) of the first window (anchor first) or of the running
    mean of the windows before it (running), by anchor_strength. Off for anchor none / strength 0, and for
    schedulers whose parameterisation is unknown."""

    def __init__(self, context: W.ContextOptions, scheduler, t: torch.Tensor):
        on = context.anchor != W.Anchor.NONE and context.anchor_strength > 0
        self.context, self.scheduler, self.t = context, scheduler, t
        self.enabled = on
        self.ref: tuple[torch.Tensor, torch.Tensor] | None = None
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, pred: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """pred: one window's guided prediction; x: its (scaled) latents. Returns the anchored prediction."""
        conv = _x0_and_back(self.scheduler, x, self.t) if self.enabled else None
        if conv is None:
            return pred
        to_x0, to_pred = conv
        x0 = to_x0(pred)
        mu, sd = x0.mean(dim=(2, 3, 4), keepdim=True), x0.std(dim=(2, 3, 4), keepdim=True).clamp_min(1e-5)
        if self.ref is not None:
            a, (rmu, rsd) = self.context.anchor_strength, self.ref
            pred = to_pred((1 - a) * x0 + a * ((x0 - mu) / sd * rsd + rmu))
        self.seen.append((mu, sd))
        if self.context.anchor == W.Anchor.FIRST:
            self.ref = self.seen[0]
        else:
            self.ref = (torch.stack([m for m, _ in self.seen]).mean(0), torch.stack([d for _, d in self.seen]).mean(0))
        return pred


def _x0_and_back(scheduler, x: torch.Tensor, t: torch.Tensor):
    """(to_x0(pred), to_pred(x0)) for the scheduler's parameterisation, or None when it is unknown."""
    pt = scheduler.config.get("prediction_type", "flow_prediction" if hasattr(scheduler, "scale_noise") else None)
    if hasattr(scheduler, "scale_noise") or pt == "flow_prediction":
        idx = scheduler.index_for_timestep(t) if scheduler.step_index is None else scheduler.step_index
        sigma = scheduler.sigmas[idx].to(x.device)
        return (lambda p: x - sigma * p), (lambda x0: (x - x0) / sigma.clamp_min(1e-6))
    if pt == "epsilon" and hasattr(scheduler, "alphas_cumprod"):
        a = scheduler.alphas_cumprod[int(t)].to(x.device)
        return (lambda p: (x - (1 - a).sqrt() * p) / a.sqrt()), (lambda x0: (x - a.sqrt() * x0) / (1 - a).sqrt())
    return None


# ---- 5. the loop -------------------------------------------------------------------------------------------------
def model_input(latents: torch.Tensor, t: torch.Tensor, guided: bool, scheduler=None) -> torch.Tensor:
    """The denoiser's input for latents (1, ...): doubled for guidance, scaled for the scheduler."""
    x = torch.cat([latents] * 2) if guided else latents                            # (B, C, f, h, w)
    return scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x


def guided_predict(model: VideoFamily, x: torch.Tensor, t: torch.Tensor, batch: dict, guidance_scale: float,
                   guided: bool, predict: Predict | None = None) -> torch.Tensor:
    """One denoiser call on x (B, ...) (model_input), classifier-free guided when `guided`: float32 (1, ...)."""
    pred = (predict or model.predict)(x, t, batch).float()
    if not guided:
        return pred
    uncond, cond = pred.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def predict_step(model: VideoFamily, run: Run, prompts: PromptSchedule, plan: WindowPlan,
                 context: W.ContextOptions | None, guidance_scale: float, guided: bool,
                 predict: Predict | None = None) -> Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loop's prediction for step i: the whole clip at once, or each window fused with position weights
    (and drift-anchored) when windows run on the predictions."""
    def one(i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = model_input(latents, t, guided, run.scheduler)
        if not plan.on_predictions:
            return guided_predict(model, x, t, prompts.batch(i, 0, plan.spans[-1][1]), guidance_scale, guided,
                                  predict)
        anchor = DriftAnchor(context, run.scheduler, t)
        pred_sum = torch.zeros_like(latents, dtype=torch.float32)
        weight_sum = torch.zeros(1, 1, latents.shape[2], 1, 1, device=latents.device)
        for s, e in plan.spans:
            interrupts.check()                    # a stop is seen between windows, not only after the step
            p = guided_predict(model, x[:, :, s:e], t, prompts.batch(i, s, e), guidance_scale, guided, predict)
            p = anchor(p, x[: p.shape[0], :, s:e].float())
            w = W.frame_weights(e - s, context.fuse).to(latents.device).view(1, 1, -1, 1, 1)
            pred_sum[:, :, s:e] += p * w
            weight_sum[:, :, s:e] += w
        return pred_sum / weight_sum
    return one


def denoise(run: Run, predict: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor],
            on_step: StepCallback | None = None,
            post_step: Callable[[Run, int, torch.Tensor], torch.Tensor] | None = None,
            step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The loop: for each timestep one prediction, one scheduler step (or `step`), the caller's post-step blend,
    then on_step(i, total, latents without the prefix frames). Returns the final latents."""
    latents, total = run.latents, len(run.timesteps)
    with torch.no_grad():
        for i, t in enumerate(run.timesteps):
            pred = predict(i, t, latents)                                      # 1. guided prediction
            latents = (step or run.step)(pred, t, latents)                     # 2. scheduler step
            if post_step is not None:                                          # 3. e.g. a mask blend
                latents = post_step(run, i, latents)
            if on_step is not None:                                            # 4. progress / preview / interrupt
                on_step(i + 1, total, latents[:, :, run.prefix:] if run.prefix else latents)
    return latents


def sample(model: VideoFamily, positive: Conditioning, negative: Conditioning | None, settings: SamplerSettings,
           init_latents: torch.Tensor | None = None, on_step: StepCallback | None = None,
           context: W.ContextOptions | None = None, *, predict: Predict | None = None,
           post_step: Callable[[Run, int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Generate latents for one clip.

    Args:
        model: a loaded family.
        positive, negative: encoded prompts; negative is used only when guidance_scale > 1. A positive from the
            Prompt Schedule node carries its keyframes in `schedule`.
        settings: frames, size (pixels), steps, guidance, seed, scheduler, shift, denoise; audio families read
            audio_length_in_s, or num_frames and frame_rate of the clip the sound is for.
        init_latents: (1, C, f, h, w) latents to start from when denoise < 1 (video-to-video, image animation).
        on_step: progress/preview/interrupt hook.
        context: long-video windows (FreeNoise); None or a window covering the clip gives the plain result.
        predict: a replacement for model.predict (e.g. on spatial tiles); post_step(run, i, latents): a blend after
            each scheduler step (e.g. SDEdit's mask).
    Returns:
        latents (1, C, f, h, w) (audio: (1, C, T)) float32 on the model's device.
    """
    # 1. check inputs; 2. plan windows (latent frames) and how they are fused
    shape, prefix = check_inputs(model, positive, settings, init_latents, context)
    plan = plan_windows(model, context, shape[2])
    # 3. scheduler, timesteps and seeded noise (one generator for noise, rescheduling and stochastic steps)
    run = start_run(model, settings, shape, plan, context, init_latents, prefix)
    # 4. conditioning: one batch per prompt, [negative, positive] for guidance in one denoiser call
    guided = settings.guidance_scale > 1.0 and negative is not None
    prompts = PromptSchedule(model, positive, negative if guided else None, settings, run.generator, context,
                             shape[2], len(run.timesteps), plan.on_predictions)
    # 5. the loop: one guided prediction per step (windows fused inside it), one scheduler step
    step = predict_step(model, run, prompts, plan, context, settings.guidance_scale, guided, predict)
    with plan.attention(model, context.fuse if context is not None else None):
        latents = denoise(run, step, on_step, post_step)
    return model.finish(latents, prompts.base)
