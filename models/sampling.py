"""The one denoising loop. Drives every family through the protocol in families/base.py.

Classifier-free guidance runs cond and uncond in one batch; the noise comes from one seeded CPU generator
(so a seed gives the same clip on any device); progress, previews and interrupt go through `on_step`.
The loop is shape-agnostic: the family gives the latent shape from the settings (video (1, C, f, h, w), audio
(1, C, T): families/base.py AudioFamily), sets the timesteps and draws the seeded noise.
Long video: with ContextOptions the loop applies FreeNoise (models/windows.py) to any family — noise
rescheduling, windows fused inside temporal attention (AnimateDiff) or on the predictions (every family, DiTs
included), prompt schedules with motion injection, and drift control that anchors each window's statistics.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import windows as W
from .checks import check_range, fail
from .families.base import Conditioning, VideoFamily

# on_step(step, total, latents): called after every step; may raise to interrupt (hosts raise their own error).
StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class SamplerSettings:
    """What the Temporal Sampler (or an audio node) asks for (diffusers names)."""
    num_frames: int = 16
    height: int = 512
    width: int = 512
    num_inference_steps: int = 20
    guidance_scale: float = 6.0
    seed: int = 0
    scheduler: str = "default"
    shift: float = 0.0        # 0 keeps the model's configured shift (flow families)
    denoise: float = 1.0      # < 1 starts from `init_latents` re-noised to this strength (SDEdit)
    audio_length_in_s: float = 0.0   # audio families, text-to-audio: seconds of sound to make
    frame_rate: float = 0.0          # audio families, audio for a video: the clip's fps (audio = num_frames / fps)


def _timesteps(model, scheduler, settings: SamplerSettings, device):
    steps, denoise = settings.num_inference_steps, settings.denoise
    model.set_timesteps(scheduler, settings, device)
    timesteps = scheduler.timesteps
    if denoise >= 1.0:
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return timesteps
    keep = min(int(steps * denoise), steps)                   # as diffusers' img2img get_timesteps
    if keep < 1:
        fail("denoise", "leaves no step to run", denoise, f"Raise denoise to at least {1 / steps:.3f} or add steps.")
    start = (steps - keep) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return timesteps[start:]


def _noised(scheduler, init: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """init latents re-noised to timestep t, in the scheduler's own parameterisation."""
    if hasattr(scheduler, "scale_noise"):                       # flow matching: x_t = (1 - s) x0 + s noise
        return scheduler.scale_noise(init, t.reshape(1), noise)
    return scheduler.add_noise(init, noise, t.reshape(1))


# ---- prompt schedules ------------------------------------------------------------------------------------------
def _schedule(positive: Conditioning) -> list[tuple[int, Conditioning]]:
    """[(frame, Conditioning)] keyframes; a start image attached to the scheduled prompt applies to each."""
    entries = positive.extras.get("schedule") or [(0, positive)]
    if positive.image is not None:
        entries = [(f, c if c.image is not None else c.with_image(positive.image)) for f, c in entries]
    refs = {k: v for k, v in positive.extras.items() if k.startswith("reference_")}   # Wan VACE references
    if refs:
        entries = [(f, c if "reference_images" in c.extras else
                    Conditioning(c.family, c.prompt, c.embeds, c.image, {**c.extras, **refs})) for f, c in entries]
    return entries


def _blend(batches: list[dict], weights: list[float], keys) -> dict:
    out = dict(batches[0])
    for key in keys:
        out[key] = sum(w * b[key] for w, b in zip(weights, batches) if w) if len(batches) > 1 else batches[0][key]
    return out


def _per_frame_text(model, batches, keyframes, num_frames, ratio) -> dict:
    """Text rows blended frame by frame (families whose rows are per frame, e.g. AnimateDiff)."""
    out = dict(batches[0])
    for key in model.text_keys:
        rows = [b[key].view(-1, num_frames, *b[key].shape[1:]) for b in batches]     # (B, F, L, D) each
        mixed = torch.zeros_like(rows[0])
        for f in range(num_frames):
            for w, r in zip(W.schedule_weights(keyframes, f * ratio), rows):
                if w:
                    mixed[:, f] += w * r[:, f]
        out[key] = mixed.flatten(0, 1)
    return out


# ---- drift control ---------------------------------------------------------------------------------------------
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


def _stats(x: torch.Tensor):
    return x.mean(dim=(2, 3, 4), keepdim=True), x.std(dim=(2, 3, 4), keepdim=True).clamp_min(1e-5)


def _windowed_predict(model, x, t, batch_for, spans, num_frames, ctx, scheduler, guided, cfg):
    """Denoise each window separately and fuse with position weights; anchor window statistics (drift)."""
    pred_sum = torch.zeros_like(x[: x.shape[0] // (2 if guided else 1)], dtype=torch.float32)
    weight_sum = torch.zeros(1, 1, num_frames, 1, 1, device=x.device)
    ref = None
    running: list[tuple[torch.Tensor, torch.Tensor]] = []
    for k, (s, e) in enumerate(spans):
        xw = torch.cat([x[:, :, s:e]]) if not guided else x[:, :, s:e]
        p = model.predict(xw, t, batch_for(s, e)).float()
        if guided:
            u, c = p.chunk(2)
            p = u + cfg * (c - u)
        xs = x[: p.shape[0], :, s:e].float()
        conv = _x0_and_back(scheduler, xs, t) if ctx.anchor != W.Anchor.NONE and ctx.anchor_strength > 0 else None
        if conv is not None:
            to_x0, to_pred = conv
            x0 = to_x0(p)
            mu, sd = _stats(x0)
            if ref is not None:
                a = ctx.anchor_strength
                rmu, rsd = ref
                x0 = (1 - a) * x0 + a * ((x0 - mu) / sd * rsd + rmu)
                p = to_pred(x0)
            running.append((mu, sd))
            if ctx.anchor == W.Anchor.FIRST:
                ref = running[0]
            else:
                ref = (torch.stack([m for m, _ in running]).mean(0), torch.stack([d for _, d in running]).mean(0))
        w = W.frame_weights(e - s, ctx.fuse).to(x.device).view(1, 1, -1, 1, 1)
        pred_sum[:, :, s:e] += p * w
        weight_sum[:, :, s:e] += w
    return pred_sum / weight_sum


def sample(model: VideoFamily, positive: Conditioning, negative: Conditioning | None, settings: SamplerSettings,
           init_latents: torch.Tensor | None = None, on_step: StepCallback | None = None,
           context: W.ContextOptions | None = None) -> torch.Tensor:
    """Generate latents for one clip.

    Args:
        model: a loaded family.
        positive, negative: encoded prompts; negative is used only when guidance_scale > 1. A positive from
            the Prompt Schedule node carries extras["schedule"] = [(frame, Conditioning), ...].
        settings: frames, size (pixels), steps, guidance, seed, scheduler, shift, denoise; audio families read
            audio_length_in_s, or num_frames and frame_rate of the clip the sound is for.
        init_latents: (1, C, f, h, w) latents to start from when denoise < 1 (video-to-video, image animation).
        on_step: progress/preview/interrupt hook.
        context: long-video windows (FreeNoise); None or a window covering the clip gives the plain result.
    Returns:
        latents (1, C, f, h, w) (audio: (1, C, T)) float32 on the model's device.
    """
    s = settings
    model.check_settings(s)
    check_range("steps", s.num_inference_steps, 1, 10_000)
    check_range("denoise", s.denoise, 0.0, 1.0)
    if positive.family != model.name:
        fail("positive", f"must be encoded by a {model.name} model", positive.family,
             "Connect the Text Encode node to the same model as the sampler.")
    device = model.device
    shape = (1, *model.latent_shape_for(s))                       # (1, C, f, h, w) video, (1, C, T) audio
    frames = shape[2]
    if init_latents is not None and tuple(init_latents.shape) != shape:
        fail("latent", f"must have shape {shape} for {s.num_frames} frames at {s.width}x{s.height}",
             tuple(init_latents.shape), "Encode the video at the sampler's size and length.")
    if s.denoise < 1.0 and init_latents is None:
        fail("denoise", "below 1.0 needs a `latent` input to start from", s.denoise,
             "Connect a Video Encode node to `latent`, or set denoise to 1.0.")
    refs = model.reference_frames(positive)                       # latent frames before the clip (Wan VACE)
    if refs:
        if context is not None:
            fail("context", f"cannot be combined with a reference image on {model.name}", "a Context Options input",
                 "Disconnect `context`, or remove the Reference Image node.")
        if s.denoise < 1.0:
            fail("denoise", f"below 1.0 cannot be combined with a reference image on {model.name}", s.denoise,
                 "Set denoise to 1.0, or remove the Reference Image node.")
        frames += refs
        shape = (*shape[:2], frames, *shape[3:])                  # (1, C, n + f, h, w): the references first

    # 1. windows (latent frames) and how they are fused
    spans, length, stride, mode = [(0, frames)], frames, 1, None
    if context is not None and not model.windows:
        fail("context", f"is not available for {model.name} (no context windows)", "a Context Options input",
             "Disconnect `context`.")
    if context is not None:
        length = W.latent_window(context.context_length, model.temporal_ratio)
        overlap = context.context_overlap // model.temporal_ratio if model.temporal_ratio > 1 else \
            context.context_overlap
        stride = max(1, length - overlap)
        spans = W.windows(frames, length, stride)
        mode = context.mode
        if mode == W.FuseMode.AUTO:
            mode = W.FuseMode.ATTENTION if model.attention_windows else W.FuseMode.PREDICTIONS
        if mode == W.FuseMode.ATTENTION and not model.attention_windows:
            fail("mode", f"`attention` fusion is not available for {model.name}", mode,
                 "Use predictions (or auto).")
    windowed = len(spans) > 1

    # 2. scheduler and seeded noise (same generator for noise, rescheduling and any stochastic step)
    scheduler = model.make_scheduler(s.scheduler, s.shift)
    generator = torch.Generator("cpu").manual_seed(s.seed)
    noise = model.initial_noise(s, shape, generator, device)
    if windowed:
        noise = W.reschedule_noise(noise, length, stride, generator, context.noise)
    timesteps = _timesteps(model, scheduler, s, device)
    if init_latents is not None and s.denoise < 1.0:
        latents = _noised(scheduler, init_latents.to(device, torch.float32), noise, timesteps[0])
    else:
        latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)

    # 3. conditioning, batched [negative, positive] for guidance in one denoiser call; one batch per prompt
    guided = s.guidance_scale > 1.0 and negative is not None
    schedule = _schedule(positive)
    batches = [model.prepare_for(c, negative if guided else None, s, generator) for _, c in schedule]
    keyframes = [f for f, _ in schedule]
    ratio = model.temporal_ratio
    scheduled = batches[0]
    if len(batches) > 1 and model.per_frame_text:
        scheduled = _per_frame_text(model, batches, keyframes, frames, ratio)
    step_kwargs = {}
    params = inspect.signature(scheduler.step).parameters
    if "generator" in params:
        step_kwargs["generator"] = generator
    if "eta" in params:
        step_kwargs["eta"] = 0.0

    # 4. the loop
    total = len(timesteps)
    if windowed and mode == W.FuseMode.ATTENTION:
        model.set_attention_windows(length, stride, context.fuse)
    try:
        with torch.no_grad():
            for i, t in enumerate(timesteps):
                inject = context is not None and context.inject_start <= i / total < context.inject_end
                active = scheduled if (len(batches) == 1 or inject or context is None) else batches[0]
                x = torch.cat([latents] * 2) if guided else latents                  # (B, C, f, h, w)
                if hasattr(scheduler, "scale_model_input"):
                    x = scheduler.scale_model_input(x, t)
                if windowed and mode == W.FuseMode.PREDICTIONS:
                    def batch_for(a, b, _active=active, _inject=inject):
                        base = _active
                        if len(batches) > 1 and not model.per_frame_text:
                            w = W.schedule_weights(keyframes, (a + b - 1) / 2 * ratio) if _inject else None
                            base = _blend(batches, w, model.text_keys) if w else batches[0]
                        return model.window_batch(base, a, b, frames)
                    pred = _windowed_predict(model, x, t, batch_for, spans, frames, context, scheduler, guided,
                                             s.guidance_scale)
                else:
                    batch = active
                    if len(batches) > 1 and not model.per_frame_text and inject:
                        batch = _blend(batches, W.schedule_weights(keyframes, (frames - 1) / 2 * ratio),
                                       model.text_keys)
                    pred = model.predict(x, t, batch).float()
                    if guided:
                        uncond, cond = pred.chunk(2)
                        pred = uncond + s.guidance_scale * (cond - uncond)
                latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
                if on_step is not None:
                    on_step(i + 1, total, latents[:, :, refs:] if refs else latents)
    finally:
        if windowed and mode == W.FuseMode.ATTENTION:
            model.set_attention_windows(None)
    return model.finish(latents, batches[0])
