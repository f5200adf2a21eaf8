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


def set_ltx2_timesteps(scheduler, num_inference_steps: int, video_tokens: int, device) -> None:
    """The LTX-2 pipelines' sigmas (linear 1 -> 1/n) with their resolution-dependent shift (mu from the number of
    video tokens; schedulers without dynamic shifting ignore it)."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import calculate_shift
    n = num_inference_steps
    c = scheduler.config
    mu = calculate_shift(video_tokens, c.get("base_image_seq_len", 1024), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.95), c.get("max_shift", 2.05))
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), device=device, mu=mu)


def gemma_prompt(pipe, text: str, device, max_sequence_length: int = MAX_SEQUENCE_LENGTH
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gemma hidden states of every layer, stacked: (embeds (1, L, D * layers), mask (1, L))."""
    with torch.no_grad():
        return pipe._get_gemma_prompt_embeds(text, max_sequence_length=max_sequence_length, device=device)
