"""Model families behind one protocol (base.VideoFamily). `load_model` picks the family from the folder.

Audio models (base.AudioFamily, driven by the same loop) have their own registry and loader, `load_audio_model`:
a folder can be both (LTX-2 makes video and audio), and each loader offers what its nodes can use."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import torch

from ..checks import fail
from .animatediff import AnimateDiffFamily
from .base import AudioFamily, Conditioning, SchedulerChoice, VideoFamily, read_model_index
from .ltx2_audio import LTX2AudioFamily
from .stable_audio import StableAudioFamily
from .tiny import KinemaTinyFamily
from .wan import WanFamily
from .wan_vace import WanVACEFamily

FAMILIES: dict[str, type[VideoFamily]] = {"wan": WanFamily, "wan_vace": WanVACEFamily,
                                          "animatediff": AnimateDiffFamily, "kinema_tiny": KinemaTinyFamily}


class FamilyChoice(str, Enum):
    AUTO = "auto"
    WAN = "wan"
    WAN_VACE = "wan_vace"     # Wan VACE (WanVACEPipeline): text-to-video and reference images
    ANIMATEDIFF = "animatediff"
    KINEMA_TINY = "kinema_tiny"


def detect_family(path: Path) -> str:
    index = read_model_index(path)
    for name, cls in FAMILIES.items():
        if cls.accepts(index):
            return name
    fail("model", "must be a supported video model folder (Wan T2V/I2V/VACE, AnimateDiff, Kinema-Tiny)",
         index.get("_class_name"), "Pick a folder of a supported family or set `family` explicitly.")


def load_model(path: Path, family: str = "auto", device: torch.device | None = None,
               dtype: torch.dtype = torch.float32, weights: Path | None = None, **kwargs) -> VideoFamily:
    """Load a diffusers-format model folder as a Kinema family (never downloads, never unpickles).

    Args:
        path: folder holding model_index.json.
        family: "auto" (read model_index.json) or a FamilyChoice value.
        device, dtype: where and how the denoiser and text encoder run.
        weights: optional single-file .safetensors replacing the denoiser (Wan: the transformer; AnimateDiff:
            the motion adapter), in diffusers or original key layout.
    """
    path = Path(path)
    name = detect_family(path) if family == FamilyChoice.AUTO else family
    if name not in FAMILIES:
        fail("family", f"must be one of {[c.value for c in FamilyChoice]}", family, "Pick a listed family.")
    index = read_model_index(path)
    if not FAMILIES[name].accepts(index):
        fail("family", f"does not match the folder (its model_index.json says {index.get('_class_name')})", name,
             "Set family to auto.")
    model = FAMILIES[name].load(path, device or torch.device("cpu"), dtype, **kwargs)
    if weights is not None:
        model.load_weights_file(weights)
    return model


from .tiny_audio import KinemaTinyAudioFamily  # noqa: E402  (kept beside its registry entry)

AUDIO_FAMILIES: dict[str, type[AudioFamily]] = {"stable_audio": StableAudioFamily, "ltx2": LTX2AudioFamily,
                                                "kinema_tiny_audio": KinemaTinyAudioFamily}


class AudioFamilyChoice(str, Enum):
    AUTO = "auto"
    STABLE_AUDIO = "stable_audio"   # text-to-audio (Stable Audio Open)
    LTX2 = "ltx2"                   # audio for a video (LTX-2's audio branch, the clip as a condition)
    KINEMA_TINY_AUDIO = "kinema_tiny_audio"   # audio for a Kinema-Tiny clip (bundled: a knock on each impact)


def detect_audio_family(path: Path) -> str | None:
    """The audio family whose loader accepts the folder's model_index.json, or None."""
    index = read_model_index(path)
    return next((name for name, cls in AUDIO_FAMILIES.items() if cls.accepts(index)), None)


def load_audio_model(path: Path, family: str = "auto", device: torch.device | None = None,
                     dtype: torch.dtype = torch.float32) -> AudioFamily:
    """Load a diffusers-format audio model folder (never downloads, never unpickles).

    Args:
        path: folder holding model_index.json (StableAudioPipeline, LTX2Pipeline / LTX2ConditionPipeline).
        family: "auto" or an AudioFamilyChoice value.
        device, dtype: where and how the denoiser and text encoder run (the audio VAEs stay fp32).
    """
    path = Path(path)
    name = detect_audio_family(path) if family == AudioFamilyChoice.AUTO else family
    if name is None:
        fail("model", "must be a supported audio model folder (Stable Audio Open, LTX-2)",
             read_model_index(path).get("_class_name"), "Pick a StableAudioPipeline or LTX-2 folder.")
    if name not in AUDIO_FAMILIES:
        fail("family", f"must be one of {[c.value for c in AudioFamilyChoice]}", family, "Pick a listed family.")
    index = read_model_index(path)
    if not AUDIO_FAMILIES[name].accepts(index):
        fail("family", f"does not match the folder (its model_index.json says {index.get('_class_name')})", name,
             "Set family to auto.")
    return AUDIO_FAMILIES[name].load(path, device or torch.device("cpu"), dtype)


__all__ = ["AUDIO_FAMILIES", "AudioFamily", "AudioFamilyChoice", "Conditioning", "FAMILIES", "FamilyChoice",
           "SchedulerChoice", "VideoFamily", "detect_audio_family", "detect_family", "load_audio_model",
           "load_model"]
