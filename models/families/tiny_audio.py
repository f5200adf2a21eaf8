"""Kinema-Tiny Audio: sound for a Kinema-Tiny clip (video-to-audio), trained here from procedural clips.

A small learned video encoder reads the frames (pooled to 16x16) and gives per-frame features that see the motion
around each frame; they are resampled to the mel frames' times (frame k sits at k / fps seconds) and condition a
1-D flow-matching conv net over normalised log-mel frames (8 kHz, 32 bands, 16 ms hop). Decoding is fixed:
mel pseudo-inverse + Griffin-Lim. It knows one kind of sound: a knock when the object hits the floor or a wall.

The loop's latents are (1, 32, T). The net predicts velocity (noise - x0) at timesteps 0..1000, as diffusers'
FlowMatchEulerDiscreteScheduler expects. Guidance: the negative row is the same net without the video
(trained with 10 % of samples so). There is no text input: a prompt is ignored with a warning.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from .base import AudioFamily, Capabilities, Conditioning

TINY_AUDIO_PIPELINES = {"KinemaTinyAudioPipeline"}


class KinemaTinyAudioFamily(AudioFamily):
    name = "kinema_tiny_audio"
    title = "Kinema-Tiny Audio"
    capabilities = Capabilities(windows=False, encode=False, video_to_audio=True)
    flow = True
    audio_channels = 1

    def __init__(self, path, device, dtype, models):
        from diffusers import FlowMatchEulerDiscreteScheduler
        super().__init__(path, device, dtype)
        self.models = models
        self.video_encoder = models.video_encoder
        self.transformer = models.transformer
        self.mel = models.mel
        self.sample_rate = int(self.mel.cfg.sample_rate)
        self.latent_channels = int(self.mel.cfg.n_mels)
        self.default_scheduler = FlowMatchEulerDiscreteScheduler.from_config(models.scheduler_config)

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return model_index.get("_class_name") in TINY_AUDIO_PIPELINES

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "KinemaTinyAudioFamily":
        from ..tiny.audio_model import load_folder
        return cls(path, device, dtype, load_folder(Path(path), device, dtype))

    # ---- sizes ---------------------------------------------------------------------------------------------
    def condition_size(self, height: int, width: int) -> tuple[int, int]:
        """Any frame size is read as is (the encoder pools every frame to 16x16)."""
        return height, width

    def check_settings(self, settings) -> None:
        self.check_clip(settings)

    def latent_shape(self, settings) -> tuple[int, int]:
        return (self.latent_channels, self.mel.frames_for(self.num_samples(settings)))         # (M, T)

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        """No text encoder: the sound comes from the picture alone. A non-empty prompt is ignored (warned)."""
        if text.strip():
            warnings.warn(f"Kinema-Tiny Audio has no text input: the prompt {text!r} is ignored.", UserWarning,
                          stacklevel=2)
        return Conditioning(self.name, text, torch.zeros(1, 1, 1))

    def features(self, frames: torch.Tensor, fps: float, num_mel_frames: int) -> torch.Tensor:
        """IMAGE frames (F, H, W, 3) 0..1 -> video features at the mel frames' times, (1, D, T)."""
        from ..tiny.audio_model import resample_features
        video = frames[..., :3].float().permute(0, 3, 1, 2)[None].to(self.device)             # (1, F, 3, H, W)
        with torch.no_grad():
            feats, _ = self.video_encoder(video.to(self.dtype))                                 # (1, D, F)
        return resample_features(feats.float(), fps, num_mel_frames, self.mel.cfg.hop, self.sample_rate)

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        frames = self.video_for(positive, settings)
        steps = self.latent_shape(settings)[1]
        cond = self.features(frames, float(settings.frame_rate), steps)                          # (1, D, T)
        if negative is not None:                                     # [negative, positive]: the negative is silence
            cond = torch.cat([torch.zeros_like(cond), cond])                                     # of no video
        return {"features": cond.to(self.dtype)}

    # ---- denoiser ------------------------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        """latents (B, M, T) -> velocity (B, M, T)."""
        b = latents.shape[0]
        timestep = torch.as_tensor(t, device=self.device).float().reshape(-1).expand(b)           # (B,) 0..1000
        with torch.no_grad():
            return self.transformer(latents.to(self.device, self.dtype), timestep.to(self.dtype),
                                    batch["features"][:b]).float()

    # ---- mel -> waveform -----------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, tiling=None) -> torch.Tensor:
        """latents (1, M, T) -> waveform (1, 1, (T - 1) * hop) float32 on the CPU at 8 kHz."""
        wave = self.mel.decode(latents[:1].float().cpu())                                        # (1, samples)
        return wave[:, None].clamp(-1, 1)                                                       # (1, 1, samples)
