"""The one denoising loop. Drives every family through the protocol in families/base.py.

Classifier-free guidance runs cond and uncond in one batch; the noise comes from one seeded CPU generator
(so a seed gives the same clip on any device); progress, previews and interrupt go through `on_step`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

from .checks import check_range, fail
from .families.base import Conditioning, VideoFamily

# on_step(step, total, latents): called after every step; may raise to interrupt (hosts raise their own error).
StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class SamplerSettings:
    """What the Temporal Sampler node asks for (diffusers names)."""
    num_frames: int = 16
    height: int = 512
    width: int = 512
    num_inference_steps: int = 20
    guidance_scale: float = 6.0
    seed: int = 0
    scheduler: str = "default"
    shift: float = 0.0        # 0 keeps the model's configured shift (flow families)
    denoise: float = 1.0      # < 1 starts from `init_latents` re-noised to this strength (SDEdit)


def _timesteps(scheduler, steps: int, denoise: float, device):
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    if denoise >= 1.0:
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


def sample(model: VideoFamily, positive: Conditioning, negative: Conditioning | None, settings: SamplerSettings,
           init_latents: torch.Tensor | None = None, on_step: StepCallback | None = None) -> torch.Tensor:
    """Generate latents for one clip.

    Args:
        model: a loaded family.
        positive, negative: encoded prompts; negative is used only when guidance_scale > 1.
        settings: frames, size (pixels), steps, guidance, seed, scheduler, shift, denoise.
        init_latents: (1, C, f, h, w) latents to start from when denoise < 1 (video-to-video, image animation).
        on_step: progress/preview/interrupt hook.
    Returns:
        latents (1, C, f, h, w) float32 on the model's device.
    """
    s = settings
    model.check_size(s.num_frames, s.height, s.width)
    check_range("steps", s.num_inference_steps, 1, 10_000)
    check_range("denoise", s.denoise, 0.0, 1.0)
    if positive.family != model.name:
        fail("positive", f"must be encoded by a {model.name} model", positive.family,
             "Connect the Text Encode node to the same model as the sampler.")
    device = model.device
    shape = (1, *model.latent_shape(s.num_frames, s.height, s.width))       # (1, C, f, h, w)
    if init_latents is not None and tuple(init_latents.shape) != shape:
        fail("latent", f"must have shape {shape} for {s.num_frames} frames at {s.width}x{s.height}",
             tuple(init_latents.shape), "Encode the video at the sampler's size and length.")
    if s.denoise < 1.0 and init_latents is None:
        fail("denoise", "below 1.0 needs a `latent` input to start from", s.denoise,
             "Connect a Video Encode node to `latent`, or set denoise to 1.0.")

    # 1. scheduler and seeded noise (same generator for noise and any stochastic scheduler step)
    scheduler = model.make_scheduler(s.scheduler, s.shift)
    generator = torch.Generator("cpu").manual_seed(s.seed)
    noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    timesteps = _timesteps(scheduler, s.num_inference_steps, s.denoise, device)
    if s.denoise >= 1.0 and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    if init_latents is not None and s.denoise < 1.0:
        latents = _noised(scheduler, init_latents.to(device, torch.float32), noise, timesteps[0])
    else:
        latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)

    # 2. conditioning, batched [negative, positive] for guidance in one denoiser call
    guided = s.guidance_scale > 1.0 and negative is not None
    batch = model.prepare(positive, negative if guided else None, s.num_frames, s.height, s.width, generator)
    step_kwargs = {}
    params = inspect.signature(scheduler.step).parameters
    if "generator" in params:
        step_kwargs["generator"] = generator
    if "eta" in params:
        step_kwargs["eta"] = 0.0

    # 3. the loop
    total = len(timesteps)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            x = torch.cat([latents] * 2) if guided else latents                      # (B, C, f, h, w)
            if hasattr(scheduler, "scale_model_input"):
                x = scheduler.scale_model_input(x, t)
            pred = model.predict(x, t, batch).float()
            if guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + s.guidance_scale * (cond - uncond)
            latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
            if on_step is not None:
                on_step(i + 1, total, latents)
    return model.finish(latents, batch)
