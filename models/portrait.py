"""Audio-driven portrait: one image + speech or song -> a talking (or singing) clip exactly as long as the audio.

The clip length comes from the audio: frames = ceil(seconds x fps), computed exactly (fps as a fraction, the
sample count as an integer), never rounded down — Save Video then pads the sound to frames / fps, so picture and
sound end together within one frame.

Long audio: windows of the model's trained length laid over the clip (models/windows.windows: stride =
length - overlap, the last window aligned to the end). The windows run one after another through the shared
loop (models/sampling.sample, one call per window: same schedulers, guidance, progress and interrupt as every
family). In every window:
  - the portrait is given again as the identity reference (never the previous window's frames), so the face
    cannot drift away from it however long the clip;
  - the frames the window shares with the previous one are given as known frames, held clean and returned
    unchanged, so windows join without a seam;
  - each frame gets the audio features of its own moment (for Kinema-Tiny Portrait: the loudness envelope,
    tiny/portrait_data.loudness_features, normalised over the whole clip);
  - every window starts from the same seeded noise (FreeNoise's repeated context noise).
Memory is flat in the audio length: one window's frames and activations at a time, plus the output (stream it
with `animate_portrait_windows` to keep even that out of memory) and the per-frame features (a float per frame).
"""
from __future__ import annotations

import math
import warnings
from fractions import Fraction
from typing import Callable, Iterator

import torch

from . import windows as W
from .checks import check_range, fail
from .families.base import Conditioning
from .media import check_fps

DEFAULT_OVERLAP = 2          # frames shared by neighbouring windows


def portrait_num_frames(num_samples: int, sample_rate: int, fps: float | Fraction) -> int:
    """Frames for `num_samples` of audio at `sample_rate` Hz: ceil(seconds x fps), exact (no float rounding)."""
    rate = check_fps("fps", fps)
    if num_samples <= 0:
        fail("audio", "must hold at least one sample", num_samples, "Connect a non-empty AUDIO.")
    return math.ceil(Fraction(num_samples, sample_rate) * rate)


def audio_features(model, waveform: torch.Tensor, sample_rate: int, fps: float | Fraction,
                   num_frames: int) -> torch.Tensor:
    """Per-frame audio features for `model`: waveform (C, T) -> (num_frames, A)."""
    if getattr(model, "audio_features", None) != "loudness":
        fail("model", "must be an audio-driven portrait model", getattr(model, "name", type(model).__name__),
             "Load Kinema-Tiny Portrait (kinema-tiny-portrait) with Load Portrait Model.")
    from .tiny.portrait_data import loudness_features
    return loudness_features(waveform, sample_rate, float(check_fps("fps", fps)), num_frames).unsqueeze(-1)


def animate_portrait_windows(model, portrait: torch.Tensor, waveform: torch.Tensor, sample_rate: int,
                             fps: float = 25.0, seed: int = 0, num_inference_steps: int = 8,
                             guidance_scale: float = 1.0, identity_strength: float = 1.0, prompt: str = "",
                             overlap: int = DEFAULT_OVERLAP,
                             on_step: Callable[[int, int, torch.Tensor], None] | None = None,
                             ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first frame index, new frames (n, H, W, 3) 0..1) window by window; memory flat in the audio length.

    Args:
        model: a portrait family (KinemaTinyPortraitFamily).
        portrait: IMAGE (1, H, W, C) or (H, W, C) 0..1, any size (fitted to the model: centre crop + resize).
        waveform: (C, T) or (T,) audio; sample_rate in Hz. The clip lasts ceil(T / sample_rate x fps) frames.
        fps: frames per second of the clip. seed: the noise seed (every window starts from it).
        num_inference_steps, guidance_scale: per window; guidance > 1 contrasts with a pass without audio.
        identity_strength: 1 = the portrait as trained; > 1 holds the face closer to it; 0 ignores it.
        prompt: Kinema-Tiny Portrait has no text encoder, so a prompt is ignored (with a warning).
        overlap: frames shared by neighbouring windows (0 .. window length - 1).
        on_step: progress hook (step, total, latents) over all windows.
    """
    from .sampling import SamplerSettings, sample
    check_range("steps", num_inference_steps, 1, 10_000)
    check_range("cfg", guidance_scale, 0.0, 100.0)
    check_range("identity_strength", identity_strength, 0.0, 10.0)
    wav = waveform.float() if waveform.ndim == 2 else waveform.float().view(1, -1)            # (C, T)
    num_frames = portrait_num_frames(wav.shape[-1], sample_rate, fps)
    if prompt.strip():
        warnings.warn(f"{model.name} has no text encoder: the prompt {prompt!r} is ignored.", stacklevel=2)
    image = portrait if portrait.ndim == 4 else portrait.unsqueeze(0)
    ref = model.fit_portrait(image)                                                            # (1, h, w, 3)
    h, w = ref.shape[1:3]
    feats = audio_features(model, wav, sample_rate, fps, num_frames)                          # (N, A)
    check_range("overlap", overlap, 0, model.default_frames - 1, "The overlap must be smaller than the window.")
    length = min(model.default_frames, num_frames)
    overlap = min(overlap, length - 1)                     # a clip shorter than one window is one window
    spans = W.windows(num_frames, length, length - overlap)
    total = len(spans) * num_inference_steps
    settings = SamplerSettings(num_frames=length, height=h, width=w, num_inference_steps=num_inference_steps,
                               guidance_scale=guidance_scale, seed=seed)
    negative = Conditioning(model.name, "", torch.zeros(1, 1, 1))
    tail = torch.zeros(0, h, w, 3)            # the last frames made so far (the next window's known frames)
    made = 0
    for k, (s, e) in enumerate(spans):
        # 1. known frames: what this window shares with frames already made
        n_known = made - s
        known = torch.zeros(1, 4, e - s, h, w)                                                # (1, 4, f, h, w)
        if n_known > 0:
            known[0, :3, :n_known] = tail[-n_known:].permute(3, 0, 1, 2) * 2 - 1
            known[0, 3, :n_known] = 1
        # 2. this window's conditioning: the portrait again, its own audio, the known frames
        positive = Conditioning(model.name, prompt, torch.zeros(1, 1, 1), ref,
                                {"audio": feats[s:e].unsqueeze(0), "known": known,
                                 "identity_strength": identity_strength})

        def step_hook(i, n, latents, _k=k):
            if on_step is not None:
                on_step(_k * num_inference_steps + i, total, latents)

        # 3. denoise the window through the shared loop, then keep only its new frames
        latents = sample(model, positive, negative if guidance_scale > 1 else None, settings, on_step=step_hook)
        frames = model.decode(latents)                                                        # (f, h, w, 3)
        new = frames[max(n_known, 0):]
        yield made, new
        made += len(new)
        tail = torch.cat([tail, new])[-length:]
    if made != num_frames:    # the window layout covers every frame exactly once; anything else is a bug
        raise RuntimeError(f"portrait windows made {made} frames instead of {num_frames}")


def animate_portrait(model, portrait: torch.Tensor, waveform: torch.Tensor, sample_rate: int,
                     fps: float = 25.0, **kwargs) -> torch.Tensor:
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
