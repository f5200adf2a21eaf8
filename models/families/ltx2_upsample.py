"""LTX-2's latent upsampler (diffusers' LTX2LatentUpsamplePipeline) and the two-stage refine after it.

A folder of LTX2LatentUpsamplePipeline (vae/ + latent_upsampler/), or one Lightricks/ComfyUI file from
latent_upscale_models/ (models/files/upsampler.py), loads as the Upscaler kind `ltx2_latent_upsampler`
(models/upscale.py's LTX2LatentUpsampler, in its registry UPSCALERS). The upsampler
works on the video VAE's raw latents: 2x in space (and, when its config has temporal_upsample, 2x in time: f
latent frames -> 2f - 1). LTX-2's two-stage
recipe is then a short refine at the new size with the same LTX-2 model (`latent_upscale`): the upsampled latents
(and the clip's sound latents) re-noised to `denoise` and sampled through Kinema's loop — with a distilled model, 8
steps at denoise 0.375 run exactly diffusers' STAGE_2_DISTILLED_SIGMA_VALUES. Parity with diffusers: the
upsampled latents == LTX2LatentUpsamplePipeline(latents=..., output_type="latent"); the refine ==
LTX2Pipeline(latents=those, audio_latents=the sound, sigmas=the retained tail, noise_scale=its first sigma).

Without an LTX-2 model (Video Upscale with only this upscaler connected) frames go through the folder's own VAE:
encode, upsample, decode (LTX2LatentUpsampler.upscale); a single file has no VAE, and asks for the model.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import torch

from ..checks import fail
from ..upscale import LTX2LatentUpsampler


def latent_upscale(model, upscaler: LTX2LatentUpsampler, latent: dict, positive, negative, steps: int,
                   guidance_scale: float, seed: int, denoise: float, on_step=None, step_cache=None,
                   cache_stats=None) -> dict:
    """A Temporal Sampler LATENT of an LTX-2 model -> the LATENT at 2x (and 2x the frames with a temporal
    upsampler), refined by `model` at the new size from the upsampled latents re-noised to `denoise`; the clip's
    sound latents go along (refined with it), its duration kept (the fps doubles with the frames).

    latent: {"samples": (1, C, f, h, w), "kinema_frames": F, "kinema_fps": fps, "kinema_audio": (1, L, D)?}.
    step_cache: optional step_cache.StepCache for the refine; cache_stats: a step_cache.Stats receiving its calls."""
    from ..joint import sample_clip
    from ..sampling import SamplerSettings
    from ..step_cache import session
    if not model.capabilities.joint_audio:
        fail("model", f"cannot refine LTX-2 latents ({model.name})", model.name, "Connect the LTX-2 model.")
    if not isinstance(upscaler, LTX2LatentUpsampler):
        fail("upscaler", "must be an LTX-2 latent upsampler (Load Upscale Model)", getattr(upscaler, "title", "?"),
             "Pick an LTX2LatentUpsamplePipeline folder (vae/ + latent_upsampler/) or an LTX-2 upsampler file "
             "(latent_upscale_models/ltx-2-spatial-upscaler-x2-1.0.safetensors).")
    samples = latent["samples"]
    big = upscaler.upsample(model, samples)                                           # (1, C, f', 2h, 2w)
    frames = model.pixel_frames(big.shape[2])
    fps = Fraction(latent.get("kinema_fps") or model.fps(SamplerSettings()))
    if upscaler.temporal:
        fps *= 2
    settings = SamplerSettings(num_frames=frames, height=big.shape[3] * model.spatial_ratio,
                               width=big.shape[4] * model.spatial_ratio, num_inference_steps=steps,
                               guidance_scale=guidance_scale, seed=seed, denoise=denoise, frame_rate=fps)
    audio = _audio_for(model, latent.get("kinema_audio"), settings)
    if denoise == 0:                                                                  # upsample only
        out = {"samples": big.cpu(), "kinema_frames": frames, "kinema_fps": fps}
        return out if audio is None else {**out, "kinema_audio": audio.cpu()}
    with session(step_cache, model, settings, stats=cache_stats) as predict:
        clip = sample_clip(model, positive, negative, settings, init_latents=big, init_audio=audio, on_step=on_step,
                           predict=predict)
    return {"samples": clip.video.cpu(), "kinema_frames": frames, "kinema_fps": fps,
            "kinema_audio": clip.audio_latents.cpu()}


def _audio_for(model, audio: torch.Tensor | None, settings) -> torch.Tensor | None:
    """The clip's sound latents (1, L, D) fitted to the refined clip's audio steps (a temporal upsample can change
    the covering step count by one): cut, or extended by repeating the last step."""
    if audio is None:
        return None
    steps = model.layout(settings).audio_steps
    if audio.shape[1] >= steps:
        return audio[:, :steps]
    return torch.cat([audio, audio[:, -1:].expand(-1, steps - audio.shape[1], -1)], dim=1)


def upscale_frames(model, upscaler: LTX2LatentUpsampler, frames: torch.Tensor, positive, negative, factor: int,
                   steps: int, guidance_scale: float, seed: int, strength: float, on_step=None, step_cache=None,
                   cache_stats=None) -> torch.Tensor:
    """Video Upscale's learned path for LTX-2: frames (F, H, W, 3) 0..1 encoded by the model, upsampled in latent
    space, refined at the new size (denoise = strength; 0 skips the refine) and decoded -> (F', 2H, 2W, 3)."""
    if factor != upscaler.scale:
        fail("factor", f"must be the latent upsampler's own scale (x{upscaler.scale})", f"x{factor}",
             f"Pick x{upscaler.scale}, or upscale twice.")
    model.check_size(frames.shape[0], frames.shape[1], frames.shape[2])
    latents = model.encode(frames[..., :3])                                            # (1, C, f, h, w)
    if strength == 0:
        return model.decode(upscaler.upsample(model, latents))
    latent = {"samples": latents, "kinema_frames": frames.shape[0]}
    out = latent_upscale(model, upscaler, latent, positive, negative, steps, guidance_scale, seed, strength, on_step,
                         step_cache, cache_stats)
    return model.decode(out["samples"])
