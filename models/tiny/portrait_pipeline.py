"""Kinema-Tiny Portrait's model folder (diffusers-like layout). Every weight file is safetensors, every config JSON.

    model_index.json                   {"_class_name": "KinemaTinyPortraitPipeline", "num_frames": 9, "fps": 25, ...}
    scheduler/scheduler_config.json    FlowMatchEulerDiscreteScheduler
    unet/config.json + diffusion_pytorch_model.safetensors        (the pixel-space PortraitUNet)

No VAE (the model works in pixels) and no text encoder (the audio and the portrait are the whole condition).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .portrait_model import PortraitUNet, PortraitUNetConfig

PIPELINE_CLASS = "KinemaTinyPortraitPipeline"
WEIGHTS = "diffusion_pytorch_model.safetensors"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "kinema-tiny-portrait"


@dataclass
class PortraitModels:
    unet: PortraitUNet
    scheduler_config: dict
    index: dict


def save_folder(path: Path, unet: PortraitUNet, scheduler_config: dict, extra: dict | None = None,
                dtype: torch.dtype = torch.float16) -> None:
    from .folder import write_index, write_part, write_scheduler
    write_part(path, "unet", unet, unet.config.to_dict(), WEIGHTS, dtype)
    write_scheduler(path, scheduler_config)
    write_index(path, PIPELINE_CLASS, {"scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                                       "unet": ["kinema", "PortraitUNet"]}, extra)


def load_folder(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> PortraitModels:
    """Read a Kinema-Tiny Portrait folder (never torch.load)."""
    from safetensors.torch import load_file
    from .pipeline import build_checked
    path = Path(path)
    file = path / "unet" / WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"Kinema-Tiny Portrait folder {str(path)!r} is incomplete: missing {file}. Fix: "
                                f"re-copy the folder, or retrain it from a source checkout: "
                                f"`python -m training.tiny.portrait_train`.")
    index = json.loads((path / "model_index.json").read_text())
    raw = json.loads((path / "unet" / "config.json").read_text())
    names = {f.name for f in fields(PortraitUNetConfig)}
    cfg = PortraitUNetConfig(**{k: (tuple(v) if k == "channels" else v) for k, v in raw.items() if k in names})
    unet = build_checked(lambda: PortraitUNet(cfg), file, path / "unet" / "config.json")
    unet.load_state_dict({k: v.float() for k, v in load_file(str(file)).items()})
    unet.to(device, dtype).eval().requires_grad_(False)
    sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    return PortraitModels(unet, sched, index)
