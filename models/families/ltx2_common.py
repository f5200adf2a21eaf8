"""What Kinema's two LTX-2 families share: the folder check, loading, the pipelines' sigmas and prompt encoding.

LTX-2 (`Lightricks/LTX-2`, diffusers layout) is one transformer over video and audio tokens. Kinema drives it
through its own loop in two directions: Video to Audio (families/ltx2_audio.py: the clip held clean, the sound
denoised) and the audio-driven portrait (families/ltx2_portrait.py: the speech held clean, the video denoised).
Both load the same folder the same way, set the same sigmas and encode prompts with the same Gemma stack.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..checks import fail
from .base import load_pipeline

LTX2_PIPELINES = {"LTX2Pipeline", "LTX2ConditionPipeline", "LTX2ImageToVideoPipeline"}
MAX_SEQUENCE_LENGTH = 1024     # Gemma tokens per prompt (the pipelines' default)


def is_ltx2(model_index: dict) -> bool:
    """True when a folder's model_index.json names one of diffusers' LTX-2 pipelines."""
    return model_index.get("_class_name") in LTX2_PIPELINES


class LTX2Folder:
    """Mixin for a family built from an LTX-2 folder: `accepts` its model_index, `load` it as
    cls(path, device, dtype, pipe)."""

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return is_ltx2(model_index)

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype):
        return cls(path, device, dtype, load_ltx2_pipeline(path, device, dtype))


def load_ltx2_pipeline(path: Path, device: torch.device, dtype: torch.dtype):
    """An LTX-2 folder as diffusers' LTX2ConditionPipeline (it holds every component both families use), never
    downloading. The VAEs and the vocoder stay fp32: they are small and precision-sensitive."""
    from diffusers import LTX2ConditionPipeline
    return load_pipeline(LTX2ConditionPipeline, path, device, dtype, fp32=("vae", "audio_vae", "vocoder"))


def distilled_sigmas(num_inference_steps: int) -> list[float]:
    """The distilled LTX-2 checkpoints' few-step sigmas (diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES, from
    Lightricks' ltx-pipelines): all 8 for 8 steps; fewer steps take the schedule's last n (the coarse tail the
    distilled model also meets as its stage-2 refine: STAGE_2_DISTILLED_SIGMA_VALUES for 3)."""
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES
    n = len(DISTILLED_SIGMA_VALUES)
    if not 1 <= num_inference_steps <= n:
        fail("steps", f"must be 1..{n} for a distilled LTX-2 model (its schedule has {n} sigmas)",
             num_inference_steps, f"Use {n} steps (or 3 for a refine pass).")
    return list(DISTILLED_SIGMA_VALUES[n - num_inference_steps:])


def set_ltx2_timesteps(scheduler, num_inference_steps: int, video_tokens: int, device, distilled: bool = False
                       ) -> None:
    """The LTX-2 pipelines' sigmas (linear 1 -> 1/n) with their resolution-dependent shift (mu from the number of
    video tokens; schedulers without dynamic shifting ignore it); distilled: the distilled sigmas, passed as the
    pipelines take `sigmas=DISTILLED_SIGMA_VALUES` (same mu: a distilled folder's scheduler does not shift)."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import calculate_shift
    n = num_inference_steps
    c = scheduler.config
    mu = calculate_shift(video_tokens, c.get("base_image_seq_len", 1024), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.95), c.get("max_shift", 2.05))
    sigmas = distilled_sigmas(n) if distilled else np.linspace(1.0, 1 / n, n)
    scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)


def audio_steps_covering(num_samples: int, mel_rate: int, sample_rate: int, hop: int, ratio: int) -> int:
    """Fewest audio latent steps whose decoded waveform covers num_samples at sample_rate (the causal mel VAE gives
    ratio * (L - 1) + 1 mel frames for L steps, each hop samples at the mel rate)."""
    mel_samples = -(-num_samples * mel_rate // sample_rate)
    mel_frames = -(-mel_samples // hop)
    return max(1, -(-(mel_frames - 1) // ratio) + 1)


def gemma_prompt(pipe, text: str, device, max_sequence_length: int = MAX_SEQUENCE_LENGTH
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gemma hidden states of every layer, stacked: (embeds (1, L, D * layers), mask (1, L)). On a GPU, Gemma (24 GB
    in bf16 for the 12B) comes to the device for the prompt and goes back to RAM after it, as ComfyUI offloads its
    text encoders: the denoiser gets the memory while it samples. The states come in the connectors' dtype."""
    device = torch.device(device)
    encoder = pipe.text_encoder
    if device.type != "cpu":
        encoder.to(device)
    try:
        with torch.no_grad():
            embeds, mask = pipe._get_gemma_prompt_embeds(text, max_sequence_length=max_sequence_length, device=device)
        connectors = getattr(pipe, "connectors", None)      # Gemma may run in another precision (Model Options)
        return (embeds if connectors is None else embeds.to(connectors.dtype)), mask
    finally:
        if device.type != "cpu":
            encoder.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()


def decode_video(pipe, latents: torch.Tensor, device) -> torch.Tensor:
    """Normalised video latents (1, C, f, h, w) -> IMAGE frames (F, H, W, 3) float32 0..1 on the CPU, as LTX-2's
    pipelines decode (decode timestep 0)."""
    vae = pipe.vae
    z = pipe._denormalize_latents(latents.to(device, torch.float32), vae.latents_mean, vae.latents_std,
                                  vae.config.scaling_factor)
    timestep = torch.zeros(1, device=device) if vae.config.timestep_conditioning else None
    with torch.no_grad():
        video = vae.decode(z.to(vae.dtype), timestep, return_dict=False)[0]              # (1, 3, F, H, W) -1..1
    return (video[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()              # (F, H, W, 3)
