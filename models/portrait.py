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

LTX-2 (families/ltx2_portrait.py) runs the same way with what a latent video model needs instead: windows of
8k+1 frames (LTX-2's causal VAE), the portrait as the clean first latent frame of every window, the previous
window's last latent frame(s) held clean right after it (the overlap, in latents: no VAE round trip), and the
speech encoded by LTX-2's audio VAE for each window's own time span and held clean (`ltx2_window_plan`).
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

DEFAULT_OVERLAP = 2          # frames shared by neighbouring windows (Kinema-Tiny Portrait; LTX-2: one latent frame)


def _portrait_families() -> dict:
    from .families.ltx2_portrait import LTX2PortraitFamily
    from .families.tiny_portrait import KinemaTinyPortraitFamily
    return {"kinema_tiny_portrait": KinemaTinyPortraitFamily, "ltx2_portrait": LTX2PortraitFamily}


def portrait_family_for(model_index: dict) -> str | None:
    """The portrait family whose loader accepts a folder's model_index.json (Kinema-Tiny Portrait, LTX-2), or None."""
    return next((name for name, cls in _portrait_families().items() if cls.accepts(model_index)), None)


def load_portrait_model(path, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """Load a portrait model folder (never downloads): Kinema-Tiny Portrait, or an LTX-2 folder (LTX2Pipeline,
    LTX2ConditionPipeline or LTX2ImageToVideoPipeline model_index.json), the family read from model_index.json."""
    from pathlib import Path
    from .families.base import read_model_index
    path = Path(path)
    index = read_model_index(path)
    name = portrait_family_for(index)
    if name is None:
        fail("model", "must be a portrait model folder (Kinema-Tiny Portrait or LTX-2)", index.get("_class_name"),
             "Pick kinema-tiny-portrait or an LTX-2 diffusers folder (model_index.json naming LTX2Pipeline); "
             "load other video models with Load Video Model.")
    return _portrait_families()[name].load(path, device or torch.device("cpu"), dtype)


def ltx2_window_plan(num_frames: int, ratio: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """Windows for a latent model with a causal VAE of temporal `ratio`: [(length, base, skip)], where length is
    the window's frame count (ratio*k + 1, always valid), base the clip frame that the window's frame 0 (the
    portrait) stands at, and skip the window frames already made (frame 0 and the overlap), so the window's frame
    i >= skip is clip frame base + i. Every window but the first starts with `overlap` frames (a multiple of
    ratio) of the previous one; the last window is as short as it can be and its tail past num_frames is dropped."""
    k_full, ov = (window - 1) // ratio, overlap // ratio
    plan, made = [], 0
    while made < num_frames:
        if not plan:
            k = min(k_full, max(1, -(-(num_frames - 1) // ratio)))
            base, skip = 0, 0
        else:
            k = ov + min(k_full - ov, -(-(num_frames - made) // ratio))
            base, skip = made - overlap - 1, overlap + 1
        length = ratio * k + 1
        plan.append((length, base, skip))
        made = base + length
    return plan


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
                             overlap: int | None = None,
                             on_step: Callable[[int, int, torch.Tensor], None] | None = None,
                             ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first frame index, new frames (n, H, W, 3) 0..1) window by window; memory flat in the audio length.

    Args:
        model: a portrait family (KinemaTinyPortraitFamily, LTX2PortraitFamily: see load_portrait_model).
        portrait: IMAGE (1, H, W, C) or (H, W, C) 0..1, any size (fitted to the model: centre crop + resize).
        waveform: (C, T) or (T,) audio; sample_rate in Hz. The clip lasts ceil(T / sample_rate x fps) frames.
        fps: frames per second of the clip. seed: the noise seed (every window starts from it).
        num_inference_steps, guidance_scale: per window; guidance > 1 contrasts with a pass without audio.
        identity_strength: 1 = the portrait as trained; > 1 holds the face closer to it; 0 ignores it.
        prompt: Kinema-Tiny Portrait has no text encoder, so a prompt is ignored (with a warning).
        overlap: frames shared by neighbouring windows (0 .. window length - 1; default 2). LTX-2: a multiple of
            its VAE's temporal ratio (default: one latent frame, 8 frames).
        on_step: progress hook (step, total, latents) over all windows.
    """
    if getattr(model, "portrait_kind", None) == "ltx2":
        yield from _ltx2_windows(model, portrait, waveform, sample_rate, fps, seed, num_inference_steps,
                                 guidance_scale, identity_strength, prompt, overlap, on_step)
        return
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
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


def _ltx2_windows(model, portrait, waveform, sample_rate, fps, seed, num_inference_steps, guidance_scale,
                  identity_strength, prompt, overlap, on_step) -> Iterator[tuple[int, torch.Tensor]]:
    """animate_portrait_windows for LTX-2: see ltx2_window_plan and families/ltx2_portrait.py."""
    from .sampling import SamplerSettings, sample
    check_range("steps", num_inference_steps, 1, 10_000)
    check_range("cfg", guidance_scale, 0.0, 100.0)
    if identity_strength != 1.0:
        fail("identity_strength", f"must be 1.0 for {model.name} (the portrait is the clean first frame of every "
             "window)", identity_strength, "Set identity_strength to 1.0.")
    rate = check_fps("fps", fps)
    wav = waveform.float() if waveform.ndim == 2 else waveform.float().view(1, -1)            # (C, T)
    num_frames = portrait_num_frames(wav.shape[-1], sample_rate, rate)
    r = model.temporal_ratio
    overlap = r * model.overlap_latents if overlap is None else overlap
    from .checks import check_frames
    check_frames("window", model.default_frames, r)
    if overlap <= 0 or overlap % r or overlap >= model.default_frames - 1:
        fail("overlap", f"must be a positive multiple of {r} below the window ({model.default_frames} frames) "
             f"for {model.name}", overlap, f"Use {r} (one latent frame).")
    plan = ltx2_window_plan(num_frames, r, model.default_frames, overlap)
    total = len(plan) * num_inference_steps
    image = portrait if portrait.ndim == 4 else portrait.unsqueeze(0)
    h, w = model.portrait_size(image.shape[1], image.shape[2])
    ref = model.encode_portrait(image, h, w, plan[0][0])                                     # (1, C, 1, h, w)
    speech = model.speech_waveform(wav, sample_rate)                                          # (2, T') at 16 kHz
    positive = model.encode_prompt(prompt)
    negative = model.encode_prompt("") if guidance_scale > 1 else None
    known, made = None, 0
    for k, (length, base, skip) in enumerate(plan):
        # 1. this window's speech: its own time span on the shared clock, encoded and held clean
        audio = model.speech_latents(speech, model.audio_steps(base, rate), model.audio_steps(length, rate))
        cond = Conditioning(model.name, prompt, positive.embeds, image,
                            {**positive.extras, "portrait": ref, "audio_latents": audio, "known": known,
                             "fps": float(rate)})
        settings = SamplerSettings(num_frames=length, height=h, width=w, num_inference_steps=num_inference_steps,
                                   guidance_scale=guidance_scale, seed=seed)

        def step_hook(i, n, latents, _k=k):
            if on_step is not None:
                on_step(_k * num_inference_steps + i, total, latents)

        # 2. denoise the window (the portrait at frame 0, the overlap after it), keep only its new frames
        latents = sample(model, cond, negative, settings, on_step=step_hook)                  # (1, C, f, h, w)
        new = model.decode(latents)[skip:][:num_frames - made]                                # (n, h, w, 3)
        yield made, new
        made += len(new)
        known = latents[:, :, -(overlap // r):]          # the next window's known latent frames
    if made != num_frames:    # the plan covers every frame exactly once; anything else is a bug
        raise RuntimeError(f"portrait windows made {made} frames instead of {num_frames}")
