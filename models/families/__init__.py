"""Model families behind one protocol (base.VideoFamily). `load_model` picks the family from the folder."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import torch

from ..checks import fail
from .animatediff import AnimateDiffFamily
from .base import Conditioning, SchedulerChoice, VideoFamily, read_model_index
from .wan import WanFamily

FAMILIES: dict[str, type[VideoFamily]] = {"wan": WanFamily, "animatediff": AnimateDiffFamily}


class FamilyChoice(str, Enum):
    AUTO = "auto"
    WAN = "wan"
    ANIMATEDIFF = "animatediff"


def detect_family(path: Path) -> str:
    index = read_model_index(path)
    for name, cls in FAMILIES.items():
        if cls.accepts(index):
            return name
    fail("model", "must be a supported video model folder (Wan T2V/I2V, AnimateDiff)",
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


__all__ = ["Conditioning", "FAMILIES", "FamilyChoice", "SchedulerChoice", "VideoFamily", "load_model",
           "detect_family"]
