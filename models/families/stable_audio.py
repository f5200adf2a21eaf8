"""Stable Audio (Open): text-to-audio with a DiT over Oobleck VAE latents, conditioned on T5 text and on timing.

The model always denoises its full latent window (transformer.config.sample_size latent steps, 47.55 s for
Stable Audio Open 1.0) and is told the wanted length through two number embeddings (start 0 s, end N s); the
waveform is then trimmed to N s. Guidance without a negative prompt uses the all-zero conditioning the model was
trained to drop to (diffusers' negative_prompt=None); with one, the negative text (padding zeroed) plus the timing.
The scheduler is the folder's own (EDMDPMSolverMultistepScheduler: v-prediction, EDM preconditioning).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checks import fail
from .base import AudioFamily, Capabilities, Conditioning, load_pipeline

STABLE_AUDIO_PIPELINES = {"StableAudioPipeline"}


class StableAudioFamily(AudioFamily):
    name = "stable_audio"
    title = "Stable Audio Open"
    capabilities = Capabilities(windows=False, encode=False, text_to_audio=True)
    flow = False

    def __init__(self, path, device, dtype, pipe):
        super().__init__(path, device, dtype)
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.text_encoder = pipe.text_encoder
        self.tokenizer = pipe.tokenizer
        self.projection = pipe.projection_model
        self.default_scheduler = pipe.scheduler
        self.sample_rate = int(self.vae.config.sampling_rate)
        self.audio_channels = int(self.vae.config.audio_channels)
        self.latent_channels = int(self.transformer.config.in_channels)
        self.latent_length = int(self.transformer.config.sample_size)       # latent steps, always denoised whole
        self.max_seconds = self.latent_length * self.vae.hop_length / self.sample_rate
        self.rotary_dim = self.transformer.config.attention_head_dim // 2

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return model_index.get("_class_name") in STABLE_AUDIO_PIPELINES

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "StableAudioFamily":
        # the Oobleck VAE stays fp32: it is small, and half precision adds audible noise
        return cls(path, device, dtype, load_pipeline("auto", path, device, dtype))

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        """T5 hidden states through the projection, padding positions zeroed: embeds (1, L, D)."""
        tokens = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)      # (1, L)
        with torch.no_grad():
            hidden = self.text_encoder(ids, attention_mask=mask)[0]                               # (1, L, D_t5)
            embeds = self.projection(text_hidden_states=hidden).text_hidden_states                # (1, L, D)
        return Conditioning(self.name, text, embeds * mask.unsqueeze(-1).to(embeds.dtype))

    def unconditional(self) -> Conditioning:
        """The 'no negative prompt' conditioning: all zeros (text and timing), as the model was trained to drop."""
        return Conditioning(self.name, "", torch.zeros(0), unconditional=True)

    def check_settings(self, settings) -> None:
        seconds = settings.audio_length_in_s
        if not 0 < seconds <= self.max_seconds:
            fail("seconds", f"must be above 0 and at most {self.max_seconds:.2f} for this model", seconds,
                 f"Pick a length up to {self.max_seconds:.2f} s (the model's window); join clips for longer sound.")

    def latent_shape(self, settings) -> tuple[int, int]:
        return (self.latent_channels, self.latent_length)                                 # (C, T)

    def num_samples(self, settings) -> int:
        return round(settings.audio_length_in_s * self.sample_rate)

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        # 1. timing: start 0 s, end = the wanted length; each (1, 1, D)
        with torch.no_grad():
            timing = self.projection(start_seconds=torch.tensor([0.0], device=self.device),
                                     end_seconds=torch.tensor([float(settings.audio_length_in_s)], device=self.device))
        start, end = timing.seconds_start_hidden_states, timing.seconds_end_hidden_states
        # 2. cross-attention rows: text + timing tokens; the global row: timing side by side
        text = torch.cat([positive.embeds, start, end], dim=1)                                # (1, L + 2, D)
        glob = torch.cat([start, end], dim=2)                                                 # (1, 1, 2D)
        rows, globs = [text], [glob]
        if negative is not None:
            if negative.unconditional:
                rows.insert(0, torch.zeros_like(text))
            else:
                rows.insert(0, torch.cat([negative.embeds, start, end], dim=1))
            globs.insert(0, glob)
        # 3. rotary positions over latent steps + the global token
        from diffusers.models.embeddings import get_1d_rotary_pos_embed
        rotary = get_1d_rotary_pos_embed(self.rotary_dim, self.latent_length + glob.shape[1], use_real=True,
                                         repeat_interleave_real=False)
        dtype = self.transformer.dtype
        return {"encoder_hidden_states": torch.cat(rows).to(dtype),                          # (B, L + 2, D)
                "global_hidden_states": torch.cat(globs).to(dtype),                          # (B, 1, 2D)
                "rotary_embedding": tuple(r.to(self.device) for r in rotary)}

    # ---- denoiser ------------------------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        """latents (B, C, T) scaled by the scheduler -> v-prediction (B, C, T)."""
        return self.transformer(latents.to(self.transformer.dtype), t.reshape(1),
                                encoder_hidden_states=batch["encoder_hidden_states"],
                                global_hidden_states=batch["global_hidden_states"],
                                rotary_embedding=batch["rotary_embedding"], return_dict=False)[0]

    # ---- VAE -----------------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, tiling=None) -> torch.Tensor:
        """latents (1, C, T) -> waveform (1, channels, T * hop) float32 on the CPU (the whole window)."""
        with torch.no_grad():
            audio = self.vae.decode(latents.to(self.device, self.vae.dtype)).sample                 # (1, ch, S)
        return audio.float().cpu()
