"""Model families behind one protocol (base.VideoFamily), in one registry per kind (registry.Registry).

A folder can be of several kinds (LTX-2 makes video and audio, and animates portraits): each loader node offers
what its nodes can use. To add a family: write its file, then register it below — its loader's dropdown, detection
and error messages follow from the registry."""
from __future__ import annotations

from pathlib import Path

import torch

from .animatediff import AnimateDiffFamily
from .base import AudioFamily, Capabilities, Conditioning, SchedulerChoice, VideoFamily
from .ltx2_audio import LTX2AudioFamily
from .ltx2_portrait import LTX2PortraitFamily
from .ltx2_video import LTX2VideoFamily
from .registry import AUTO, Registry
from .stable_audio import StableAudioFamily
from .tiny import KinemaTinyFamily
from .tiny_audio import KinemaTinyAudioFamily
from .tiny_portrait import KinemaTinyPortraitFamily
from .wan import WanFamily
from .wan_vace import WanVACEFamily

VIDEO = Registry("video", "Load Video Model")
for _cls in (WanFamily, WanVACEFamily, AnimateDiffFamily, KinemaTinyFamily, LTX2VideoFamily):   # append only
    VIDEO.register(_cls)

AUDIO = Registry("audio", "Load Audio Model")
for _cls in (StableAudioFamily, LTX2AudioFamily, KinemaTinyAudioFamily):
    AUDIO.register(_cls)

PORTRAIT = Registry("portrait", "Load Portrait Model")
for _cls in (KinemaTinyPortraitFamily, LTX2PortraitFamily):
    PORTRAIT.register(_cls)

FamilyChoice = VIDEO.choice_enum("FamilyChoice")             # Load Video Model's `family` values
AudioFamilyChoice = AUDIO.choice_enum("AudioFamilyChoice")   # Load Audio Model's `family` values


def load_model(path: Path, family: str = AUTO, device: torch.device | None = None,
               dtype: torch.dtype = torch.float32, weights: Path | None = None, **kwargs) -> VideoFamily:
    """A video model folder as a Kinema family (registry VIDEO), optionally with a single-file .safetensors
    replacing its denoiser (Wan: the transformer; AnimateDiff: the motion adapter), diffusers or original keys."""
    model = VIDEO.load(path, family, device, dtype, **kwargs)
    if weights is not None:
        model.load_weights_file(weights)
    return model


def load_audio_model(path: Path, family: str = AUTO, device: torch.device | None = None,
                     dtype: torch.dtype = torch.float32) -> AudioFamily:
    """An audio model folder (registry AUDIO): Stable Audio Open, LTX-2, Kinema-Tiny Audio."""
    return AUDIO.load(path, family, device, dtype)


def load_portrait_model(path: Path, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """An audio-driven portrait model folder (registry PORTRAIT): Kinema-Tiny Portrait, LTX-2."""
    return PORTRAIT.load(path, AUTO, device, dtype)


__all__ = ["AUDIO", "AudioFamily", "AudioFamilyChoice", "Capabilities", "Conditioning", "FamilyChoice", "PORTRAIT",
           "SchedulerChoice", "VIDEO", "VideoFamily", "load_audio_model", "load_model", "load_portrait_model"]
