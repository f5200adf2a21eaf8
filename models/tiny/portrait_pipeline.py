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
    from safetensors.torch import save_file
    path = Path(path)
    (path / "unet").mkdir(parents=True, exist_ok=True)
    (path / "unet" / "config.json").write_text(json.dumps(unet.config.to_dict(), indent=2) + "\n")
    save_file({k: v.detach().to(dtype).contiguous() for k, v in unet.state_dict().items()},
              str(path / "unet" / WEIGHTS))
    (path / "scheduler").mkdir(parents=True, exist_ok=True)
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2) + "\n")
    index = {"_class_name": PIPELINE_CLASS, "_diffusers_version": "0.42.1",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "unet": ["kinema", "PortraitUNet"]} | (extra or {})
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


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
