"""Kinema-Tiny Upscaler: a small residual (2+1)D convolutional network that upscales video 2x in space, on top of
bicubic (Video LDM's upsampler idea in miniature: a learned model with temporal layers, so detail is consistent
from frame to frame instead of re-guessed in each frame).

    frames (B, 3, F, H, W) 0..1 -> (B, 3, F, 2H, 2W) 0..1
    out = bicubic(x) + pixel_shuffle(tail(blocks(head(x))))   all convolutions at the input size

Each block: 3x3 conv, GELU, + a 3-tap temporal conv across frames (1x1 in space; a residual branch that starts
at zero), 3x3 conv, residual.
The temporal conv is written as a 1x1 conv over [frame t-1, frame t, frame t+1] stacked on channels (the same
operator as a (3,1,1) Conv3d, faster on CPUs), clip ends padded by repeating the end frames. With `temporal=False`
the blocks are plain 2D (the ablation in the model card).

Receptive field: output frame t depends on input frames t-R .. t+R with R = `temporal_radius` (one per block), and
an output pixel on input pixels within `spatial_radius` of it. models/upscale.py runs long clips in chunks of
frames (and large frames in tiles) with that much context, which gives exactly the whole-clip result.

Folder layout (safetensors + JSON, never unpickled):
    model_index.json                     {"_class_name": "KinemaTinyUpscalerPipeline", "scale": 2, ...}
    upscaler/config.json + diffusion_pytorch_model.safetensors
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

PIPELINE_CLASS = "KinemaTinyUpscalerPipeline"
WEIGHTS = "diffusion_pytorch_model.safetensors"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "kinema-tiny-upscaler"


@dataclass
class UpscalerConfig:
    channels: int = 32          # feature width of every block
    blocks: int = 6             # residual blocks; each adds one frame of temporal context on each side
    temporal: bool = True       # (2+1)D blocks; False: per-frame 2D blocks (no temporal layers)
    scale: int = 2              # spatial factor

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """x + conv3x3(h + temporal(h)), h = gelu(conv3x3(x)), on (B*F, C, H, W) frames of B clips of F frames.

    The temporal layer is a residual branch that starts at zero (Video LDM inserts its temporal layers the same
    way): training starts from a per-frame 2D network and adds only what the neighbouring frames improve."""

    def __init__(self, ch: int, temporal: bool):
        super().__init__()
        self.s1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.t = nn.Conv2d(3 * ch, ch, 1) if temporal else None
        self.s2 = nn.Conv2d(ch, ch, 3, padding=1)
        if self.t is not None:
            nn.init.zeros_(self.t.weight)
            nn.init.zeros_(self.t.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        h = F.gelu(self.s1(x))
        if self.t is not None:
            bf, c, hh, ww = h.shape
            v = h.view(bf // frames, frames, c, hh, ww)                          # (B, F, C, H, W)
            padded = torch.cat([v[:, :1], v, v[:, -1:]], dim=1)                  # (B, F+2, C, H, W) ends repeated
            stacked = torch.cat([padded[:, :-2], v, padded[:, 2:]], dim=2)       # (B, F, 3C, H, W): t-1, t, t+1
            h = h + self.t(stacked.reshape(bf, 3 * c, hh, ww))
        return x + self.s2(h)


class TinyVideoUpscaler(nn.Module):
    def __init__(self, config: UpscalerConfig):
        super().__init__()
        self.config = config
        c, s = config.channels, config.scale
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList(Block(c, config.temporal) for _ in range(config.blocks))
        self.tail = nn.Conv2d(c, 3 * s * s, 3, padding=1)
        nn.init.zeros_(self.tail.weight)          # starts as exactly bicubic
        nn.init.zeros_(self.tail.bias)

    @property
    def temporal_radius(self) -> int:
        """Input frames each side an output frame depends on."""
        return self.config.blocks if self.config.temporal else 0

    @property
    def spatial_radius(self) -> int:
        """Input pixels each side an output pixel depends on (3x3 convs, plus 2 for the bicubic base)."""
        return 2 * self.config.blocks + 2 + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, F, H, W) 0..1 -> (B, 3, F, sH, sW) 0..1 (clamped)."""
        b, _, f, h, w = x.shape
        s = self.config.scale
        frames = x.transpose(1, 2).reshape(b * f, 3, h, w)                       # (B*F, 3, H, W)
        base = F.interpolate(frames, scale_factor=s, mode="bicubic", align_corners=False)
        feat = self.head(frames * 2 - 1)
        for block in self.blocks:
            feat = block(feat, f)
        out = base + F.pixel_shuffle(self.tail(feat), s)                         # (B*F, 3, sH, sW)
        return out.clamp(0, 1).view(b, f, 3, h * s, w * s).transpose(1, 2)


def save_folder(path: Path, model: TinyVideoUpscaler, extra: dict | None = None,
                dtype: torch.dtype = torch.float16) -> None:
    """Write the model folder (weights as `dtype`; loading casts back to the runtime dtype)."""
    from .folder import write_index, write_part
    write_part(path, "upscaler", model, model.config.to_dict(), WEIGHTS, dtype)
    write_index(path, PIPELINE_CLASS, {"scale": model.config.scale,
                                       "upscaler": ["kinema", "TinyVideoUpscaler"]}, extra)


def load_folder(path: Path, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> TinyVideoUpscaler:
    """Read a Kinema-Tiny Upscaler folder: config from JSON, weights with safetensors (never torch.load)."""
    from safetensors.torch import load_file
    path = Path(path)
    file = path / "upscaler" / WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"Kinema-Tiny Upscaler folder {str(path)!r} is incomplete: missing {file}. Fix: "
                                f"re-copy the folder, or retrain it from a source checkout: "
                                f"`python -m training.tiny.upscaler_train`.")
    raw = json.loads((path / "upscaler" / "config.json").read_text())
    names = {f.name for f in fields(UpscalerConfig)}
    model = TinyVideoUpscaler(UpscalerConfig(**{k: v for k, v in raw.items() if k in names}))
    model.load_state_dict({k: v.float() for k, v in load_file(str(file)).items()})
    return model.to(device, dtype).eval().requires_grad_(False)
