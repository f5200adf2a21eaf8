"""Audio-driven portrait: one image + speech or song -> a talking (or singing) clip exactly as long as the audio.

The clip length comes from the audio: frames = ceil(seconds x fps), computed exactly (fps as a fraction, the
sample count as an integer), never rounded down — Save Video then pads the sound to frames / fps, so picture and
sound end together within one frame.

Long audio: windows laid over the clip, run one after another through the shared loop (models/sampling.sample,
one call per window: same schedulers, guidance, progress and interrupt as every family). One generic loop
(`animate_portrait_windows`) drives every portrait family through a session the family opens
(`model.portrait_session(...)`, capabilities.portrait): the session knows the window layout, each window's
conditioning (a PortraitWindow: the window's own audio, the frames it shares with the previous window, the
portrait) and which of a window's frames are new. In every window:
  - the portrait is given again as the identity reference (never the previous window's frames), so the face
    cannot drift away from it however long the clip;
  - the frames the window shares with the previous one are held clean and returned unchanged, so windows join
    without a seam;
  - the audio is the window's own moment on the clip's clock;
  - every window starts from the same seeded noise (FreeNoise's repeated context noise).
Memory is flat in the audio length: one window's frames and activations at a time, plus the output (stream it
with `animate_portrait_windows` to keep even that out of memory).

Kinema-Tiny Portrait (families/tiny_portrait.py): pixel windows of its trained length (models/windows.windows),
per-frame loudness features, known frames in pixels. LTX-2 (families/ltx2_portrait.py): windows of 8k+1 frames,
the portrait as the clean first latent frame of every window, the previous window's last latent frame(s) after
it, the speech encoded by LTX-2's audio VAE for each window's time span and held clean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import torch

from .checks import check_range, fail
from .media import check_fps


@dataclass(frozen=True)
class Window:
    """One window of a portrait clip: `length` frames sampled together; window frame 0 stands at clip frame
    `base`; frames [skip:] of the window are new (the first `skip` are the portrait or frames already made)."""
    length: int
    base: int
    skip: int


def portrait_num_frames(num_samples: int, sample_rate: int, fps: float | Fraction) -> int:
    """Frames for `num_samples` of audio at `sample_rate` Hz: ceil(seconds x fps), exact (no float rounding)."""
    rate = check_fps("fps", fps)
    if num_samples <= 0:
        fail("audio", "must hold at least one sample", num_samples, "Connect a non-empty AUDIO.")
    return math.ceil(Fraction(num_samples, sample_rate) * rate)


def animate_portrait_windows(model, portrait: torch.Tensor, waveform: torch.Tensor, sample_rate: int,
                             fps: float | Fraction = 25, seed: int = 0, num_inference_steps: int = 8,
                             guidance_scale: float = 1.0, identity_strength: float = 1.0, prompt: str = "",
                             overlap: int | None = None,
                             on_step: Callable[[int, int, torch.Tensor], None] | None = None,
                             step_cache=None, cache_stats=None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first frame index, new frames (n, H, W, 3) 0..1) window by window; memory flat in the audio length.

    Args:
        model: a portrait family (capabilities.portrait: Kinema-Tiny Portrait, LTX-2; load_portrait_model).
        portrait: IMAGE (1, H, W, C) or (H, W, C) 0..1, any size (fitted to the model).
        waveform: (C, T) or (T,) audio; sample_rate in Hz. The clip lasts ceil(T / sample_rate x fps) frames.
        fps: frames per second of the clip. seed: the noise seed (every window starts from it).
        num_inference_steps, guidance_scale: per window (guidance > 1 contrasts with the family's negative).
        identity_strength: 1 = the portrait as trained; > 1 holds the face closer to it; 0 ignores it.
        prompt: for families with a text encoder (LTX-2); others ignore it with a warning.
        overlap: frames shared by neighbouring windows (default: the family's).
        on_step: progress hook (step, total, latents) over all windows.
        step_cache: optional step_cache.StepCache, one session per window (every window starts from the seed: the
            first window of the first run calibrates, the others read it); cache_stats: an optional
            step_cache.Stats that receives the calls made and skipped over all windows.
    """
    from .sampling import SamplerSettings, sample
    from .step_cache import session as cache_session
    if not model.capabilities.portrait:
        fail("model", "must be an audio-driven portrait model", model.name,
             "Load Kinema-Tiny Portrait (kinema-tiny-portrait) or an LTX-2 folder with Load Portrait Model.")
    check_range("steps", num_inference_steps, 1, 10_000)
    check_range("cfg", guidance_scale, 0.0, 100.0)
    check_range("identity_strength", identity_strength, 0.0, 10.0)
    rate = check_fps("fps", fps)
    wav = waveform.float() if waveform.ndim == 2 else waveform.float().view(1, -1)            # (C, T)
    num_frames = portrait_num_frames(wav.shape[-1], sample_rate, rate)
    image = portrait if portrait.ndim == 4 else portrait.unsqueeze(0)                          # (1, H, W, C)
    session = model.portrait_session(image, wav, sample_rate, rate, num_frames, prompt=prompt, overlap=overlap,
                                     guidance_scale=guidance_scale, identity_strength=identity_strength)
    total = len(session.windows) * num_inference_steps
    made = 0
    for k, window in enumerate(session.windows):
        # 1. this window's conditioning: the portrait again, its own audio, the frames it shares with the last one
        positive, negative = session.conditioning(window)
        settings = SamplerSettings(num_frames=window.length, height=session.height, width=session.width,
                                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                   seed=seed, frame_rate=rate)

        def step_hook(i, n, latents, _done=k * num_inference_steps):
            if on_step is not None:
                on_step(_done + i, total, latents)

        # 2. denoise the window through the shared loop, 3. keep only its new frames
        with cache_session(step_cache, model, settings, stats=cache_stats) as predict:
            latents = sample(model, positive, negative, settings, on_step=step_hook, predict=predict)
        new = session.frames(latents, window)[:num_frames - made]                             # (n, H, W, 3)
        yield made, new
        made += len(new)
    if made != num_frames:    # the window layout covers every frame exactly once; anything else is a bug
        raise RuntimeError(f"portrait windows made {made} frames instead of {num_frames}")


def animate_portrait(model, portrait: torch.Tensor, waveform: torch.Tensor, sample_rate: int,
                     fps: float | Fraction = 25, **kwargs) -> torch.Tensor:
    """The whole clip as an IMAGE (frames, H, W, 3) 0..1 with frames = ceil(seconds x fps); see
    animate_portrait_windows for the arguments."""
    wav = waveform if waveform.ndim == 2 else waveform.view(1, -1)
    n = portrait_num_frames(wav.shape[-1], sample_rate, fps)
    out = None
    for start, frames in animate_portrait_windows(model, portrait, wav, sample_rate, fps, **kwargs):
        if out is None:
            out = torch.empty(n, *frames.shape[1:])
        out[start:start + len(frames)] = frames
    return out
