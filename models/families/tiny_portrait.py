"""Kinema-Tiny Portrait: a drawn face animated by the loudness of a voice, trained here (models/tiny/portrait_*).

A pixel-space flow-matching UNet (no VAE: the "latents" are the frames themselves in -1..1, (1, 3, F, 32, 32)).
It is conditioned on the reference portrait (the identity, given to every window), per-frame audio features
(the loudness of the voice around each frame) and known frames (a previous window's overlap, held clean).
The shared loop (models/sampling.py) drives it one window at a time; models/portrait.py lays the windows over
the audio. Guidance: the negative row drops the audio (cfg scales how much the voice moves the face);
identity_strength extrapolates from a pass without the reference (1 = as trained, costs nothing extra).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from .. import windows as W
from ..portrait import Window
from ..checks import check_range, check_shape, fail
from .base import Capabilities, Conditioning, PortraitWindow, VideoFamily

PORTRAIT_PIPELINES = {"KinemaTinyPortraitPipeline"}


class KinemaTinyPortraitFamily(VideoFamily):
    name = "kinema_tiny_portrait"
    title = "Kinema-Tiny Portrait"
    capabilities = Capabilities(windows=False, portrait=True, any_size=False)
    flow = True
    spatial_ratio = 1          # pixel space
    temporal_ratio = 1         # any frame count
    spatial_multiple = 1
    default_frames = 9         # frames per window (the training clips)
    latent_channels = 3
    default_overlap = 2        # frames shared by neighbouring windows
    denoisers = ("unet",)      # what a LoRA patches

    def __init__(self, path, device, dtype, models):
        from diffusers import FlowMatchEulerDiscreteScheduler
        super().__init__(path, device, dtype)
        self.models = models
        self.unet = models.unet
        self.default_frames = int(models.index.get("num_frames", 9))
        self.height = int(models.index.get("height", 32))
        self.width = int(models.index.get("width", 32))
        self.fps = float(models.index.get("fps", 25))
        self.default_scheduler = FlowMatchEulerDiscreteScheduler.from_config(models.scheduler_config)

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return model_index.get("_class_name") in PORTRAIT_PIPELINES

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "KinemaTinyPortraitFamily":
        from ..tiny.portrait_pipeline import load_folder
        return cls(path, device, dtype, load_folder(Path(path), device, dtype))

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        """No text encoder: the prompt is carried along (the caller warns that it is ignored)."""
        return Conditioning(self.name, text, torch.zeros(1, 1, 1))

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        if not 1 <= num_frames <= self.default_frames:
            fail("length", f"must be 1..{self.default_frames} frames per window for Kinema-Tiny Portrait",
                 num_frames, "Let models/portrait.py lay windows over longer audio.")
        if (height, width) != (self.height, self.width):
            fail("size", f"must be {self.width}x{self.height} for Kinema-Tiny Portrait (its training size)",
                 f"{width}x{height}", "The portrait is resized to it; upscale the video afterwards.")

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        """positive.image: the portrait (1, H, W, 3) 0..1; positive.portrait: audio (1, F, A) loudness features,
        known (1, 4, F, H, W) known frames -1..1 + mask (or None), identity_strength."""
        window = positive.portrait
        if positive.image is None or window is None:
            fail("positive", "must carry a portrait image and audio features", "a plain prompt",
                 "Use the Portrait Animate node.")
        check_shape("portrait", positive.image, 4, "(1, height, width, 3)", "Connect an IMAGE output.")
        ref = positive.image[:1, ..., :3].permute(0, 3, 1, 2).float() * 2 - 1                # (1, 3, H, W)
        audio = window.audio.float()                                                         # (1, F, A)
        known = window.known
        if known is None:
            known = torch.zeros(1, 4, settings.num_frames, settings.height, settings.width)
        rows = 2 if negative is not None else 1
        batch = {"reference": ref.repeat(rows, 1, 1, 1), "audio": audio.repeat(rows, 1, 1),
                 "known": known.float().repeat(rows, 1, 1, 1, 1),
                 "audio_on": torch.tensor([0.0, 1.0] if rows == 2 else [1.0]),
                 "ref_on": torch.ones(rows), "identity_strength": float(window.identity_strength)}
        return {k: (v.to(self.device, self.dtype) if torch.is_tensor(v) else v) for k, v in batch.items()}

    # ---- the one denoiser call -----------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        b = latents.shape[0]
        x = latents.to(self.device, self.dtype)
        timestep = torch.as_tensor(t, device=self.device).float().reshape(-1).expand(b).to(self.dtype)
        audio, ref, known, audio_on = (batch[k][:b] for k in ("audio", "reference", "known", "audio_on"))
        ref_on = batch["ref_on"][:b]
        v = self.unet(x, timestep, audio, ref, known, audio_on, ref_on)
        s = batch["identity_strength"]
        if s != 1.0:            # identity guidance: extrapolate away from the prediction without the portrait
            v0 = self.unet(x, timestep, audio, ref, known, audio_on, torch.zeros_like(ref_on))
            v = v0 + s * (v - v0)
        return v

    def finish(self, latents, batch) -> torch.Tensor:
        """Known frames (the previous window's overlap) come back exactly as given."""
        known = batch["known"][:1].to(latents)
        mask = known[:, 3:4]                                                                 # (1, 1, F, H, W)
        return latents * (1 - mask) + known[:, :3] * mask

    # ---- pixels --------------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, tiling=None) -> torch.Tensor:
        return ((latents[0].float() + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0).cpu()           # (F, H, W, 3)

    def encode(self, frames: torch.Tensor, tiling=None) -> torch.Tensor:
        check_shape("frames", frames, 4, "(frames, height, width, channels)", "Connect an IMAGE output.")
        return (frames[..., :3].permute(3, 0, 1, 2).unsqueeze(0).float() * 2 - 1).to(self.device)

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents[:1])

    def fit_portrait(self, image: torch.Tensor) -> torch.Tensor:
        """IMAGE (1, H, W, C) any size -> (1, h, w, 3) at the model's size: centre square crop, area resize."""
        x = image[:1, ..., :3].permute(0, 3, 1, 2).float()                                    # (1, 3, H, W)
        h, w = x.shape[2:]
        side = min(h, w)
        x = x[:, :, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        if side != self.height:
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        return x.permute(0, 2, 3, 1)                                                           # (1, h, w, 3)

    # ---- portrait windows (models/portrait.py) -------------------------------------------------------------
    def portrait_session(self, image, waveform, sample_rate, fps, num_frames, *, prompt="", overlap=None,
                         guidance_scale=1.0, identity_strength=1.0) -> "TinyPortraitSession":
        """Windows of the trained length (models/windows.windows, the last aligned to the end), the portrait
        fitted to the model, the loudness of the voice per frame (normalised over the whole clip)."""
        if prompt.strip():
            warnings.warn(f"{self.name} has no text encoder: the prompt {prompt!r} is ignored.", stacklevel=3)
        return TinyPortraitSession(self, image, waveform, sample_rate, fps, num_frames,
                                   self.default_overlap if overlap is None else overlap, guidance_scale,
                                   identity_strength)


class TinyPortraitSession:
    """One clip's windows for Kinema-Tiny Portrait: pixel frames; the frames a window shares with those already
    made are its known frames (held clean); the negative row drops the audio."""

    def __init__(self, model, image, waveform, sample_rate, fps, num_frames, overlap, guidance_scale,
                 identity_strength):
        from ..tiny.portrait_data import loudness_features
        self.model, self.identity_strength = model, identity_strength
        self.ref = model.fit_portrait(image)                                                  # (1, h, w, 3)
        self.height, self.width = self.ref.shape[1:3]
        self.feats = loudness_features(waveform, sample_rate, float(fps), num_frames).unsqueeze(-1)   # (N, 1)
        check_range("overlap", overlap, 0, model.default_frames - 1, "The overlap must be smaller than the window.")
        self.length = min(model.default_frames, num_frames)
        overlap = min(overlap, self.length - 1)                  # a clip shorter than one window is one window
        spans = W.windows(num_frames, self.length, self.length - overlap)
        ends = [0] + [e for _, e in spans]                       # frames made before each window
        self.windows = [Window(e - s, s, max(made - s, 0)) for (s, e), made in zip(spans, ends)]
        self.negative = Conditioning(model.name, "", torch.zeros(1, 1, 1)) if guidance_scale > 1 else None
        self.tail = torch.zeros(0, self.height, self.width, 3)  # the last frames made (the next known frames)

    def conditioning(self, window) -> tuple[Conditioning, Conditioning | None]:
        known = torch.zeros(1, 4, window.length, self.height, self.width)                    # (1, 4, f, h, w)
        if window.skip > 0:
            known[0, :3, :window.skip] = self.tail[-window.skip:].permute(3, 0, 1, 2) * 2 - 1
            known[0, 3, :window.skip] = 1
        s = window.base
        audio = self.feats[s:s + window.length].unsqueeze(0)                                 # (1, f, 1)
        positive = Conditioning(self.model.name, "", torch.zeros(1, 1, 1), image=self.ref,
                                portrait=PortraitWindow(audio, known, identity_strength=self.identity_strength))
        return positive, self.negative

    def frames(self, latents, window) -> torch.Tensor:
        new = self.model.decode(latents)[window.skip:]                                       # (n, h, w, 3)
        self.tail = torch.cat([self.tail, new])[-self.length:]
        return new
